"""Adafactor: second moments factored into row and column statistics."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import mlx.core as mx

from . import checks
from .optimizer import Optimizer
from .terms import Hyper, State, lerp, prepare, store

__all__ = ["Adafactor"]


def _rms(x: mx.array) -> mx.array:
    """``||x||_2 / sqrt(numel)``, the root mean square, as a scalar."""
    return mx.sqrt(mx.sum(x * x)) / math.sqrt(max(x.size, 1))


class Adafactor(Optimizer):
    r"""Adafactor (Shazeer and Stern, 2018), as ``torch.optim.Adafactor``.

    At step :math:`t`, with :math:`\hat\beta_t = 1 - t^{c}` (:math:`c` = ``beta2_decay``),
    :math:`\rho_t = \min(\text{lr}, 1/\sqrt t)` and ``eps`` :math:`= (\epsilon_1,
    \epsilon_2)` (:math:`\epsilon_1` defaults to the machine epsilon of the parameter's
    dtype):

    .. math::

        \alpha &= \max(\epsilon_2, \operatorname{RMS}(\theta))\, \rho_t, \qquad
        \theta \leftarrow \theta (1 - \text{lr}\,\lambda) \\
        R &\leftarrow R + (1 - \hat\beta_t)(\operatorname{mean}_{-1} g^2 - R), \quad
        C \leftarrow C + (1 - \hat\beta_t)(\operatorname{mean}_{-2} g^2 - C), \quad
        V = \frac{R C}{\max(\operatorname{mean}_{-2} R, \epsilon_1)} \\
        U &= g / \sqrt{\max(V, \epsilon_1^2)}, \qquad
        \theta \leftarrow \theta - \frac{\alpha}{\max(1, \operatorname{RMS}(U) / d)}\, U

    for a parameter of 2 or more dimensions (state ``"row_var"`` :math:`R`, shaped like
    the parameter with its last axis 1, and ``"col_var"`` :math:`C`, with its second-last
    axis 1); a vector or scalar keeps ``"variance"`` :math:`V \leftarrow V + (1 -
    \hat\beta_t)(g^2 - V)` instead. The rule reduces over axes, so Adafactor's parameters
    are never gathered into flat buckets. The two norms torch reads on the host
    (``.item()``) stay in the graph here.
    """

    checks = {
        "lr": checks.LEARNING_RATE,
        "beta2_decay": checks.number(-math.inf, 0.0),
        "eps": checks.pair(checks.optional(checks.NON_NEGATIVE), checks.NON_NEGATIVE),
        "d": checks.number(1.0),
        "weight_decay": checks.NON_NEGATIVE,
        "maximize": checks.FLAG,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay,
            maximize=maximize,
        )  # fmt: skip
        super().__init__(params, defaults)

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        if param.ndim < 2:
            return {"variance": mx.zeros_like(param)}
        rows, cols = list(param.shape), list(param.shape)
        rows[-1], cols[-2] = 1, 1
        return {
            "row_var": mx.zeros(rows, dtype=param.dtype),
            "col_var": mx.zeros(cols, dtype=param.dtype),
        }

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        eps1, eps2 = group["eps"]
        values = {
            "lr": group["lr"],
            "weight_decay": group["weight_decay"],
            "one_minus_beta2": t ** group["beta2_decay"],
            "rho": min(group["lr"], 1 / t**0.5),
            "eps2": eps2,
            "d": group["d"],
        }
        if eps1 is not None:
            values["eps1"] = eps1
        return values

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "maximize": group["maximize"],
            "decay": "decoupled" if group["weight_decay"] != 0 else "none",
        }

    @staticmethod
    def rule(param: mx.array, grad: mx.array, state: State, hyper: Hyper, *,
             maximize: bool, decay: str) -> tuple[mx.array, State]:  # fmt: skip
        work, dtype = mx.float64 if param.dtype == mx.float64 else mx.float32, param.dtype
        eps1 = hyper.get("eps1", mx.array(mx.finfo(dtype).eps, dtype=mx.float32))
        alpha = mx.maximum(hyper["eps2"], _rms(param.astype(work))) * hyper["rho"]
        p, g = prepare(param, grad, hyper, maximize=maximize, decay=decay)
        w = hyper["one_minus_beta2"]
        g2 = g * g
        if param.ndim >= 2:
            row = store(lerp(state["row_var"].astype(work), mx.mean(g2, -1, keepdims=True), w),
                        dtype)  # fmt: skip
            col = store(lerp(state["col_var"].astype(work), mx.mean(g2, -2, keepdims=True), w),
                        dtype)  # fmt: skip
            new = {"row_var": row, "col_var": col}
            row, col = row.astype(work), col.astype(work)
            scale = mx.maximum(mx.mean(row, -2, keepdims=True), eps1)
            var = row * col / scale
        else:
            new = {"variance": store(lerp(state["variance"].astype(work), g2, w), dtype)}
            var = new["variance"].astype(work)
        update = mx.rsqrt(mx.maximum(var, eps1 * eps1)) * g
        denom = mx.maximum(1.0, _rms(update) / hyper["d"])
        return (p - (alpha / denom) * update).astype(dtype), new

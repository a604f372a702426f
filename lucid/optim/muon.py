"""Muon: momentum orthogonalised by Newton-Schulz iterations, for 2-D parameters."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import mlx.core as mx

from . import checks
from .optimizer import Optimizer
from .terms import Hyper, State, lerp, store

__all__ = ["Muon"]


def newton_schulz(x: mx.array, coefficients: tuple[float, float, float], steps: int,
                  eps: float) -> mx.array:  # fmt: skip
    r"""The orthogonalised ``x`` (``U S' V^T`` for ``x = U S V^T``, :math:`S'` near 1) by
    ``steps`` quintic iterations :math:`X \leftarrow aX + (bA + cA^2)X`, :math:`A = XX^T`,
    from :math:`X_0 = x / \max(\|x\|_F, \epsilon)`, on the wide orientation of ``x``.

    In bfloat16 at torch's rounding points: the norm is computed in float32 and rounded,
    and each ``addmm`` (a product and a sum, here ``mx.addmm``) rounds once.
    """
    a, b, c = coefficients
    tall = x.shape[0] > x.shape[1]
    o = x.astype(mx.bfloat16)
    if tall:
        o = o.T
    norm = mx.sqrt(mx.sum(mx.square(o.astype(mx.float32)))).astype(mx.bfloat16)
    o = o / mx.maximum(norm, mx.array(eps, dtype=mx.bfloat16))
    for _ in range(steps):
        gram = o @ o.T
        update = mx.addmm(gram, gram, gram, alpha=c, beta=b)
        o = mx.addmm(o, update, o, alpha=1.0, beta=a)
    return o.T if tall else o


def _lr_ratio(shape: tuple[int, ...], adjust: str | None) -> float:
    rows, cols = shape[:2]
    if adjust is None or adjust == "original":
        return math.sqrt(max(1.0, rows / cols))
    return 0.2 * math.sqrt(max(rows, cols))  # "match_rms_adamw"


class Muon(Optimizer):
    r"""Muon (Jordan et al., 2024), as ``torch.optim.Muon``, for 2-D parameters only.

    .. math::

        B &\leftarrow B + (1 - \mu)(g - B), \qquad
        \tilde B = g + \mu (B - g) \ \text{ if nesterov, else } B \\
        O &= \mathrm{NS}_k^{(a,b,c)}(\tilde B; \epsilon), \qquad
        \theta \leftarrow \theta (1 - \text{lr}\,\lambda) - \text{lr}\, r\, O

    with :func:`newton_schulz` in bfloat16 and :math:`r = \sqrt{\max(1, A/B)}` for an
    :math:`A \times B` parameter (``adjust_lr_fn=None`` or ``"original"``) or
    :math:`0.2\sqrt{\max(A, B)}` (``"match_rms_adamw"``). Weight decay is decoupled.
    State: ``"momentum_buffer"`` (:math:`B`). Use another optimizer (AdamW) for biases,
    norms and embeddings. Not elementwise: never bucketed.
    """

    checks = {
        "lr": checks.LEARNING_RATE,
        "weight_decay": checks.NON_NEGATIVE,
        "momentum": checks.NON_NEGATIVE,
        "nesterov": checks.FLAG,
        "ns_coefficients": lambda v: _three_numbers(v),
        "eps": checks.NON_NEGATIVE,
        "ns_steps": checks.positive_int,
        "adjust_lr_fn": checks.optional(checks.choice("original", "match_rms_adamw")),
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=tuple(ns_coefficients)
            if isinstance(ns_coefficients, list)
            else ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        )
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        if group.get("ns_steps", 0) >= 100:
            raise ValueError(f"ns_steps must be below 100; got {group['ns_steps']!r}")
        for i, p in enumerate(group.get("params", ())):
            if p.ndim != 2:
                raise ValueError(
                    f"params[{i}]: Muon only takes 2-D parameters; got shape {p.shape}. Use "
                    "AdamW for biases, norms and embeddings"
                )

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        return {"momentum_buffer": mx.zeros_like(param)}

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        return {
            "lr": group["lr"],
            "weight_decay": group["weight_decay"],
            "momentum": group["momentum"],
            "one_minus_momentum": 1 - group["momentum"],
        }

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "nesterov": group["nesterov"],
            "coefficients": tuple(group["ns_coefficients"]),
            "steps": group["ns_steps"],
            "eps": group["eps"],
            "adjust": group["adjust_lr_fn"],
        }

    @staticmethod
    def rule(param: mx.array, grad: mx.array, state: State, hyper: Hyper, *, nesterov: bool,
             coefficients: tuple[float, float, float], steps: int, eps: float,
             adjust: str | None) -> tuple[mx.array, State]:  # fmt: skip
        work = mx.float64 if param.dtype == mx.float64 else mx.float32
        p, g = param.astype(work), grad.astype(work)
        buf = store(lerp(state["momentum_buffer"].astype(work), g, hyper["one_minus_momentum"]),
                    param.dtype)  # fmt: skip
        b = buf.astype(work)
        update = lerp(g, b, hyper["momentum"]) if nesterov else b
        o = newton_schulz(update, coefficients, steps, eps).astype(work)
        p = p * (1 - hyper["lr"] * hyper["weight_decay"])
        p = p - (hyper["lr"] * _lr_ratio(param.shape, adjust)) * o
        return p.astype(param.dtype), {"momentum_buffer": buf}


def _three_numbers(value: Any) -> None:
    ok = isinstance(value, (tuple, list)) and len(value) == 3
    if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise TypeError(f"must be a tuple of three numbers (a, b, c); got {value!r}")
    if not all(math.isfinite(v) for v in value):
        raise ValueError(f"must be three finite numbers; got {value!r}")

"""Rprop: steps of a per-element size that grows while the gradient keeps its sign."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import mlx.core as mx

from . import checks
from .optimizer import Optimizer
from .terms import Hyper, State, prepare, store

__all__ = ["Rprop"]


class Rprop(Optimizer):
    r"""Resilient backpropagation (Riedmiller and Braun, 1993), as ``torch.optim.Rprop``.

    With :math:`(\eta^-, \eta^+)` = ``etas`` and the previous gradient :math:`g'`:

    .. math::

        s &\leftarrow \operatorname{clip}\big(s \cdot
            \{\eta^+ \text{ if } g g' > 0;\ \eta^- \text{ if } g g' < 0;\ 1\},
            s_{\min}, s_{\max}\big) \\
        g &\leftarrow 0 \ \text{ where } g g' < 0, \qquad
        \theta \leftarrow \theta - \operatorname{sign}(g)\, s, \qquad g' \leftarrow g

    after :math:`g \leftarrow -g` if maximize. ``lr`` only sets the initial step sizes
    :math:`s`. State: ``"prev"`` (:math:`g'`) and ``"step_size"`` (:math:`s`).
    """

    elementwise = True
    checks = {
        "lr": checks.LEARNING_RATE,
        "etas": checks.pair(
            checks.POSITIVE, checks.POSITIVE, lambda a, b: a < 1.0 < b, "0 < etaminus < 1 < etaplus"
        ),
        "step_sizes": checks.pair(
            checks.NON_NEGATIVE, checks.NON_NEGATIVE, lambda a, b: a <= b, "min <= max"
        ),
        "maximize": checks.FLAG,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize)
        super().__init__(params, defaults)

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        lr = group["lr"](0) if callable(group["lr"]) else group["lr"]
        return {"prev": mx.zeros_like(param), "step_size": mx.full(param.shape, lr, param.dtype)}

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        (minus, plus), (low, high) = group["etas"], group["step_sizes"]
        return {"etaminus": minus, "etaplus": plus, "step_size_min": low, "step_size_max": high}

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        return {"maximize": group["maximize"]}

    @staticmethod
    def rule(param: mx.array, grad: mx.array, state: State, hyper: Hyper, *,
             maximize: bool) -> tuple[mx.array, State]:  # fmt: skip
        p, g = prepare(param, grad, hyper, maximize=maximize)
        sign = mx.sign(g * state["prev"].astype(g.dtype))
        factor = mx.where(sign > 0, hyper["etaplus"], mx.where(sign < 0, hyper["etaminus"], 1.0))
        size = state["step_size"].astype(g.dtype) * factor
        size = store(mx.clip(size, hyper["step_size_min"], hyper["step_size_max"]), param.dtype)
        g = mx.where(sign < 0, 0.0, g)
        p = p - mx.sign(g) * size.astype(g.dtype)
        return p.astype(param.dtype), {"prev": g.astype(param.dtype), "step_size": size}

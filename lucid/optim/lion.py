"""Lion: the sign of an interpolated momentum (no torch counterpart; follows MLX's)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import mlx.core as mx

from . import checks
from .optimizer import Optimizer
from .terms import Hyper, State, prepare, store

__all__ = ["Lion"]


class Lion(Optimizer):
    r"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"), as
    ``mlx.optimizers.Lion``:

    .. math::

        c &= \beta_1 m + (1 - \beta_1) g, \qquad m \leftarrow \beta_2 m + (1 - \beta_2) g \\
        \theta &\leftarrow \theta (1 - \text{lr}\,\lambda) - \text{lr}\, \operatorname{sign}(c)

    State: ``"exp_avg"`` (:math:`m`; MLX calls it ``"m"``). torch has no Lion. Use an lr
    3-10x smaller than AdamW's and a weight decay 3-10x larger. ``lr`` defaults to 1e-4
    (MLX has no default); ``maximize`` is lucid's, as in its other optimizers.
    """

    elementwise = True
    checks = {
        "lr": checks.LEARNING_RATE,
        "betas": checks.BETAS,
        "weight_decay": checks.NON_NEGATIVE,
        "maximize": checks.FLAG,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        return {"exp_avg": mx.zeros_like(param)}

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        beta1, beta2 = group["betas"]
        return {
            "lr": group["lr"],
            "weight_decay": group["weight_decay"],
            "beta1": beta1,
            "one_minus_beta1": 1 - beta1,
            "beta2": beta2,
            "one_minus_beta2": 1 - beta2,
        }

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        decay = "decoupled" if group["weight_decay"] > 0 else "none"
        return {"maximize": group["maximize"], "decay": decay}

    @staticmethod
    def rule(param: mx.array, grad: mx.array, state: State, hyper: Hyper, *,
             maximize: bool, decay: str) -> tuple[mx.array, State]:  # fmt: skip
        p, g = prepare(param, grad, hyper, maximize=maximize, decay=decay)
        m = state["exp_avg"].astype(g.dtype)
        c = hyper["beta1"] * m + hyper["one_minus_beta1"] * g
        m = store(hyper["beta2"] * m + hyper["one_minus_beta2"] * g, param.dtype)
        return (p - hyper["lr"] * mx.sign(c)).astype(param.dtype), {"exp_avg": m}

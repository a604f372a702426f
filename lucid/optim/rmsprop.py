"""Running averages of squared gradients: RMSprop and Adadelta."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import mlx.core as mx

from . import checks
from .optimizer import Optimizer
from .terms import Hyper, State, lerp, prepare, store, weight_decay_mode

__all__ = ["RMSprop", "Adadelta"]


class RMSprop(Optimizer):
    r"""RMSprop (Hinton), as ``torch.optim.RMSprop``.

    .. math::

        s &\leftarrow \alpha s + (1 - \alpha) g^2 \\
        \bar g &\leftarrow \bar g + (1 - \alpha)(g - \bar g), \quad
            d = \sqrt{s - \bar g^2} + \epsilon \ \text{ if centered, else }
            d = \sqrt{s} + \epsilon \\
        b &\leftarrow \mu b + g / d, \quad \theta \leftarrow \theta - \text{lr}\, b
            \ \text{ if momentum } \mu > 0, \text{ else }
            \theta \leftarrow \theta - \text{lr}\, g / d

    after :math:`g \leftarrow -g` if maximize and coupled weight decay. State:
    ``"square_avg"`` (:math:`s`), ``"momentum_buffer"`` when momentum > 0, and
    ``"grad_avg"`` (:math:`\bar g`) when centered.
    """

    elementwise = True
    checks = {
        "lr": checks.LEARNING_RATE,
        "alpha": checks.NON_NEGATIVE,
        "eps": checks.NON_NEGATIVE,
        "weight_decay": checks.NON_NEGATIVE,
        "momentum": checks.NON_NEGATIVE,
        "centered": checks.FLAG,
        "maximize": checks.FLAG,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        state = {"square_avg": mx.zeros_like(param)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = mx.zeros_like(param)
        if group["centered"]:
            state["grad_avg"] = mx.zeros_like(param)
        return state

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        return {
            "lr": group["lr"],
            "alpha": group["alpha"],
            "one_minus_alpha": 1 - group["alpha"],
            "eps": group["eps"],
            "weight_decay": group["weight_decay"],
            "momentum": group["momentum"],
        }

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "maximize": group["maximize"],
            "decay": weight_decay_mode(group),
            "momentum": group["momentum"] > 0,
            "centered": group["centered"],
        }

    @staticmethod
    def rule(param: mx.array, grad: mx.array, state: State, hyper: Hyper, *, maximize: bool,
             decay: str, momentum: bool, centered: bool) -> tuple[mx.array, State]:  # fmt: skip
        p, g = prepare(param, grad, hyper, maximize=maximize, decay=decay)
        work, dtype = g.dtype, param.dtype
        s = state["square_avg"].astype(work) * hyper["alpha"] + hyper["one_minus_alpha"] * g * g
        new: State = {"square_avg": store(s, dtype)}
        s = new["square_avg"].astype(work)
        if centered:
            mean = store(lerp(state["grad_avg"].astype(work), g, hyper["one_minus_alpha"]), dtype)
            new["grad_avg"] = mean
            mean = mean.astype(work)
            avg = mx.sqrt(s - mean * mean) + hyper["eps"]
        else:
            avg = mx.sqrt(s) + hyper["eps"]
        if momentum:
            buf = state["momentum_buffer"].astype(work) * hyper["momentum"] + g / avg
            buf = new["momentum_buffer"] = store(buf, dtype)
            p = p - hyper["lr"] * buf.astype(work)
        else:
            p = p - hyper["lr"] * (g / avg)
        return p.astype(dtype), new


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, 2012), as ``torch.optim.Adadelta``.

    .. math::

        s &\leftarrow \rho s + (1 - \rho) g^2, \qquad
        \Delta = \frac{\sqrt{u + \epsilon}}{\sqrt{s + \epsilon}}\, g \\
        u &\leftarrow \rho u + (1 - \rho) \Delta^2, \qquad
        \theta \leftarrow \theta - \text{lr}\, \Delta

    after :math:`g \leftarrow -g` if maximize and coupled weight decay. State:
    ``"square_avg"`` (:math:`s`) and ``"acc_delta"`` (:math:`u`).
    """

    elementwise = True
    checks = {
        "lr": checks.LEARNING_RATE,
        "rho": checks.number(0.0, 1.0),
        "eps": checks.NON_NEGATIVE,
        "weight_decay": checks.NON_NEGATIVE,
        "maximize": checks.FLAG,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        return {"square_avg": mx.zeros_like(param), "acc_delta": mx.zeros_like(param)}

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        return {
            "lr": group["lr"],
            "rho": group["rho"],
            "one_minus_rho": 1 - group["rho"],
            "eps": group["eps"],
            "weight_decay": group["weight_decay"],
        }

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        return {"maximize": group["maximize"], "decay": weight_decay_mode(group)}

    @staticmethod
    def rule(param: mx.array, grad: mx.array, state: State, hyper: Hyper, *,
             maximize: bool, decay: str) -> tuple[mx.array, State]:  # fmt: skip
        p, g = prepare(param, grad, hyper, maximize=maximize, decay=decay)
        work, dtype = g.dtype, param.dtype
        rho, rest, eps = hyper["rho"], hyper["one_minus_rho"], hyper["eps"]
        s = store(state["square_avg"].astype(work) * rho + rest * g * g, dtype)
        delta = mx.sqrt(state["acc_delta"].astype(work) + eps) / mx.sqrt(s.astype(work) + eps) * g
        u = store(state["acc_delta"].astype(work) * rho + rest * delta * delta, dtype)
        return (p - hyper["lr"] * delta).astype(dtype), {"square_avg": s, "acc_delta": u}

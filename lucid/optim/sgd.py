"""Stochastic gradient descent: SGD (with momentum and Nesterov) and averaged SGD (ASGD)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import mlx.core as mx

from . import checks
from .adagrad import put_rows
from .optimizer import Optimizer
from .terms import Hyper, State, prepare, store, weight_decay_mode, working_dtype

__all__ = ["SGD", "ASGD"]


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with momentum, as ``torch.optim.SGD``.

    At a parameter's step :math:`t`, with momentum :math:`\mu`, dampening :math:`\tau`
    and weight decay :math:`\lambda`:

    .. math::

        g &\leftarrow -g \quad \text{if maximize}, \qquad g \leftarrow g + \lambda\theta \\
        b &\leftarrow g \ \text{ at } t = 1, \quad
            b \leftarrow \mu b + (1 - \tau) g \ \text{ after}
            \qquad (\text{if } \mu \ne 0) \\
        g &\leftarrow g + \mu b \ \text{ if nesterov, else } g \leftarrow b \\
        \theta &\leftarrow \theta - \text{lr}\, g

    State: ``"momentum_buffer"`` (:math:`b`) when momentum is not 0, besides ``"step"``
    (torch keeps no step for SGD; lucid needs it for the first step's rule). Nesterov
    needs momentum > 0 and zero dampening. Row-sparse gradients: the same rule on the
    touched rows (momentum of untouched rows does not move, and weight decay reaches a
    row only when it is touched).
    """

    elementwise = True
    supports_sparse = True
    checks = {
        "lr": checks.LEARNING_RATE,
        "momentum": checks.NON_NEGATIVE,
        "dampening": checks.number(-float("inf")),
        "weight_decay": checks.NON_NEGATIVE,
        "nesterov": checks.FLAG,
        "maximize": checks.FLAG,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "nesterov=True needs momentum > 0 and dampening = 0; got momentum="
                f"{group['momentum']!r}, dampening={group['dampening']!r}"
            )

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        return {"momentum_buffer": mx.zeros_like(param)} if group["momentum"] != 0 else {}

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        first = t == 1  # torch starts the buffer as a copy of the first gradient
        return {
            "lr": group["lr"],
            "weight_decay": group["weight_decay"],
            "momentum": group["momentum"],
            "keep": 0.0 if first else group["momentum"],
            "take": 1.0 if first else 1.0 - group["dampening"],
        }

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "maximize": group["maximize"],
            "decay": weight_decay_mode(group),
            "momentum": group["momentum"] != 0,
            "nesterov": group["nesterov"],
        }

    @staticmethod
    def rule(param: mx.array, grad: mx.array, state: State, hyper: Hyper, *,
             maximize: bool, decay: str, momentum: bool,
             nesterov: bool) -> tuple[mx.array, State]:  # fmt: skip
        p, g = prepare(param, grad, hyper, maximize=maximize, decay=decay)
        new: State = {}
        if momentum:
            buf = hyper["keep"] * state["momentum_buffer"].astype(g.dtype) + hyper["take"] * g
            buf = new["momentum_buffer"] = store(buf, param.dtype)
            buf = buf.astype(g.dtype)
            g = g + hyper["momentum"] * buf if nesterov else buf
        return (p - hyper["lr"] * g).astype(param.dtype), new

    @staticmethod
    def rule_rows(param: mx.array, index: mx.array, grad: mx.array, valid: mx.array,
                  param_rows: mx.array, state: State, hyper: Hyper, *, maximize: bool,
                  decay: str, momentum: bool,
                  nesterov: bool) -> tuple[mx.array, State]:  # fmt: skip
        """The rule on the touched rows. The buffer is never gathered before it is written
        (see ``sparse_step.py``): its rows are scaled and added to in place by two
        scatters, and the new rows read from the result."""
        p, g = prepare(param_rows, grad, hyper, maximize=maximize, decay=decay)
        new: State = {}
        if momentum:
            on = valid[:, None]
            buf = state["momentum_buffer"]
            buf = buf.at[index].multiply(mx.where(on, hyper["keep"], 1).astype(buf.dtype))
            buf = buf.at[index].add(mx.where(on, hyper["take"] * g, 0).astype(buf.dtype))
            new["momentum_buffer"] = buf
            rows = buf[index].astype(g.dtype)
            g = g + hyper["momentum"] * rows if nesterov else rows
        return put_rows(param, index, valid, p - hyper["lr"] * g), new


class ASGD(Optimizer):
    r"""Averaged stochastic gradient descent (Polyak and Juditsky), as ``torch.optim.ASGD``.

    With :math:`\eta_1 = \text{lr}`, :math:`\mu_1 = 1` and at step :math:`t`:

    .. math::

        g &\leftarrow -g \ \text{if maximize}, \qquad g \leftarrow g + \lambda_{wd}\theta \\
        \theta &\leftarrow \theta\,(1 - \lambda\eta_t) - \eta_t\, g \\
        a &\leftarrow \theta \ \text{ if } \mu_t = 1, \text{ else }
            a + \mu_t(\theta - a) \\
        \eta_{t+1} &= \text{lr} / (1 + \lambda\,\text{lr}\,t)^{\alpha}, \qquad
        \mu_{t+1} = 1 / \max(1, t - t_0)

    :math:`a` (state ``"ax"``) is the running average of the iterates; ``"eta"`` and
    ``"mu"`` are float32 scalars, as in torch. Because those are per-parameter scalars,
    ASGD's parameters are never gathered into flat buckets.
    """

    checks = {
        "lr": checks.LEARNING_RATE,
        "lambd": checks.NON_NEGATIVE,
        "alpha": checks.NON_NEGATIVE,
        "t0": checks.NON_NEGATIVE,
        "weight_decay": checks.NON_NEGATIVE,
        "maximize": checks.FLAG,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay, maximize=maximize
        )
        super().__init__(params, defaults)

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        lr = group["lr"](0) if callable(group["lr"]) else group["lr"]
        return {
            "eta": mx.array(float(lr), dtype=mx.float32),
            "mu": mx.array(1.0, dtype=mx.float32),
            "ax": mx.zeros_like(param),
        }

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        lr, lambd = group["lr"], group["lambd"]
        return {
            "lambd": lambd,
            "weight_decay": group["weight_decay"],
            "eta_next": lr / (1 + lambd * lr * t) ** group["alpha"],
            "mu_next": 1 / max(1.0, t - group["t0"]),
        }

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        return {"maximize": group["maximize"], "decay": weight_decay_mode(group)}

    @staticmethod
    def rule(param: mx.array, grad: mx.array, state: State, hyper: Hyper, *,
             maximize: bool, decay: str) -> tuple[mx.array, State]:  # fmt: skip
        p, g = prepare(param, grad, hyper, maximize=maximize, decay=decay)
        eta, mu = state["eta"], state["mu"]
        p = (p * (1 - hyper["lambd"] * eta) - eta * g).astype(param.dtype)
        work = working_dtype(param.dtype)
        ax = state["ax"].astype(work)
        ax = mx.where(mu == 1, p.astype(work), ax + (p.astype(work) - ax) * mu)
        new = {
            "eta": hyper["eta_next"].astype(mx.float32),
            "mu": hyper["mu_next"].astype(mx.float32),
            "ax": ax.astype(state["ax"].dtype),
        }
        return p, new

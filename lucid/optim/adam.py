r"""The Adam family: Adam, AdamW, SparseAdam, Adamax, NAdam and RAdam.

They share the moment estimates (Kingma and Ba, 2015):

.. math::

    m \leftarrow m + (1 - \beta_1)(g - m), \qquad v \leftarrow \beta_2 v + (1 - \beta_2) g^2

and differ in how they turn them into a step. AdamW is Adam with decoupled weight decay,
SparseAdam is Adam for row-sparse gradients only: configurations, not copies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import mlx.core as mx

from . import checks
from .adagrad import put_rows
from .optimizer import Optimizer
from .terms import Hyper, State, lerp, prepare, store, weight_decay_mode

__all__ = ["Adam", "AdamW", "SparseAdam", "Adamax", "NAdam", "RAdam"]

_ADAM_CHECKS = {
    "lr": checks.LEARNING_RATE,
    "betas": checks.BETAS,
    "eps": checks.NON_NEGATIVE,
    "weight_decay": checks.NON_NEGATIVE,
    "maximize": checks.FLAG,
}


def _moments(state: State, g: mx.array, hyper: Hyper, dtype: mx.Dtype) -> tuple[mx.array, ...]:
    """The new first and second moments, stored in ``dtype``; returned in g's dtype too."""
    m = store(lerp(state["exp_avg"].astype(g.dtype), g, hyper["one_minus_beta1"]), dtype)
    v = state["exp_avg_sq"].astype(g.dtype) * hyper["beta2"] + hyper["one_minus_beta2"] * g * g
    v = store(v, dtype)
    return m, v


def _betas(group: dict[str, Any]) -> dict[str, float]:
    beta1, beta2 = group["betas"]
    return {"one_minus_beta1": 1 - beta1, "beta2": beta2, "one_minus_beta2": 1 - beta2}


class Adam(Optimizer):
    r"""Adam, as ``torch.optim.Adam`` (weight decay coupled by default, as in torch).

    At a parameter's step :math:`t`, after the shared moments (see this module):

    .. math::

        \hat v &= \max(\hat v, v) \ \text{ if amsgrad, else } \hat v = v \\
        \theta &\leftarrow \theta - \frac{\text{lr}}{1 - \beta_1^t} \cdot
            \frac{m}{\sqrt{\hat v} / \sqrt{1 - \beta_2^t} + \epsilon}

    preceded by :math:`g \leftarrow -g` if maximize, and weight decay :math:`\lambda`:
    coupled :math:`g \leftarrow g + \lambda\theta` (default) or, with
    ``decoupled_weight_decay=True`` (AdamW), :math:`\theta \leftarrow \theta(1 - \text{lr}\,
    \lambda)`. State: ``"exp_avg"`` (:math:`m`), ``"exp_avg_sq"`` (:math:`v`), and
    ``"max_exp_avg_sq"`` with amsgrad. Row-sparse gradients follow torch's SparseAdam:
    only the touched rows' moments and values move (bias corrections use the
    parameter's step count; weight decay is lazy: it reaches a row when it is touched).
    """

    elementwise = True
    supports_sparse = True
    checks = {**_ADAM_CHECKS, "amsgrad": checks.FLAG, "decoupled_weight_decay": checks.FLAG}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        state = {"exp_avg": mx.zeros_like(param), "exp_avg_sq": mx.zeros_like(param)}
        if group.get("amsgrad"):
            state["max_exp_avg_sq"] = mx.zeros_like(param)
        return state

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        beta1, beta2 = group["betas"]
        return {
            **_betas(group),
            "lr": group["lr"],
            "weight_decay": group.get("weight_decay", 0.0),
            "eps": group["eps"],
            "step_size": group["lr"] / (1 - beta1**t),
            "bias_correction2_sqrt": (1 - beta2**t) ** 0.5,
        }

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "maximize": group["maximize"],
            "decay": weight_decay_mode(group, "decoupled_weight_decay"),
            "amsgrad": group["amsgrad"],
        }

    @staticmethod
    def _direction(state: State, g: mx.array, hyper: Hyper, dtype: mx.Dtype,
                   amsgrad: bool) -> tuple[mx.array, State]:  # fmt: skip
        """``m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps)`` and the new state."""
        m, v = _moments(state, g, hyper, dtype)
        new = {"exp_avg": m, "exp_avg_sq": v}
        if amsgrad:
            v = new["max_exp_avg_sq"] = store(mx.maximum(state["max_exp_avg_sq"], v), dtype)
        denom = mx.sqrt(v.astype(g.dtype)) / hyper["bias_correction2_sqrt"] + hyper["eps"]
        return m.astype(g.dtype) / denom, new

    @staticmethod
    def rule(param: mx.array, grad: mx.array, state: State, hyper: Hyper, *,
             maximize: bool, decay: str, amsgrad: bool) -> tuple[mx.array, State]:  # fmt: skip
        p, g = prepare(param, grad, hyper, maximize=maximize, decay=decay)
        direction, new = Adam._direction(state, g, hyper, param.dtype, amsgrad)
        return (p - hyper["step_size"] * direction).astype(param.dtype), new

    @staticmethod
    def rule_rows(param: mx.array, index: mx.array, grad: mx.array, valid: mx.array,
                  param_rows: mx.array, state: State, hyper: Hyper, *, maximize: bool,
                  decay: str, amsgrad: bool) -> tuple[mx.array, State]:  # fmt: skip
        """The rule on the touched rows. No state table is gathered before it is written
        (see ``sparse_step.py``): each moment's rows are scaled, then added to, by
        scatters in place, and the new rows are read from the results."""
        p, g = prepare(param_rows, grad, hyper, maximize=maximize, decay=decay)
        on = valid[:, None]
        new: State = {}
        for key, keep, add in (
            ("exp_avg", 1 - hyper["one_minus_beta1"], hyper["one_minus_beta1"] * g),
            ("exp_avg_sq", hyper["beta2"], hyper["one_minus_beta2"] * g * g),
        ):
            table = state[key]
            table = table.at[index].multiply(mx.where(on, keep, 1).astype(table.dtype))
            new[key] = table.at[index].add(mx.where(on, add, 0).astype(table.dtype))
        v = new["exp_avg_sq"]
        if amsgrad:
            v = new["max_exp_avg_sq"] = state["max_exp_avg_sq"].at[index].maximum(v[index])
        work = g.dtype
        denom = mx.sqrt(v[index].astype(work)) / hyper["bias_correction2_sqrt"] + hyper["eps"]
        p = p - hyper["step_size"] * new["exp_avg"][index].astype(work) / denom
        return put_rows(param, index, valid, p), new


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov and Hutter), as ``torch.optim.AdamW``:
    :math:`\theta \leftarrow \theta (1 - \text{lr}\,\lambda)` before the Adam step, with
    ``weight_decay`` 0.01 by default. Exactly ``Adam(..., decoupled_weight_decay=True)``."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)  # fmt: skip


class SparseAdam(Adam):
    r"""Adam for row-sparse gradients (``nn.Embedding(sparse=True)``), as
    ``torch.optim.SparseAdam``: only the rows a step touches have their moments and values
    updated (the "lazy" Adam). No weight decay, no amsgrad; dense gradients are refused,
    as in torch (``Adam`` takes both kinds). ``lr`` and ``eps`` must be > 0."""

    supports_dense = False
    checks = {**_ADAM_CHECKS, "lr": checks.POSITIVE, "eps": checks.POSITIVE}
    del checks["weight_decay"]

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
    ) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, betas=betas, eps=eps, maximize=maximize))

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        return {"maximize": group["maximize"], "decay": "none", "amsgrad": False}


class Adamax(Optimizer):
    r"""Adamax, Adam with the infinity norm, as ``torch.optim.Adamax``:

    .. math::

        m &\leftarrow m + (1 - \beta_1)(g - m), \qquad
        u \leftarrow \max(\beta_2 u, |g| + \epsilon) \\
        \theta &\leftarrow \theta - \frac{\text{lr}}{1 - \beta_1^t} \cdot \frac{m}{u}

    after :math:`g \leftarrow -g` if maximize and coupled weight decay
    :math:`g \leftarrow g + \lambda\theta`. State: ``"exp_avg"``, ``"exp_inf"``.
    """

    elementwise = True
    checks = _ADAM_CHECKS

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        return {"exp_avg": mx.zeros_like(param), "exp_inf": mx.zeros_like(param)}

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        beta1, _ = group["betas"]
        return {
            **_betas(group),
            "weight_decay": group["weight_decay"],
            "eps": group["eps"],
            "step_size": group["lr"] / (1 - beta1**t),
        }

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        return {"maximize": group["maximize"], "decay": weight_decay_mode(group)}

    @staticmethod
    def rule(param: mx.array, grad: mx.array, state: State, hyper: Hyper, *,
             maximize: bool, decay: str) -> tuple[mx.array, State]:  # fmt: skip
        p, g = prepare(param, grad, hyper, maximize=maximize, decay=decay)
        m = store(lerp(state["exp_avg"].astype(g.dtype), g, hyper["one_minus_beta1"]), param.dtype)
        u = state["exp_inf"].astype(g.dtype) * hyper["beta2"]
        u = store(mx.maximum(u, mx.abs(g) + hyper["eps"]), param.dtype)
        p = p - hyper["step_size"] * (m.astype(g.dtype) / u.astype(g.dtype))
        return p.astype(param.dtype), {"exp_avg": m, "exp_inf": u}


class NAdam(Optimizer):
    r"""Adam with Nesterov momentum (Dozat, 2016), as ``torch.optim.NAdam``.

    With :math:`\mu_t = \beta_1 (1 - \tfrac12 \cdot 0.96^{t\psi})` (:math:`\psi` =
    ``momentum_decay``) and :math:`\Pi_t = \prod_{k \le t} \mu_k` (state ``"mu_product"``),
    after the shared moments:

    .. math::

        \theta \leftarrow \theta
            - \text{lr} \frac{1 - \mu_t}{1 - \Pi_t} \cdot \frac{g}{d}
            - \text{lr} \frac{\mu_{t+1}}{1 - \Pi_t \mu_{t+1}} \cdot \frac{m}{d},
        \qquad d = \sqrt{v / (1 - \beta_2^t)} + \epsilon

    Weight decay is coupled by default, decoupled with ``decoupled_weight_decay=True``.
    State: ``"mu_product"`` (a float32 scalar, as in torch), ``"exp_avg"``,
    ``"exp_avg_sq"``; the scalar keeps NAdam's parameters out of flat buckets.
    """

    checks = {**_ADAM_CHECKS, "momentum_decay": checks.NON_NEGATIVE,
              "decoupled_weight_decay": checks.FLAG}  # fmt: skip

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        return {
            "mu_product": mx.array(1.0, dtype=mx.float32),
            "exp_avg": mx.zeros_like(param),
            "exp_avg_sq": mx.zeros_like(param),
        }

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        beta1, beta2 = group["betas"]
        psi = group["momentum_decay"]
        return {
            **_betas(group),
            "lr": group["lr"],
            "weight_decay": group["weight_decay"],
            "eps": group["eps"],
            "bias_correction2": 1 - beta2**t,
            "mu": beta1 * (1.0 - 0.5 * 0.96 ** (t * psi)),
            "mu_next": beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi)),
        }

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        decay = weight_decay_mode(group, "decoupled_weight_decay")
        return {"maximize": group["maximize"], "decay": decay}

    @staticmethod
    def rule(param: mx.array, grad: mx.array, state: State, hyper: Hyper, *,
             maximize: bool, decay: str) -> tuple[mx.array, State]:  # fmt: skip
        p, g = prepare(param, grad, hyper, maximize=maximize, decay=decay)
        mu, mu_next, lr = hyper["mu"], hyper["mu_next"], hyper["lr"]
        product = state["mu_product"] * mu
        m, v = _moments(state, g, hyper, param.dtype)
        denom = mx.sqrt(v.astype(g.dtype) / hyper["bias_correction2"]) + hyper["eps"]
        p = p + (-lr * (1.0 - mu) / (1.0 - product)) * (g / denom)
        p = p + (-lr * mu_next / (1.0 - product * mu_next)) * (m.astype(g.dtype) / denom)
        return p.astype(param.dtype), {"mu_product": product, "exp_avg": m, "exp_avg_sq": v}


class RAdam(Optimizer):
    r"""Rectified Adam (Liu et al., 2020), as ``torch.optim.RAdam``.

    With :math:`\rho_\infty = 2 / (1 - \beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t)`, after the shared
    moments, :math:`\hat m = m / (1 - \beta_1^t)` and

    .. math::

        \theta \leftarrow \theta - \text{lr}\,\hat m \cdot
        \begin{cases}
            r_t \sqrt{1 - \beta_2^t} / (\sqrt v + \epsilon) & \rho_t > 5 \\
            1 & \text{otherwise}
        \end{cases}, \quad
        r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}{(\rho_\infty - 4)
            (\rho_\infty - 2)\rho_t}}

    The branch is chosen on the host each step and enters as a number, so it never
    retraces. Weight decay is coupled by default, decoupled with
    ``decoupled_weight_decay=True``. State: ``"exp_avg"``, ``"exp_avg_sq"``.
    """

    elementwise = True
    checks = {**_ADAM_CHECKS, "decoupled_weight_decay": checks.FLAG}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        return {"exp_avg": mx.zeros_like(param), "exp_avg_sq": mx.zeros_like(param)}

    def step_hyperparameters(self, group: dict[str, Any], t: int) -> dict[str, float]:
        beta1, beta2 = group["betas"]
        bias_correction2 = 1 - beta2**t
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * beta2**t / bias_correction2
        rectified = rho_t > 5.0
        rect = (
            math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            if rectified
            else 0.0
        )
        return {
            **_betas(group),
            "lr": group["lr"],
            "weight_decay": group["weight_decay"],
            "eps": group["eps"],
            "bias_correction1": 1 - beta1**t,
            "bias_correction2_sqrt": bias_correction2**0.5,
            "rect": rect,
            "rectified": float(rectified),
        }

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        decay = weight_decay_mode(group, "decoupled_weight_decay")
        return {"maximize": group["maximize"], "decay": decay}

    @staticmethod
    def rule(param: mx.array, grad: mx.array, state: State, hyper: Hyper, *,
             maximize: bool, decay: str) -> tuple[mx.array, State]:  # fmt: skip
        p, g = prepare(param, grad, hyper, maximize=maximize, decay=decay)
        m, v = _moments(state, g, hyper, param.dtype)
        corrected = m.astype(g.dtype) / hyper["bias_correction1"]
        adaptive = hyper["bias_correction2_sqrt"] / (mx.sqrt(v.astype(g.dtype)) + hyper["eps"])
        scale = mx.where(hyper["rectified"] > 0, adaptive * hyper["rect"], 1.0)
        p = p - corrected * hyper["lr"] * scale
        return p.astype(param.dtype), {"exp_avg": m, "exp_avg_sq": v}

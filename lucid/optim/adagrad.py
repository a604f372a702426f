"""Adagrad: per-coordinate step sizes from the running sum of squared gradients."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import mlx.core as mx

from .optimizer import Optimizer, State

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""Adagrad (Duchi, Hazan and Singer, 2011), as lucid's spec states it.

    For each parameter :math:`\theta` with gradient :math:`g`, at its step :math:`t`
    (counting from 1):

    .. math::

        g &\leftarrow -g \quad \text{if maximize} \\
        \text{lr}_t &= \text{lr} / (1 + (t - 1)\,\text{lr\_decay}) \\
        \theta &\leftarrow \theta\,(1 - \text{lr}_t\,\text{wd})
            \quad \text{if wd} \ne 0 \text{ and decoupled\_weight\_decay (default)} \\
        g &\leftarrow g + \text{wd}\,\theta
            \quad \text{if wd} \ne 0 \text{ and not decoupled\_weight\_decay} \\
        G &\leftarrow G + g^2, \qquad G_0 = \text{initial\_accumulator\_value} \\
        \theta &\leftarrow \theta - \text{lr}_t\, g / (\sqrt{G} + \epsilon)

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate (default ``1e-2``).
        eps: added to :math:`\sqrt{G}`, outside the square root (default ``1e-10``).
        weight_decay: decay coefficient ``wd`` (default ``0``).
        initial_accumulator_value: starting value of :math:`G` (default ``0``).
        lr_decay: learning-rate decay per step (default ``0``).
        maximize: ascend the objective instead of descending it (default ``False``).
        decoupled_weight_decay: decay the parameters directly, as the spec says
            (default ``True``); ``False`` gives PyTorch's coupled L2 term.

    Every numeric argument must be finite and ``>= 0``; ``ValueError`` names the one
    that is not. Parameters whose ``grad`` is ``None`` are skipped: their state and
    step do not advance. State per parameter: ``"step"`` (float32 scalar) and ``"sum"``
    (:math:`G`, in the parameter's dtype). Half-precision parameters are updated in
    float32 and rounded back once.

    How lucid differs from its peers:

    - PyTorch: weight decay is *decoupled* by default (``decoupled_weight_decay=False``
      reproduces ``torch.optim.Adagrad`` exactly).
    - MLX (``mlx.optimizers.Adagrad``): eps ``1e-8`` there, and no weight decay,
      ``lr_decay`` or ``initial_accumulator_value``.
    - optax and Keras: eps inside the square root, :math:`\sqrt{G + \epsilon}`, and an
      initial accumulator of ``0.1``.

    Example::

        opt = lucid.optim.Adagrad(model.parameters(), lr=0.01)
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    """

    array_hyperparameters = ("lr", "eps", "weight_decay", "lr_decay")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        *,
        lr_decay: float = 0.0,
        maximize: bool = False,
        decoupled_weight_decay: bool = True,
    ) -> None:
        defaults = dict(
            lr=lr,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            lr_decay=lr_decay,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def validate(self, name: str, value: Any) -> None:
        if name in ("maximize", "decoupled_weight_decay"):
            if not isinstance(value, bool):
                raise ValueError(f"Adagrad: {name} must be a bool; got {value!r}")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"Adagrad: {name} must be a real number; got {value!r}")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"Adagrad: {name} must be finite and >= 0; got {value!r}")

    def init_state(self, param: mx.array, group: dict[str, Any]) -> State:
        return {"sum": mx.full(param.shape, group["initial_accumulator_value"], dtype=param.dtype)}

    def static_config(self, group: dict[str, Any]) -> dict[str, Any]:
        if group["weight_decay"] == 0:
            decay = "none"
        else:
            decay = "decoupled" if group["decoupled_weight_decay"] else "coupled"
        return {"maximize": group["maximize"], "decay": decay}

    @staticmethod
    def update(
        param: mx.array,
        grad: mx.array,
        state: State,
        hyper: dict[str, mx.array],
        *,
        maximize: bool = False,
        decay: str = "none",
    ) -> tuple[mx.array, State]:
        """The rule on one parameter; pure, so ``mx.compile`` can fuse it."""
        p = param.astype(mx.float32)
        g = grad.astype(mx.float32)
        if maximize:
            g = -g
        lr = hyper["lr"] / (1 + (hyper["step"] - 1) * hyper["lr_decay"])
        if decay == "decoupled":
            p = p * (1 - lr * hyper["weight_decay"])
        elif decay == "coupled":
            g = g + hyper["weight_decay"] * p
        G = state["sum"].astype(mx.float32) + g * g
        p = p - lr * g / (mx.sqrt(G) + hyper["eps"])
        return p.astype(param.dtype), {"sum": G.astype(param.dtype)}

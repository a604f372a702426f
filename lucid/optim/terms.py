"""The terms most update rules share: the working precision, ``maximize`` and weight decay.

Every rule computes in :func:`working_dtype` and rounds its results to the parameter's
dtype once, at the end: float32 and the half types are updated in float32, float64 in
float64. (torch on CPU rounds half-precision values after every operation instead.)
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from .kernels import fence

__all__ = ["working_dtype", "prepare", "weight_decay_mode", "store", "lerp", "State", "Hyper"]

State = dict[str, mx.array]
Hyper = dict[str, mx.array]


def working_dtype(dtype: mx.Dtype) -> mx.Dtype:
    """float32 for float32 and the half types (one rounding at the end), else the dtype."""
    return mx.float64 if dtype == mx.float64 else mx.float32


def weight_decay_mode(group: dict[str, Any], decoupled_key: str | None = None) -> str:
    """``"none"`` when ``weight_decay`` is 0, else ``"decoupled"`` or ``"coupled"``.

    ``decoupled_key`` names the group's flag that picks decoupled decay; without one the
    rule always couples (torch's SGD, RMSprop, Adamax, ...)."""
    if group["weight_decay"] == 0:
        return "none"
    return "decoupled" if decoupled_key and group[decoupled_key] else "coupled"


def prepare(
    param: mx.array, grad: mx.array, hyper: Hyper, *, maximize: bool = False, decay: str = "none"
) -> tuple[mx.array, mx.array]:
    r"""The first steps of most rules, in the working dtype:

    .. math::

        g &\leftarrow -g \quad \text{if maximize} \\
        \theta &\leftarrow \theta\,(1 - \text{lr}\,\lambda) \quad \text{(decoupled decay)} \\
        g &\leftarrow g + \lambda\,\theta \quad \text{(coupled decay, an L2 term)}

    with :math:`\lambda` = ``hyper["weight_decay"]`` and lr = ``hyper["lr"]``.
    """
    work = working_dtype(param.dtype)
    p, g = param.astype(work), grad.astype(work)
    if maximize:
        g = -g
    if decay == "decoupled":
        p = p * (1 - hyper["lr"] * hyper["weight_decay"])
    elif decay == "coupled":
        g = g + hyper["weight_decay"] * p
    return p, g


def store(x: mx.array, dtype: mx.Dtype) -> mx.array:
    """A new state value, rounded to its stored ``dtype``, at a
    :func:`~lucid.optim.kernels.fence` (large states get a kernel of their own, so that
    they are written over the old state's buffer); the rule then reads the stored value,
    as torch reads its state."""
    return fence(x.astype(dtype))


def lerp(a: mx.array, b: mx.array, weight: mx.array) -> mx.array:
    """``a + weight (b - a)``: torch's ``lerp`` for weights below 0.5 (every EMA here)."""
    return a + weight * (b - a)

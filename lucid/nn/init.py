"""Parameter initialisation schemes, the same formulas PyTorch's ``torch.nn.init`` uses.

Each ``*_`` function replaces ``tensor.data`` with new values of the same shape and dtype
(no graph is recorded) and returns the tensor. Random draws use MLX's global generator, so
:func:`lucid.manual_seed` makes them reproducible; the streams differ from PyTorch's.
"""

from __future__ import annotations

import math

import mlx.core as mx

from ..tensor import Tensor

__all__ = [
    "calculate_gain",
    "uniform_",
    "normal_",
    "constant_",
    "zeros_",
    "ones_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
]

_FAN_MODES = ("fan_in", "fan_out")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity.

    ``linear``/``identity``/``sigmoid``: 1; ``tanh``: 5/3; ``relu``: sqrt(2);
    ``leaky_relu`` with negative slope ``a`` (``param``, default 0.01): sqrt(2 / (1 + a^2)).
    """
    if nonlinearity in ("linear", "identity", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        a = 0.01 if param is None else param
        if isinstance(a, bool) or not isinstance(a, (int, float)):
            raise ValueError(f"calculate_gain(): param must be a number; got {param!r}")
        return math.sqrt(2.0 / (1 + a * a))
    raise ValueError(
        f"calculate_gain(): unknown nonlinearity {nonlinearity!r}; expected one of "
        "'linear', 'identity', 'sigmoid', 'tanh', 'relu', 'leaky_relu'"
    )


def _fans(tensor: Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight shaped ``(out, in, *receptive_field)``."""
    if tensor.ndim < 2:
        raise ValueError(
            f"fan in and fan out need a tensor with at least 2 dims; got shape {tensor.shape}"
        )
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor: Tensor, mode: str) -> int:
    if mode not in _FAN_MODES:
        raise ValueError(f"mode must be one of {_FAN_MODES}; got {mode!r}")
    fan_in, fan_out = _fans(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Fill with samples from ``U(a, b)``."""
    if not a <= b:
        raise ValueError(f"uniform_(): need a <= b; got a={a}, b={b}")
    tensor.data = mx.random.uniform(a, b, tensor.shape, dtype=tensor.dtype)
    return tensor


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill with samples from ``N(mean, std^2)``."""
    if std < 0:
        raise ValueError(f"normal_(): std must be >= 0; got {std}")
    tensor.data = mx.random.normal(tensor.shape, dtype=tensor.dtype, loc=mean, scale=std)
    return tensor


def constant_(tensor: Tensor, value: float) -> Tensor:
    tensor.data = mx.full(tensor.shape, value, dtype=tensor.dtype)
    return tensor


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot uniform: ``U(-b, b)`` with ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = _fans(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot normal: ``N(0, std^2)`` with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = _fans(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(
    tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> Tensor:
    """He uniform: ``U(-b, b)`` with ``b = gain * sqrt(3 / fan)``, ``gain = calculate_gain``.

    With ``a = sqrt(5)`` (what :class:`~lucid.nn.Linear` uses) the gain is ``sqrt(1/3)`` and
    the bound reduces to ``1 / sqrt(fan_in)``.
    """
    gain = calculate_gain(nonlinearity, a)
    bound = gain * math.sqrt(3.0 / _fan(tensor, mode))
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(
    tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> Tensor:
    """He normal: ``N(0, std^2)`` with ``std = gain / sqrt(fan)``."""
    gain = calculate_gain(nonlinearity, a)
    return normal_(tensor, 0.0, gain / math.sqrt(_fan(tensor, mode)))

"""Elementwise activation layers; each wraps the function of the same name in ``functional``."""

from __future__ import annotations

from ..tensor import Tensor
from . import _validation as _check
from . import functional as F
from .module import Module

__all__ = ["ReLU", "Tanh", "Sigmoid", "GELU"]


class ReLU(Module):
    """``max(x, 0)``. No ``inplace`` argument: MLX arrays are immutable."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class Tanh(Module):
    """``tanh(x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class GELU(Module):
    """``x * Phi(x)`` (exact, the default) or its tanh approximation (``approximate="tanh"``);
    see :func:`lucid.nn.functional.gelu`."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = _check.one_of("GELU", "approximate", approximate, ("none", "tanh"))

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"

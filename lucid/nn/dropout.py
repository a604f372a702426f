"""Dropout: random zeroing during training, the identity in eval mode."""

from __future__ import annotations

from ..tensor import Tensor
from . import _validation as _check
from . import functional as F
from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """In training mode, zero each element with probability ``p`` (default 0.5) and scale the
    survivors by ``1 / (1 - p)`` so the expectation is unchanged; in eval mode, the identity.

    Masks come from ``mx.random`` (seeded by :func:`lucid.manual_seed`), so they differ from
    PyTorch's for the same seed. No ``inplace`` argument: MLX arrays are immutable.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = _check.probability("Dropout", "p", p)

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"

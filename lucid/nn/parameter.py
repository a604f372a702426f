"""Parameter: a leaf Tensor that a Module registers and an optimizer updates."""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from ..tensor import Tensor

__all__ = ["Parameter"]


class Parameter(Tensor):
    """A Tensor with ``requires_grad=True`` that ``Module`` registers on assignment.

    Accepts everything :func:`lucid.tensor` accepts. Python numbers become float32;
    integer data is refused, since only floating values can have gradients.
    """

    __slots__ = ()

    def __init__(self, data: Any, dtype: mx.Dtype | None = None, requires_grad: bool = True):
        if dtype is None and isinstance(data, (int, float, list, tuple)):
            dtype = mx.float32
        super().__init__(data, dtype=dtype, requires_grad=False)
        if not mx.issubdtype(self.data.dtype, mx.floating):
            raise TypeError(f"Parameter: data must have a floating dtype; got {self.data.dtype}")
        self.requires_grad = bool(requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

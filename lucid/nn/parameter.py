"""Parameter: a leaf Tensor that a Module registers and an optimizer updates."""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from ..tensor import Tensor

__all__ = ["Parameter"]

_DATA = Tensor.__dict__["data"]  # the slot that holds a Tensor's array


class Parameter(Tensor):
    """A Tensor with ``requires_grad=True`` that ``Module`` registers on assignment.

    Accepts everything :func:`lucid.tensor` accepts. Python numbers become float32;
    integer data is refused, since only floating values can have gradients.

    Every assignment to ``.data`` (``p.data = x``, and ``p.data *= 0.5``, which assigns
    too) bumps ``p._version``, as torch counts in-place writes; an optimizer uses it to
    notice values it did not write. Item assignment into the array
    (``p.data[0] = 1``) changes the array without assigning ``.data``, so nothing sees
    it: write ``p.data = p.data.at[0].add(...)`` or build a new array instead.
    """

    __slots__ = ("_version",)

    def __init__(self, data: Any, dtype: mx.Dtype | None = None, requires_grad: bool = True):
        self._version = 0
        if dtype is None and isinstance(data, (int, float, list, tuple)):
            dtype = mx.float32
        super().__init__(data, dtype=dtype, requires_grad=False)
        if not mx.issubdtype(self.data.dtype, mx.floating):
            raise TypeError(f"Parameter: data must have a floating dtype; got {self.data.dtype}")
        self.requires_grad = bool(requires_grad)

    @property  # type: ignore[override]
    def data(self) -> mx.array:
        return _DATA.__get__(self)

    @data.setter
    def data(self, value: mx.array) -> None:
        _DATA.__set__(self, value)
        self._version += 1

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

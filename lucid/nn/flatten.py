"""Flatten: merge a range of axes into one."""

from __future__ import annotations

from ..tensor import Tensor, _torch_names
from .module import Module

__all__ = ["Flatten"]


class Flatten(Module):
    """Merge axes ``start_axis..end_axis`` (inclusive) into one; by default every axis but the
    batch axis, so ``(N, C, H, W) -> (N, C*H*W)``. PyTorch's names ``start_dim``/``end_dim``
    are accepted too.
    """

    @_torch_names(start_dim="start_axis", end_dim="end_axis")
    def __init__(self, start_axis: int = 1, end_axis: int = -1) -> None:
        super().__init__()
        for name, value in (("start_axis", start_axis), ("end_axis", end_axis)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Flatten: {name} must be an int; got {value!r}")
        self.start_axis = start_axis
        self.end_axis = end_axis

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_axis, self.end_axis)

    def extra_repr(self) -> str:
        return f"start_axis={self.start_axis}, end_axis={self.end_axis}"

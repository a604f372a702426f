"""Normalisation layers."""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx

from ..tensor import Tensor
from . import _validation as _check
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["LayerNorm"]


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` dims, then apply a learned affine map:

    ``y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias`` (biased variance, ``eps=1e-5``).

    With ``elementwise_affine=True`` (default) ``weight`` starts at ones and ``bias`` at zeros,
    both shaped ``normalized_shape``; ``bias=False`` drops the shift.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        dtype: mx.Dtype = mx.float32,
    ) -> None:
        super().__init__()
        self.normalized_shape = _check.shape("LayerNorm", "normalized_shape", normalized_shape)
        self.eps = _check.non_negative("LayerNorm", "eps", eps)
        self.elementwise_affine = _check.flag("LayerNorm", "elementwise_affine", elementwise_affine)
        _check.flag("LayerNorm", "bias", bias)
        shape = self.normalized_shape
        affine, shift = elementwise_affine, elementwise_affine and bias
        self.register_parameter(
            "weight", Parameter(mx.ones(shape, dtype=dtype)) if affine else None
        )
        self.register_parameter("bias", Parameter(mx.zeros(shape, dtype=dtype)) if shift else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        dims = self.normalized_shape
        if x.shape[x.ndim - len(dims) :] != dims:
            raise ValueError(
                f"LayerNorm(normalized_shape={dims}): input has shape {x.shape}; "
                f"expected the last {len(dims)} dimension(s) to be {dims}"
            )
        return F.layer_norm(x, dims, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )

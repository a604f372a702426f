"""Linear (affine) layer and the Identity placeholder."""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx

from ..tensor import Tensor
from . import _validation as _check
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Linear", "Identity"]


class Linear(Module):
    """Affine map ``y = x W^T + b`` over the last axis.

    ``weight`` has shape ``(out_features, in_features)`` and ``bias`` ``(out_features,)``.
    Both start as ``U(-k, k)`` with ``k = 1 / sqrt(in_features)``, which is PyTorch's default
    (``kaiming_uniform_(a=sqrt(5))`` for the weight). ``dtype`` defaults to float32.
    Unlike PyTorch, ``in_features`` and ``out_features`` must be at least 1.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, dtype: mx.Dtype = mx.float32
    ) -> None:
        super().__init__()
        self.in_features = _check.positive_int("Linear", "in_features", in_features)
        self.out_features = _check.positive_int("Linear", "out_features", out_features)
        _check.flag("Linear", "bias", bias)
        self.weight = Parameter(mx.zeros((out_features, in_features), dtype=dtype))
        if bias:
            self.bias = Parameter(mx.zeros((out_features,), dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Any) -> Any:
        x = x if isinstance(x, Tensor) else Tensor(x)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear(in_features={self.in_features}, out_features={self.out_features}): "
                f"input has shape {x.shape}; expected last dimension {self.in_features}"
            )
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Identity(Module):
    """Returns its input unchanged; accepts and ignores any constructor arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Any) -> Any:
        return x

"""Loss modules: ``loss(input, target)`` with ``reduction`` in ``"mean"`` (default), ``"sum"``
and ``"none"``. Targets may be Tensors, NumPy arrays, mx.arrays or nested lists; the formulas
and the differences from PyTorch are in :mod:`lucid.nn.functional`."""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from ..tensor import Tensor
from . import _validation as _check
from . import functional as F
from .module import Module

__all__ = ["MSELoss", "L1Loss", "CrossEntropyLoss", "BCEWithLogitsLoss"]


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check.reduction(type(self).__name__, reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """Squared error ``(x - y)^2``; see :func:`~lucid.nn.functional.mse_loss`."""

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    """Absolute error ``|x - y|``; see :func:`~lucid.nn.functional.l1_loss`."""

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.l1_loss(input, target, self.reduction)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy ``logsumexp(x_n) - x_n[y_n]`` of logits ``(N, C)`` against class
    indices ``(N,)``; targets equal to ``ignore_index`` (default -100) are skipped. Optional
    class ``weight`` (shape ``(C,)``, stored as a buffer as in PyTorch) and
    ``label_smoothing`` in ``[0, 1]``, both keyword-only. Targets outside ``[0, C)`` raise
    ``IndexError``. See :func:`~lucid.nn.functional.cross_entropy` for the formula."""

    def __init__(
        self,
        reduction: str = "mean",
        ignore_index: int = -100,
        *,
        weight: Any = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"CrossEntropyLoss: ignore_index must be an int; got {ignore_index!r}")
        self.ignore_index = ignore_index
        self.label_smoothing = _check.probability(
            "CrossEntropyLoss", "label_smoothing", label_smoothing
        )
        if weight is not None:
            w = weight if isinstance(weight, Tensor) else Tensor(weight)
            if w.ndim != 1 or not mx.issubdtype(w.dtype, mx.floating):
                raise ValueError(
                    f"CrossEntropyLoss: weight must be a 1-D floating array (one per class); "
                    f"got dtype {w.dtype}, shape {w.shape}"
                )
            weight = w.detach()
        self.register_buffer("weight", weight)

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.cross_entropy(
            input,
            target,
            self.reduction,
            self.ignore_index,
            weight=self.weight,
            label_smoothing=self.label_smoothing,
        )

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.ignore_index != -100:
            text += f", ignore_index={self.ignore_index}"
        if self.label_smoothing:
            text += f", label_smoothing={self.label_smoothing}"
        return text


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy on logits, ``log(1 + exp(x)) - x y`` in a stable form; see
    :func:`~lucid.nn.functional.binary_cross_entropy_with_logits`."""

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.reduction)

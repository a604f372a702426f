"""Embedding: a lookup table of learned vectors indexed by integers."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from ..tensor import Tensor, _to_array
from . import _validation as _check
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Embedding"]


class Embedding(Module):
    """Map integer indices to rows of ``weight`` (shape ``(num_embeddings, embedding_dim)``).

    ``out[..., :] = weight[input[...], :]``, so the output shape is
    ``input.shape + (embedding_dim,)``. ``weight`` starts as ``N(0, 1)``, as in PyTorch.

    ``padding_idx`` (may be negative, counted from the end): that row is zero at init and
    never receives a gradient, though lookups still return its current value.
    ``sparse=True``: ``weight.grad`` is a :class:`lucid.SparseGrad` (the rows looked up and
    one gradient row per lookup) instead of a dense table-sized array, so an optimizer
    that supports it (:class:`lucid.optim.Adagrad`) touches only those rows.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        sparse: bool = False,
        dtype: mx.Dtype = mx.float32,
    ) -> None:
        super().__init__()
        self.num_embeddings = _check.positive_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = _check.positive_int("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None:
            in_range = -num_embeddings <= padding_idx < num_embeddings
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, int) or not in_range:
                raise ValueError(
                    f"Embedding: padding_idx must be None or an int in "
                    f"[-{num_embeddings}, {num_embeddings}); got {padding_idx!r}"
                )
            padding_idx %= num_embeddings
        self.padding_idx = padding_idx
        self.sparse = _check.flag("Embedding", "sparse", sparse)
        self.weight = Parameter(mx.zeros((num_embeddings, embedding_dim), dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            rows = mx.arange(self.num_embeddings)[:, None]
            self.weight.data = mx.where(rows == self.padding_idx, 0.0, self.weight.data)

    def forward(self, input: Any) -> Tensor:
        if isinstance(input, (Tensor, mx.array, np.ndarray)) and input.size:  # lists: F checks
            dtype = input.dtype
            if not (
                mx.issubdtype(dtype, mx.integer)
                if isinstance(dtype, mx.Dtype)
                else np.dtype(dtype).kind in "iu"
            ):
                shown = str(_to_array(input).dtype).removeprefix("mlx.core.")  # as lucid stores it
                raise TypeError(
                    f"Embedding({self.num_embeddings}, {self.embedding_dim}): input must hold "
                    f"integer indices; got dtype {shown} (cast with .astype(lucid.int32))"
                )
        return F.embedding(input, self.weight, self.padding_idx, self.sparse)

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        if self.sparse:
            text += ", sparse=True"
        return text

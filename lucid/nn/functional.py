"""Stateless versions of the layers and losses, composed from differentiable Tensor ops.

Nothing here writes its own backward: every function is built from ops in
:mod:`lucid.tensor`, so gradients follow from theirs and stay lazy (no ``mx.eval``).
The one exception is ``embedding(..., sparse=True)``, whose gradient is a
:class:`lucid.SparseGrad`, a kind no Tensor op produces.
Axis arguments are called ``axis`` as everywhere in lucid (PyTorch says ``dim``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import mlx.core as mx

from ..sparse import SparseGrad, stamp
from ..tensor import Tensor, _result, _to_array, logsumexp, reshape, sqrt, stack, where
from ..tensor import gelu as _gelu_exact
from ..tensor import log_softmax as _log_softmax
from ..tensor import relu as _relu
from ..tensor import sigmoid as _sigmoid
from ..tensor import softmax as _softmax
from ..tensor import tanh as _tanh
from . import _validation as _check

__all__ = [
    "linear",
    "embedding",
    "relu",
    "tanh",
    "sigmoid",
    "gelu",
    "softmax",
    "log_softmax",
    "dropout",
    "layer_norm",
    "mse_loss",
    "l1_loss",
    "cross_entropy",
    "binary_cross_entropy_with_logits",
]


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


# --------------------------------------------------------------------------- layers


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y = x W^T + b`` with ``weight`` shaped ``(out_features, in_features)``."""
    out = _tensor(input) @ weight.T
    return out if bias is None else out + bias


def _indices(input: Any, who: str) -> mx.array:
    idx = _to_array(input)
    if not mx.issubdtype(idx.dtype, mx.integer):
        raise TypeError(f"{who}: input must hold integer indices; got dtype {idx.dtype}")
    return idx


def embedding(
    input: Any, weight: Tensor, padding_idx: int | None = None, sparse: bool = False
) -> Tensor:
    """Look up rows: ``out[..., :] = weight[input[...], :]``; output shape ``input.shape + (D,)``.

    ``input`` is an integer Tensor, NumPy or mx array (or nested list). The gradient w.r.t.
    ``weight`` scatter-adds each output row into the row it came from: a dense array, or
    with ``sparse=True`` a :class:`lucid.SparseGrad` (one entry per lookup, repeats not yet
    merged). With ``padding_idx`` set, that row still appears in the output but receives
    no gradient (sparse: its entries carry zeros). Indices are not range-checked (checking
    would force evaluation).
    """
    idx = _indices(input, "embedding()")
    if sparse:
        return _sparse_embedding(idx, weight, padding_idx)
    rows = weight[idx]
    if padding_idx is None:
        return rows
    # Same values either way; only the branch taken from `rows` carries a gradient.
    keep = mx.expand_dims(idx != padding_idx, -1)
    return where(keep, rows, rows.detach())


def _sparse_embedding(idx: mx.array, weight: Tensor, padding_idx: int | None) -> Tensor:
    shape = tuple(weight.shape)
    flat = idx.reshape(-1)
    # negative indices count from the end, as in the dense lookup; the optimizer merges
    # repeats by index value, so -1 and N-1 must be the same row there
    flat = mx.where(flat < 0, flat + shape[0], flat)
    out = weight.data[flat]
    dtype, seen = weight.dtype, stamp(weight)  # as they are now, not at backward time

    def backward(g: mx.array):
        values = g.reshape(flat.shape[0], shape[1]).astype(dtype)
        if padding_idx is not None:
            values = mx.where(mx.expand_dims(flat != padding_idx, -1), values, 0)
        # the looked-up rows ride along: coupled weight decay needs them, and gathering
        # them again in the step would make MLX copy the table (see lucid.sparse)
        return (SparseGrad(flat, values, shape)._with_rows(out, weight, seen),)

    result = _result(out, (weight,), backward, "embedding")
    return reshape(result, (*idx.shape, shape[1])) if idx.ndim != 1 else result


def relu(input: Tensor) -> Tensor:
    """``max(x, 0)``; the gradient at 0 is 0 (as in PyTorch)."""
    return _relu(input)


def tanh(input: Tensor) -> Tensor:
    return _tanh(input)


def sigmoid(input: Tensor) -> Tensor:
    """``1 / (1 + exp(-x))``."""
    return _sigmoid(input)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """GELU: ``x * Phi(x)`` with the normal CDF ``Phi`` (``approximate="none"``, the default) or
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (``approximate="tanh"``)."""
    _check.one_of("gelu()", "approximate", approximate, ("none", "tanh"))
    if approximate == "none":
        return _gelu_exact(input)
    inner = math.sqrt(2.0 / math.pi) * (input + 0.044715 * input * input * input)
    return 0.5 * input * (1.0 + _tanh(inner))


def softmax(input: Tensor, axis: int = -1) -> Tensor:
    """``exp(x_i) / sum_j exp(x_j)`` along ``axis``."""
    return _softmax(input, axis)


def log_softmax(input: Tensor, axis: int = -1) -> Tensor:
    """``x_i - log sum_j exp(x_j)`` along ``axis``, computed stably."""
    return _log_softmax(input, axis)


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    The identity when ``training`` is false or ``p == 0``; all zeros when ``p == 1``. The mask
    comes from ``mx.random`` (seeded by :func:`lucid.manual_seed`); PyTorch's masks differ.
    """
    p = _check.probability("dropout()", "p", p)
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    keep = mx.random.bernoulli(1.0 - p, input.shape)
    return input * (keep.astype(input.dtype) * (1.0 / (1.0 - p)))


def layer_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise over the trailing ``normalized_shape`` dims, then scale and shift:

    ``y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias``, with the biased variance.
    """
    dims = _check.shape("layer_norm()", "normalized_shape", normalized_shape)
    if input.shape[input.ndim - len(dims) :] != dims:
        raise ValueError(
            f"layer_norm(): input shape {input.shape} does not end with normalized_shape {dims}"
        )
    axes = tuple(range(input.ndim - len(dims), input.ndim))
    centered = input - input.mean(axis=axes, keepdims=True)
    out = centered / sqrt(input.var(axis=axes, keepdims=True) + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


# --------------------------------------------------------------------------- losses


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _regression_pair(who: str, input: Tensor, target: Any) -> Tensor:
    """``target`` as a Tensor of the input's dtype and shape (no silent broadcasting)."""
    target = target if isinstance(target, Tensor) else Tensor(_to_array(target, input.dtype))
    if target.shape != input.shape:
        raise ValueError(f"{who}: target shape {target.shape} must equal input shape {input.shape}")
    return target


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Squared error ``(x - y)^2``, averaged (``"mean"``), summed or kept (``"none"``).

    Unlike PyTorch, mismatched shapes are an error rather than a broadcasting warning.
    """
    _check.reduction("mse_loss()", reduction)
    diff = input - _regression_pair("mse_loss()", input, target)
    return _reduce(diff * diff, reduction)


def l1_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Absolute error ``|x - y|``; its gradient at ``x == y`` is 0 (as in PyTorch)."""
    _check.reduction("l1_loss()", reduction)
    diff = input - _regression_pair("l1_loss()", input, target)
    return _reduce(diff.abs(), reduction)


def cross_entropy(
    input: Tensor, target: Any, reduction: str = "mean", ignore_index: int = -100
) -> Tensor:
    """Softmax cross-entropy of logits ``(N, C)`` against class indices ``(N,)``:

    ``loss_n = -log softmax(x_n)[y_n] = logsumexp(x_n) - x_n[y_n]``.

    Targets equal to ``ignore_index`` contribute 0 and are left out of the mean (which then
    divides by the number of kept targets, as in PyTorch). Differences from PyTorch: only
    ``(N, C)`` logits with integer targets; no class weights, probability targets or label
    smoothing; class indices are not range-checked (checking would force evaluation).
    """
    _check.reduction("cross_entropy()", reduction)
    if input.ndim != 2:
        raise ValueError(
            f"cross_entropy(): input must be logits of shape (N, C); got {input.shape}"
        )
    labels = _indices(target, "cross_entropy()")
    if labels.shape != input.shape[:1]:
        raise ValueError(
            f"cross_entropy(): target shape {tuple(labels.shape)} must be (N,) = {input.shape[:1]}"
        )
    kept = labels != ignore_index
    safe = mx.where(kept, labels, 0)  # any valid class; those rows are zeroed below
    nll = -log_softmax(input, axis=-1)[mx.arange(input.shape[0]), safe]
    nll = where(kept, nll, 0.0)
    if reduction == "mean":
        return nll.sum() / kept.sum().astype(input.dtype)
    return _reduce(nll, reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on logits, ``-[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))]``.

    Computed in the stable form ``log(1 + exp(x)) - x y`` with ``log(1 + exp(x))`` taken as a
    two-term logsumexp of ``(0, x)``: no overflow for large ``|x|``, and the gradient
    ``sigmoid(x) - y`` is exact everywhere (including ``x = 0``). No ``weight`` or
    ``pos_weight`` arguments (PyTorch has both).
    """
    _check.reduction("binary_cross_entropy_with_logits()", reduction)
    target = _regression_pair("binary_cross_entropy_with_logits()", input, target)
    zeros = Tensor(mx.zeros(input.shape, dtype=input.dtype))
    softplus = logsumexp(stack([zeros, input]), axis=0)
    return _reduce(softplus - input * target, reduction)

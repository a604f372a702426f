"""Stateless versions of the layers and losses, composed from differentiable Tensor ops.

Nothing here writes its own backward: every function is built from ops in
:mod:`lucid.tensor`, so gradients follow from theirs and stay lazy (no ``mx.eval``).
The one exception is ``embedding(..., sparse=True)``, whose gradient is a
:class:`lucid.SparseGrad`, a kind no Tensor op produces.
Axis arguments are called ``axis`` as everywhere in lucid; PyTorch's ``dim=`` is accepted too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from .. import bounds
from ..sparse import SparseGrad, stamp
from ..tensor import (
    Tensor,
    _axis_names,
    _gather,
    _result,
    _to_array,
    logsumexp,
    reshape,
    sqrt,
    stack,
    where,
)
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
    input = _tensor(input)
    if weight.ndim != 2 or input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear(): input has shape {input.shape} and weight {weight.shape}; expected a "
            f"2-D weight (out_features, in_features) and input's last dimension in_features"
        )
    out = input @ weight.T
    return out if bias is None else out + bias


def _indices(input: Any, who: str) -> Any:
    """``input`` as an ``mx.array`` or a NumPy array of integers (host data stays on the
    host, so that :mod:`lucid.bounds` can check it there)."""
    idx = input.data if isinstance(input, Tensor) else input
    if not isinstance(idx, mx.array):
        idx = np.asarray(idx)
        if idx.dtype.kind == "f" and idx.size == 0:  # np.asarray([]) is float64
            idx = idx.astype(np.int32)
    if isinstance(idx, mx.array) and mx.issubdtype(idx.dtype, mx.integer):
        return idx
    if isinstance(idx, np.ndarray) and idx.dtype.kind in "iu":
        return idx
    shown = _to_array(idx).dtype  # as lucid would store it (NumPy float64 becomes float32)
    raise TypeError(f"{who}: input must hold integer indices; got dtype {shown}")


def embedding(
    input: Any, weight: Tensor, padding_idx: int | None = None, sparse: bool = False
) -> Tensor:
    """Look up rows: ``out[..., :] = weight[input[...], :]``; output shape ``input.shape + (D,)``.

    ``input`` is an integer Tensor, NumPy or mx array (or nested list). Indices in
    ``[-N, N)`` are valid, negatives counting from the end (PyTorch refuses negatives).
    Anything else raises ``IndexError`` naming the value: at once for host indices (lists,
    NumPy), and for an ``mx.array`` or Tensor by ``optimizer.step()``, ``.item()`` or
    ``.numpy()`` at the latest; until then the lookup reads clamped, in-range rows (see
    :mod:`lucid.bounds`).

    The gradient w.r.t. ``weight`` scatter-adds each output row into the row it came from:
    a dense array, or with ``sparse=True`` a :class:`lucid.SparseGrad` (one entry per
    lookup, repeats not yet merged). With ``padding_idx`` set, that row still appears in
    the output but receives no gradient (sparse: its entries carry zeros).
    """
    n = weight.shape[0]
    raw = _indices(input, "embedding()")
    idx = bounds.checked_indices(raw, n, "embedding()", f"an embedding with {n} rows")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += n  # the indices are counted from the start now
    if sparse:
        return _sparse_embedding(idx, weight, padding_idx)
    rows = _gather(weight, idx)
    if padding_idx is None:
        return rows
    # Same values either way; only the branch taken from `rows` carries a gradient.
    keep = mx.expand_dims(idx != padding_idx, -1)
    return where(keep, rows, rows.detach())


def _sparse_embedding(idx: mx.array, weight: Tensor, padding_idx: int | None) -> Tensor:
    shape = tuple(weight.shape)
    flat = idx.reshape(-1)  # in [0, N): negatives were mapped, so -1 and N-1 merge as one row
    out = weight.data[flat]
    dtype, seen = weight.dtype, stamp(weight)  # as they are now, not at backward time

    def backward(g: mx.array):
        values = g.reshape(flat.shape[0], shape[1]).astype(dtype)
        if padding_idx is not None:
            values = mx.where(mx.expand_dims(flat != padding_idx, -1), values, 0)
        # the looked-up rows ride along: coupled weight decay needs them, and gathering
        # them again in the step would make MLX copy the table (see lucid.sparse)
        grad = SparseGrad._trusted(flat, values, shape)
        return (grad._with_rows(out, weight, seen),)

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


@_axis_names
def softmax(input: Tensor, axis: int = -1) -> Tensor:
    """``exp(x_i) / sum_j exp(x_j)`` along ``axis``."""
    return _softmax(input, axis)


@_axis_names
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
    input: Tensor,
    target: Any,
    reduction: str = "mean",
    ignore_index: int = -100,
    *,
    weight: Any = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Softmax cross-entropy of logits ``(N, C)`` against class indices ``(N,)``.

    With ``p = log_softmax(x)``, class weights ``w`` (all 1 when ``weight`` is None),
    ``eps = label_smoothing`` and ``k_n = 0`` where ``y_n == ignore_index`` (else 1):

    .. math::

        \ell_n = k_n \Big[ (1 - \epsilon)\, w_{y_n} (-p_{n, y_n})
                 + \frac{\epsilon}{C} \sum_c w_c (-p_{n, c}) \Big]

    ``"sum"`` adds the ``\ell_n``; ``"mean"`` divides that sum by ``\sum_n k_n w_{y_n}``
    (the number of kept targets without weights), as PyTorch does for both terms; all
    targets ignored gives NaN, as in PyTorch. ``"none"`` returns ``\ell``.

    Targets must lie in ``[0, C)`` or equal ``ignore_index``; anything else (7 for 3
    classes, -1) raises ``IndexError`` naming it, at once for host targets (lists, NumPy)
    and by ``optimizer.step()``, ``.item()`` or ``.numpy()`` at the latest for an
    ``mx.array`` or Tensor (see :mod:`lucid.bounds`). No gather is involved: the target
    class is picked with a one-hot mask, so memory is safe whatever the targets are.

    Differences from PyTorch: only ``(N, C)`` logits with integer targets (no probability
    targets, no extra dimensions); ``weight`` and ``label_smoothing`` are keyword-only,
    since ``reduction`` is lucid's third positional argument; ``weight`` receives no
    gradient (PyTorch does not implement one either).
    """
    _check.reduction("cross_entropy()", reduction)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"cross_entropy(): ignore_index must be an int; got {ignore_index!r}")
    eps = _check.probability("cross_entropy()", "label_smoothing", label_smoothing)
    if input.ndim != 2:
        raise ValueError(
            f"cross_entropy(): input must be logits of shape (N, C); got {input.shape}"
        )
    n, c = input.shape
    raw = _indices(target, "cross_entropy()")
    if tuple(raw.shape) != (n,):
        raise ValueError(
            f"cross_entropy(): target shape {tuple(raw.shape)} must be (N,) = {input.shape[:1]}"
        )
    labels = bounds.checked_indices(
        raw, c, "cross_entropy()", f"{c} classes", negative=False, ignore=ignore_index,
        noun="target",
    )  # fmt: skip
    w = None if weight is None else _class_weights(weight, c, input.dtype)
    kept = labels != ignore_index
    hit = (mx.expand_dims(labels, -1) == mx.arange(c)) & mx.expand_dims(kept, -1)
    pick = hit.astype(input.dtype) if w is None else mx.where(hit, w, 0)  # k_n w_{y_n} one-hot
    logp = log_softmax(input, axis=-1)
    loss = -(logp * pick).sum(axis=-1)
    if eps > 0.0:
        spread = mx.expand_dims(kept.astype(input.dtype), -1)
        spread = spread if w is None else spread * w
        smooth = -(logp * spread).sum(axis=-1)
        loss = (1.0 - eps) * loss + (eps / c) * smooth
    # already 0 where ignored; the `where` also stops the gradient there, so that a mean
    # over no kept target is NaN with a zero gradient (as in torch), not a NaN gradient
    loss = where(kept, loss, 0.0)
    if reduction == "mean":
        total = kept.sum() if w is None else pick.sum()
        return loss.sum() / total.astype(input.dtype)
    return _reduce(loss, reduction)


def _class_weights(weight: Any, classes: int, dtype: mx.Dtype) -> mx.array:
    w = _to_array(weight.data if isinstance(weight, Tensor) else weight)
    if not mx.issubdtype(w.dtype, mx.floating) or tuple(w.shape) != (classes,):
        raise ValueError(
            f"cross_entropy(): weight must be a floating array of shape (C,) = ({classes},); "
            f"got dtype {w.dtype}, shape {tuple(w.shape)}"
        )
    return w.astype(dtype)


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

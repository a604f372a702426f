"""Gradient clipping: rescale or clamp the ``.grad`` of parameters in place.

Both functions stay lazy: they build MLX graphs and never call ``mx.eval``, so
clipping fuses into the optimizer step that evaluates everything at once. The one
exception is ``clip_grad_norm_(..., error_if_nonfinite=True)``, which has to look
at the norm's value to decide whether to raise.

A gradient may be dense (a Tensor) or row-sparse (a :class:`lucid.SparseGrad`, from
``nn.Embedding(..., sparse=True)``). A row-sparse gradient is the sum of its entries, so
both functions work on its coalesced rows (repeated indices summed first, lazily and at
fixed shape by :func:`lucid.sparse.coalesce_fixed`), never on a table-sized array, and the
clipped gradient is again a SparseGrad.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import mlx.core as mx

from .. import compilation
from ..sparse import SparseGrad
from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]

Parameters = Tensor | Iterable[Tensor]


def _with_grads(parameters: Parameters, fn: str) -> list[Tensor]:
    """The parameters whose ``.grad`` is set; refuses gradients that are not Tensors."""
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    out = []
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{fn}: parameters[{i}] must be a Tensor; got {type(p).__name__}")
        if p.grad is None:
            continue
        if not isinstance(p.grad, (Tensor, SparseGrad)):
            raise TypeError(
                f"{fn}: parameters[{i}].grad must be a Tensor or a lucid.SparseGrad; "
                f"got {type(p.grad).__name__}"
            )
        out.append(p)
    return out


def _grad_norm(g: Tensor | SparseGrad, p: float) -> mx.array:
    """``||g||_p`` of the gradient as a whole: a SparseGrad's coalesced rows (its padding
    entries are zero and change no norm), not the sum of its entries' norms."""
    return _vector_norm(g._merged().values if isinstance(g, SparseGrad) else g.data, p)


def _vector_norm(x: mx.array, p: float) -> mx.array:
    """``||x||_p`` over all elements, in float32 (``max |x|`` for ``p = inf``)."""
    x = mx.abs(x.astype(mx.float32)).reshape(-1)
    if p == math.inf:
        return mx.max(x) if x.size else mx.array(0.0)
    if p == 2.0:
        return mx.sqrt(mx.sum(x * x))
    if p == 1.0:
        return mx.sum(x)
    return mx.power(mx.sum(mx.power(x, p)), 1.0 / p)


def clip_grad_norm_(
    parameters: Parameters,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> Tensor:
    r"""Rescale all gradients together so that their joint norm is at most ``max_norm``.

    With ``g_i`` the gradient of parameter ``i`` and ``p = norm_type``:

    .. math::

        N = \big\| (\|g_1\|_p, \dots, \|g_k\|_p) \big\|_p, \qquad
        c = \min\!\Big(1, \frac{\text{max\_norm}}{N + 10^{-6}}\Big), \qquad
        g_i \leftarrow c \, g_i

    For ``p = inf``, ``N = max_i max |g_i|``. Each ``p.grad`` is replaced by a new
    Tensor holding ``c * g_i`` (in ``g_i``'s dtype); parameters without a gradient are
    skipped. A :class:`lucid.SparseGrad` ``g_i`` counts with the norm of its coalesced
    rows (an index looked up twice contributes ``||a + b||``, not ``||a|| + ||b||``) and
    becomes a SparseGrad with its values scaled by ``c``. Returns ``N`` (before
    clipping) as a float32 Tensor, 0 when no gradient is set.

    Lazy: nothing is evaluated unless ``error_if_nonfinite=True``, which evaluates
    ``N`` and raises ``RuntimeError`` (leaving every gradient untouched) when it is
    NaN or infinite; inside :func:`lucid.compile` that is refused with a ``RuntimeError``
    (no value exists while a function is traced).

    Same formula as ``torch.nn.utils.clip_grad_norm_``; lucid also refuses a negative
    ``max_norm`` and a ``norm_type`` that is not positive, and accepts row-sparse
    gradients, which torch 2.13 refuses (``linalg_vector_norm`` has no sparse kernel).
    """
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    if not max_norm >= 0.0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0; got {max_norm}")
    if not norm_type > 0.0:
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 or inf; got {norm_type}")
    if error_if_nonfinite and compilation.active() is not None:
        raise RuntimeError(
            "clip_grad_norm_: error_if_nonfinite=True reads the norm on the host, which a "
            "function compiled by lucid.compile cannot do (no value exists while it is "
            "traced). Pass error_if_nonfinite=False inside the compiled function, and check "
            "the returned norm after the call (return it from fn)"
        )
    params = _with_grads(parameters, "clip_grad_norm_")
    if not params:
        return Tensor(mx.array(0.0))

    norms = mx.stack([_grad_norm(p.grad, norm_type) for p in params])
    total = _vector_norm(norms, norm_type)
    if error_if_nonfinite and not mx.isfinite(total).item():  # the one evaluation, on purpose
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is "
            f"{total.item()}, so they cannot be clipped. Pass error_if_nonfinite=False "
            "to clip anyway (with an infinite norm, finite gradient entries then become 0 and "
            "infinite ones NaN; with a NaN norm every entry becomes NaN)."
        )
    coef = mx.minimum(max_norm / (total + 1e-6), 1.0)
    for p in params:
        g = p.grad
        if isinstance(g, SparseGrad):  # scaling is linear: the entries need no merging
            p.grad = g._with_values(g.values * coef.astype(g.dtype))
        else:
            p.grad = Tensor(g.data * coef.astype(g.dtype))
    return Tensor(total)


def clip_grad_value_(parameters: Parameters, clip_value: float) -> None:
    r"""Clamp every gradient elementwise into ``[-clip_value, clip_value]``.

    .. math:: g \leftarrow \min(\max(g, -\text{clip\_value}), \text{clip\_value})

    Each ``p.grad`` is replaced by a new Tensor; parameters without a gradient are
    skipped. Lazy: nothing is evaluated. Same as ``torch.nn.utils.clip_grad_value_``,
    except that lucid refuses a negative ``clip_value``.

    A :class:`lucid.SparseGrad` is clamped after its repeated indices are summed, so the
    result equals clamping the dense gradient (clamping each entry alone would let a row
    looked up k times reach ``k * clip_value``); it stays a SparseGrad, with one entry per
    distinct row plus zero padding. torch 2.13 refuses sparse gradients here (no sparse
    ``clamp_``); this is what clamping their dense equivalent gives.
    """
    clip_value = float(clip_value)
    if not clip_value >= 0.0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0; got {clip_value}")
    for p in _with_grads(parameters, "clip_grad_value_"):
        g = p.grad
        if isinstance(g, SparseGrad):
            merged = g._merged()
            p.grad = merged._with_values(mx.clip(merged.values, -clip_value, clip_value))
        else:
            p.grad = Tensor(mx.clip(g.data, -clip_value, clip_value))

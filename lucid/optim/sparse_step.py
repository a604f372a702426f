"""The row-sparse step: parameters whose gradient is a :class:`lucid.SparseGrad`.

Like the dense step, one compiled call per group and the step's single ``mx.eval`` for
the results. Inside, each gradient is coalesced at fixed shape
(:func:`lucid.sparse.coalesce_fixed`: distinct rows first, padding rows switched off by a
``valid`` mask, so nothing waits on the index values) and handed to the rule's
``rule_rows``, which reads and writes only those rows of the table and of its state.

A scatter writes in place only when nothing else in the same evaluation still holds the
table; otherwise MLX copies all of it (1M x 64: 0.7 ms in place, 170-490 ms copied). The
forward lookup ``weight.data[idx]`` is such a holder while it is pending, whatever the
loop does with the loss. So the step evaluates (:func:`looked_up`) the looked-up rows (and
the indices) first, a second, small evaluation that only sparse steps make.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import mlx.core as mx

from ..nn.parameter import Parameter
from ..sparse import coalesce_fixed, pad_entries

__all__ = ["sparse_inputs", "sparse_group_step", "looked_up"]


def looked_up(params: Iterable[Parameter]) -> list[mx.array]:
    """The rows each sparse gradient recorded at lookup, and its indices: evaluated before
    the step, so that the pending forward graph no longer reads the table (MLX detaches an
    evaluated array from its inputs) and the step's scatters may write in place."""
    out = []
    for p in params:
        out.append(p.grad.indices)
        out.append(p.grad.rows_of(p))
    return out


def sparse_inputs(params: list[Parameter]) -> tuple[list[mx.array], ...]:
    """``(indices, values, rows)`` per parameter, padded to a power-of-two count of entries
    (so a varying number of lookups traces once per power of two)."""
    entries = [pad_entries(p.grad.indices, p.grad.values, p.grad.rows_of(p)) for p in params]
    return tuple([e[k] for e in entries] for k in range(3))


def sparse_group_step(
    params: list[mx.array],
    indices: list[mx.array],
    values: list[mx.array],
    rows: list[mx.array],
    states: list[dict[str, mx.array]],
    hypers: list[dict[str, mx.array]],
    *,
    rule_rows: Callable,
    **static: Any,
) -> list[tuple[mx.array, dict[str, mx.array]]]:
    """The pure row-sparse step of a group; runs in Python only while tracing."""
    out = []
    for p, i, v, r, s, h in zip(params, indices, values, rows, states, hypers, strict=True):
        index, grad, valid, param_rows = coalesce_fixed(i, v, r)
        out.append(rule_rows(p, index, grad, valid, param_rows, s, h, **static))
    return out

"""SparseGrad: the row-sparse gradient of a lookup table.

``nn.Embedding(..., sparse=True)`` gives its weight a :class:`SparseGrad` instead of a
dense table-sized array: the rows that were looked up and one gradient row per lookup.
An optimizer that supports it (:class:`lucid.optim.Adagrad`) then reads and writes only
those rows.

Why the entries stay uncoalesced until the step: merging duplicate indices needs the
number of distinct rows, a data-dependent shape, and MLX has no lazy ``unique``. So the
backward only records ``(indices, values)``, and the optimizer merges them with
:func:`coalesce_fixed`, which keeps one row per entry (distinct rows first, then
padding that a ``valid`` mask switches off) and so never waits on the values.
"""

from __future__ import annotations

import weakref
from typing import Any

import mlx.core as mx
import numpy as np

from . import bounds

__all__ = ["SparseGrad", "coalesce_fixed", "pad_entries", "stamp"]


class SparseGrad:
    r"""A gradient that is zero outside some rows of a 2-D parameter of ``shape`` (N, D).

    ``indices`` (int, shape ``(nnz,)``) names a row for each row of ``values``
    (shape ``(nnz, D)``). An index may repeat; the gradient is the sum over entries:

    .. math:: \nabla[r, :] = \sum_{i:\ \text{indices}_i = r} \text{values}_i

    Indices must lie in ``[0, N)``. Host indices (a list, a NumPy array) outside it raise
    ``IndexError`` here; ``mx.array`` indices are clamped into range and checked lazily,
    raising by ``optimizer.step()`` at the latest (see :mod:`lucid.bounds`). Negative
    indices are refused, as in PyTorch's sparse tensors.

    Adding gradients, as the autograd engine does when a parameter is used twice:
    sparse + sparse concatenates the entries (nothing is summed yet); sparse + dense
    (an ``mx.array``) gives the dense sum, a table-sized array.
    """

    __slots__ = ("indices", "values", "shape", "_rows", "_source", "_seen")

    def __init__(self, indices: Any, values: Any, shape: tuple[int, ...]) -> None:
        host = not isinstance(indices, mx.array)
        raw = np.asarray(indices) if host else indices
        values = mx.array(values)
        shape = tuple(int(n) for n in shape)
        if len(shape) != 2:
            raise ValueError(f"SparseGrad: shape must be 2-D (rows, columns); got {shape}")
        integral = raw.dtype.kind in "iu" if host else mx.issubdtype(raw.dtype, mx.integer)
        if not (integral or host and raw.size == 0) or raw.ndim != 1:
            raise ValueError(
                f"SparseGrad: indices must be a 1-D integer array; got dtype {raw.dtype}, "
                f"shape {tuple(raw.shape)}"
            )
        if tuple(values.shape) != (raw.shape[0], shape[1]):
            raise ValueError(
                f"SparseGrad: values must have shape (nnz, D) = ({raw.shape[0]}, {shape[1]}); "
                f"got {tuple(values.shape)}"
            )
        what = f"a gradient of shape {shape}"
        index = bounds.checked_indices(raw, shape[0], "SparseGrad", what, negative=False)
        self._set(index, values, shape)

    @classmethod
    def _trusted(cls, indices: mx.array, values: mx.array, shape: tuple[int, int]) -> SparseGrad:
        """A SparseGrad from arrays lucid built itself, with indices known to lie in range
        (an embedding's, already checked): no validation, nothing added to the graph."""
        out = cls.__new__(cls)
        out._set(indices, values, shape)
        return out

    def _set(self, indices: mx.array, values: mx.array, shape: tuple[int, int]) -> None:
        self.indices: mx.array = indices
        self.values: mx.array = values
        self.shape: tuple[int, int] = shape
        # The parameter's rows at `indices`, as the forward lookup read them, with a weak
        # reference to the Tensor they were read from and what its .data was then. The
        # optimizer uses them only while that is still the Tensor's .data (coupled weight
        # decay needs θ's rows, and a second gather of θ in the step's graph would make
        # MLX copy the whole table).
        self._rows: mx.array | None = None
        self._source: weakref.ref | None = None
        self._seen: tuple[int, int | None] | None = None

    @property
    def dtype(self) -> mx.Dtype:
        return self.values.dtype

    @property
    def nnz(self) -> int:
        """Number of entries (repeats counted)."""
        return self.indices.shape[0]

    def _with_rows(self, rows: mx.array, source: Any, seen: tuple) -> SparseGrad:
        """Record ``rows``, read from Tensor ``source`` when its :func:`stamp` was ``seen``."""
        self._rows, self._source, self._seen = rows, weakref.ref(source), seen
        return self

    def _with_values(self, values: mx.array) -> SparseGrad:
        """The same entries with new ``values`` (a scaled gradient), keeping the rows
        recorded at lookup, so that the optimizer still needs no second gather."""
        out = SparseGrad._trusted(self.indices, values, self.shape)
        out._rows, out._source, out._seen = self._rows, self._source, self._seen
        return out

    def _merged(self) -> SparseGrad:
        """An equal gradient with repeated indices summed, lazily and at fixed shape
        (:func:`coalesce_fixed`: ``nnz`` entries, each distinct row once, then padding
        entries with zero values); keeps the rows recorded at lookup, reordered to match."""
        index, summed, _, rows = coalesce_fixed(self.indices, self.values, self._rows)
        out = SparseGrad._trusted(index, summed, self.shape)
        if rows is not None:
            out._rows, out._source, out._seen = rows, self._source, self._seen
        return out

    def rows_of(self, param: Any) -> mx.array:
        """``param.data[indices]``: the rows recorded at lookup when ``param`` (a Tensor) is
        the one they were read from and its ``.data`` was not assigned since, else a
        fresh gather."""
        fresh = self._source is not None and self._source() is param
        if self._rows is not None and fresh and stamp(param) == self._seen:
            return self._rows
        return param.data[self.indices]

    def to_dense(self) -> mx.array:
        """The dense gradient, an ``(N, D)`` array (repeated indices are summed)."""
        return mx.zeros(self.shape, dtype=self.dtype).at[self.indices].add(self.values)

    def coalesce(self) -> SparseGrad:
        """An equal gradient with sorted, distinct indices.

        Reads the indices to learn how many rows are distinct, so it evaluates them (a
        synchronisation); the optimizer never calls it and uses :func:`coalesce_fixed`.
        """
        idx = np.array(self.indices)
        unique, inverse = np.unique(idx, return_inverse=True)
        summed = mx.zeros((len(unique), self.shape[1]), dtype=self.dtype)
        summed = summed.at[mx.array(inverse.reshape(-1))].add(self.values)
        return SparseGrad._trusted(mx.array(unique.astype(idx.dtype)), summed, self.shape)

    def __add__(self, other: Any) -> Any:
        if isinstance(other, SparseGrad):
            if other.shape != self.shape:
                raise ValueError(f"SparseGrad: cannot add shapes {self.shape} and {other.shape}")
            out = SparseGrad._trusted(
                mx.concatenate([self.indices, other.indices.astype(self.indices.dtype)]),
                mx.concatenate([self.values, other.values.astype(self.dtype)]),
                self.shape,
            )
            same = self._source is not None and other._source is not None
            source = self._source() if same else None
            if source is not None and source is other._source() and self._seen == other._seen:
                out._with_rows(mx.concatenate([self._rows, other._rows]), source, self._seen)
            return out
        if isinstance(other, mx.array):  # a dense contribution: densify (documented)
            return self.to_dense().astype(other.dtype) + other
        return NotImplemented

    __radd__ = __add__

    def __repr__(self) -> str:
        dtype = str(self.dtype).removeprefix("mlx.core.")
        return f"SparseGrad(shape={self.shape}, nnz={self.nnz}, dtype={dtype})"


def pad_entries(
    indices: mx.array, values: mx.array, rows: mx.array
) -> tuple[mx.array, mx.array, mx.array]:
    """Pad the entries to a power-of-two count with copies of the first index carrying
    zero values, which change no sum. The compiled step keys on shapes, so without this
    every new number of lookups would trace it again (measured: 39 traces in 40 steps
    with a varying batch); with it, at most one trace per power of two."""
    n = indices.shape[0]
    extra = (1 << max(n - 1, 0).bit_length()) - n if n else 0
    if not extra:
        return indices, values, rows
    return (
        mx.concatenate([indices, mx.broadcast_to(indices[:1], (extra,))]),
        mx.concatenate([values, mx.zeros((extra, values.shape[1]), dtype=values.dtype)]),
        mx.concatenate([rows, mx.broadcast_to(rows[:1], (extra, rows.shape[1]))]),
    )


def stamp(t: Any) -> tuple[int, int | None]:
    """What identifies a Tensor's values: its array, and (a Parameter's) assignment count."""
    return id(t.data), getattr(t, "_version", None)


def coalesce_fixed(
    indices: mx.array, values: mx.array, rows: mx.array | None = None
) -> tuple[mx.array, mx.array, mx.array, mx.array | None]:
    """Merge repeated indices without reading them: every output keeps ``nnz`` rows.

    Returns ``(index, summed, valid, rows)``: the first ``k`` rows (``k`` distinct
    indices) hold each distinct index once, in ascending order, with the sum of its
    values and (if given) its row of ``rows``; the remaining ``nnz - k`` rows have
    ``valid`` False, index ``index[0]`` (so gathers and scatters stay in range) and zero
    values. Lazy: sort, mark where a new index starts, number the runs with a cumulative
    sum, and scatter-add each entry into its run's row.
    """
    n = indices.shape[0]
    if n == 0:  # nothing looked up: nothing to merge (and no run to count)
        return indices, values, mx.zeros((0,), dtype=mx.bool_), rows
    order = mx.argsort(indices)
    sorted_idx = indices[order]
    starts = mx.concatenate([mx.array([True]), sorted_idx[1:] != sorted_idx[:-1]])
    run = mx.cumsum(starts.astype(mx.int32)) - 1  # the run (output row) of each entry
    positions = mx.arange(n, dtype=mx.int32)
    # where each run begins; padding rows get 0, i.e. the first distinct index
    first = mx.zeros((n,), dtype=mx.int32).at[run].maximum(mx.where(starts, positions, 0))
    summed = mx.zeros(values.shape, dtype=values.dtype).at[run].add(values[order])
    valid = positions <= run[-1]
    out_rows = None if rows is None else rows[order[first]]
    return sorted_idx[first], summed, valid, out_rows

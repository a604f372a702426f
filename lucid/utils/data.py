"""Datasets and mini-batch loading.

:class:`TensorDataset` holds a few arrays that share their first dimension;
:class:`DataLoader` cuts a dataset into mini-batches. For a ``TensorDataset`` a
batch is one gather per array (``array[indices]``), not a Python loop that
stacks single samples; any other map-style dataset is fetched item by item and
stacked. :class:`DistributedSampler` gives each rank of :mod:`lucid.distributed` its
own part of a dataset, for ``DataLoader(..., sampler=...)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import mlx.core as mx
import numpy as np

from .. import bounds
from ..nn._validation import flag, positive_int
from ..tensor import Tensor, _to_array

__all__ = ["Dataset", "TensorDataset", "DataLoader", "DistributedSampler"]

Batch = tuple[Tensor, ...]


class Dataset(Protocol):
    """Anything with a length whose items are samples: ``dataset[i]`` for ``0 <= i < len``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class TensorDataset:
    """Samples ``(t[i] for t in tensors)`` from arrays that share their first dimension.

    Each argument may be a NumPy array, an ``mx.array`` or a :class:`~lucid.Tensor`;
    it is stored as an ``mx.array`` (NumPy float64 and int64 are narrowed to float32
    and int32, as :func:`lucid.tensor` does). ``dataset[index]`` accepts an int, a
    slice or an array of indices (range-checked, negatives from the end) and returns a
    tuple of Tensors.

    The range of each integer column is taken once, here, so that a batch's integer
    Tensors index embeddings and cross-entropy classes with no lazy check (see
    :mod:`lucid.bounds`). For NumPy input that is a host ``min``/``max``; for an
    ``mx.array`` or Tensor it evaluates the column (a synchronisation, once).
    """

    def __init__(self, *tensors: Any) -> None:
        if not tensors:
            raise ValueError("TensorDataset: expected at least one tensor; got none")
        arrays = [_to_array(t) for t in tensors]
        # each integer column's range, taken once (on the host for NumPy input; an
        # evaluation for an mx.array or Tensor), so that a batch used as indices
        # (embedding ids, class targets) needs no lazy check in lucid.bounds
        self._ranges = [_range(t, a) for t, a in zip(tensors, arrays, strict=True)]
        for i, a in enumerate(arrays):
            if a.ndim == 0:
                raise ValueError(
                    f"TensorDataset: tensors[{i}] is 0-d; every tensor needs a first "
                    "(sample) dimension"
                )
        sizes = [a.shape[0] for a in arrays]
        if len(set(sizes)) != 1:
            raise ValueError(
                f"TensorDataset: all tensors must have the same size in dimension 0; "
                f"got sizes {sizes}"
            )
        self.tensors: tuple[mx.array, ...] = tuple(arrays)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, index: Any) -> Batch:
        n = len(self)
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            if not -n <= index < n:
                raise IndexError(f"TensorDataset: index {index} is out of range for size {n}")
        elif isinstance(index, (Tensor, mx.array, list, np.ndarray)):
            # an array of indices: range-checked (see lucid.bounds), negatives from the end
            index = index.data if isinstance(index, Tensor) else index
            index = bounds.checked_indices(index, n, "TensorDataset", f"a dataset of size {n}")
        batch = tuple(a[index] for a in self.tensors)
        for rows, known in zip(batch, self._ranges, strict=True):
            if known is not None:
                bounds.note_range(rows, *known)
        return tuple(Tensor(rows) for rows in batch)


def _range(source: Any, array: mx.array) -> tuple[int, int] | None:
    """``(min, max)`` of an integer column, None for other dtypes and empty columns."""
    if not mx.issubdtype(array.dtype, mx.integer) or array.size == 0:
        return None
    if isinstance(source, np.ndarray):
        return int(source.min()), int(source.max())
    return int(mx.min(array).item()), int(mx.max(array).item())


class DataLoader:
    """Iterate over ``dataset`` in mini-batches, each a tuple of Tensors.

    With ``n = len(dataset)`` and batch size ``b`` there are ``ceil(n / b)`` batches,
    or ``floor(n / b)`` with ``drop_last=True`` (which drops a short final batch).

    ``shuffle=True`` draws a fresh permutation of ``range(n)`` at the start of every
    epoch from a ``numpy.random.Generator`` seeded once with ``seed``: the same seed
    gives the same sequence of epochs; ``seed=None`` seeds from the OS.

    ``sampler`` (an iterable of indices with a length, such as
    :class:`DistributedSampler`) chooses the indices instead, in its order; it excludes
    ``shuffle``. Then there are ``ceil(len(sampler) / b)`` batches (``floor`` with
    ``drop_last``).

    A :class:`TensorDataset` is batched with one gather per tensor. Any other dataset
    (an object with ``__len__`` and ``__getitem__``) is read one sample at a time;
    a sample is a tuple of array-likes (or a single one) and the fields are stacked.
    Numbers may be Python or NumPy scalars.

    Differs from PyTorch: no worker processes, batch samplers or custom ``collate_fn``; a
    sample that is a list is one field (an array), where torch collates it field by field.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        sampler: Iterable[int] | None = None,
    ) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                f"DataLoader: dataset must have __len__ and __getitem__ (e.g. a "
                f"TensorDataset); got {type(dataset).__name__}"
            )
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
        ):
            raise ValueError(f"DataLoader: seed must be a non-negative int or None; got {seed!r}")
        self.dataset = dataset
        self.batch_size = positive_int("DataLoader", "batch_size", batch_size)
        self.shuffle = flag("DataLoader", "shuffle", shuffle)
        self.drop_last = flag("DataLoader", "drop_last", drop_last)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        if sampler is not None:
            if not (hasattr(sampler, "__iter__") and hasattr(sampler, "__len__")):
                raise TypeError(
                    f"DataLoader: sampler must be an iterable of indices with a length; got "
                    f"{type(sampler).__name__}"
                )
            if self.shuffle:
                raise ValueError("DataLoader: sampler and shuffle=True exclude each other")
        self.sampler = sampler

    def __len__(self) -> int:
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        b = self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def __iter__(self) -> Iterator[Batch]:
        if self.sampler is not None:
            order = np.fromiter(self.sampler, dtype=np.int64)
        else:
            n = len(self.dataset)
            order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        for k in range(len(self)):
            indices = order[k * self.batch_size : (k + 1) * self.batch_size]
            yield self._fetch(indices)

    def _fetch(self, indices: np.ndarray) -> Batch:
        if isinstance(self.dataset, TensorDataset):
            return self.dataset[indices]  # NumPy: checked on the host, no pending flag
        samples = [self.dataset[int(i)] for i in indices]
        fields = [s if isinstance(s, tuple) else (s,) for s in samples]
        columns = zip(*fields, strict=True)
        return tuple(Tensor(mx.stack([_to_array(x) for x in column])) for column in columns)

    def __repr__(self) -> str:
        sampler = "" if self.sampler is None else f", sampler={self.sampler!r}"
        return (
            f"DataLoader(len(dataset)={len(self.dataset)}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}{sampler})"
        )


class DistributedSampler:
    """The indices of one rank's part of ``dataset``, with torch's semantics.

    With ``n = len(dataset)`` and ``R = num_replicas``, each rank gets
    ``num_samples = ceil(n / R)`` indices, or ``ceil((n - R) / R)`` with ``drop_last``
    when ``R`` does not divide ``n``. The order is a permutation of ``range(n)`` drawn
    from ``numpy.random.default_rng(seed + epoch)`` (``shuffle=True``) or ``range(n)``;
    it is padded by repeating its start up to ``R * num_samples`` (or cut to that, with
    ``drop_last``), and rank ``r`` takes every ``R``-th index from position ``r``. So
    the ranks' parts are disjoint (but for the padding), cover the dataset, and every
    rank computes the same order from the same ``seed`` and epoch: call
    :meth:`set_epoch` before each epoch for a new one.

    ``num_replicas`` and ``rank`` default to :func:`lucid.distributed.get_world_size`
    and :func:`~lucid.distributed.get_rank`. Differs from torch only in the random
    generator (NumPy's, so the shuffled orders are not torch's).
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        from .. import distributed as dist

        who = "DistributedSampler"
        if not hasattr(dataset, "__len__"):
            raise TypeError(f"{who}: dataset must have a length; got {type(dataset).__name__}")
        if num_replicas is None:
            num_replicas = dist.get_world_size()
        num_replicas = positive_int(who, "num_replicas", num_replicas)
        if rank is None:
            rank = dist.get_rank()
        if (
            isinstance(rank, bool)
            or not isinstance(rank, (int, np.integer))
            or not (0 <= rank < num_replicas)
        ):
            raise ValueError(f"{who}: rank must be an int in [0, {num_replicas}); got {rank!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"{who}: seed must be a non-negative int; got {seed!r}")
        self.dataset = dataset
        self.num_replicas, self.rank = num_replicas, int(rank)
        self.shuffle = flag(who, "shuffle", shuffle)
        self.drop_last = flag(who, "drop_last", drop_last)
        self.seed, self.epoch = int(seed), 0
        n = len(dataset)
        if self.drop_last and n % num_replicas:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (the same on every rank) from the next iteration."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(
                f"DistributedSampler.set_epoch: epoch must be an int >= 0; got {epoch!r}"
            )
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            order = np.arange(n)
        if self.drop_last:
            order = order[: self.total_size]
        elif self.total_size > n:
            repeats = math.ceil(self.total_size / max(n, 1))
            order = np.tile(order, repeats)[: self.total_size]
        return iter(order[self.rank : self.total_size : self.num_replicas].tolist())

    def __repr__(self) -> str:
        return (
            f"DistributedSampler(len(dataset)={len(self.dataset)}, num_replicas="
            f"{self.num_replicas}, rank={self.rank}, shuffle={self.shuffle}, seed={self.seed}, "
            f"drop_last={self.drop_last})"
        )

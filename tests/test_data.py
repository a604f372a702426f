"""TensorDataset and DataLoader: batching, drop_last, shuffling with seeds, validation."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

import lucid
from lucid.utils.data import DataLoader, TensorDataset


def _dataset(n: int = 10) -> TensorDataset:
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n, dtype=np.int32)
    return TensorDataset(x, y)


def _epoch(loader: DataLoader) -> list[np.ndarray]:
    """The label batches of one epoch, as NumPy arrays."""
    return [np.array(y.data) for _, y in loader]


class _ListDataset:
    """A map-style dataset that is not a TensorDataset: one (x, y) pair per item."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return np.full(2, i, dtype=np.float32), i


# ----------------------------------------------------------------------------- TensorDataset


@pytest.mark.parametrize(
    "make",
    [np.ones, lambda s: mx.ones(s), lambda s: lucid.ones(*s)],
    ids=["numpy", "mlx", "lucid"],
)
def test_tensor_dataset_accepts_array_kinds(make):
    ds = TensorDataset(make((4, 2)), make((4,)))
    assert len(ds) == 4
    x, y = ds[1]
    assert isinstance(x, lucid.Tensor) and x.shape == (2,)
    assert isinstance(y, lucid.Tensor) and y.shape == ()


def test_tensor_dataset_indexing_returns_rows():
    ds = _dataset(5)
    x, y = ds[3]
    np.testing.assert_array_equal(x.numpy(), [9, 10, 11])
    assert y.item() == 3
    xs, ys = ds[np.array([4, 0])]
    np.testing.assert_array_equal(ys.numpy(), [4, 0])
    assert xs.shape == (2, 3)
    assert ds[-1][1].item() == 4


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((), ValueError, "at least one tensor"),
        ((np.ones((3, 2)), np.ones(4)), ValueError, r"same size in dim.* 0; got sizes \[3, 4\]"),
        ((np.ones(3), np.float32(1.0)), ValueError, r"tensors\[1\] is 0-d"),
        (("abc",), TypeError, "got str"),
    ],
)
def test_tensor_dataset_rejects(args, error, match):
    with pytest.raises(error, match=match):
        TensorDataset(*args)


def test_tensor_dataset_index_out_of_range():
    with pytest.raises(IndexError, match="index 5 is out of range for size 5"):
        _dataset(5)[5]


# ----------------------------------------------------------------------------- batching


@pytest.mark.parametrize(
    ("n", "batch_size", "drop_last", "sizes"),
    [
        (10, 3, False, [3, 3, 3, 1]),
        (10, 3, True, [3, 3, 3]),
        (9, 3, False, [3, 3, 3]),
        (9, 3, True, [3, 3, 3]),
        (2, 5, False, [2]),
        (2, 5, True, []),
        (4, 1, False, [1, 1, 1, 1]),
    ],
)
def test_batch_sizes_and_len(n, batch_size, drop_last, sizes):
    loader = DataLoader(_dataset(n), batch_size=batch_size, drop_last=drop_last)
    batches = list(loader)
    assert [len(y) for _, y in batches] == sizes
    expected = n // batch_size if drop_last else math.ceil(n / batch_size)
    assert len(loader) == len(sizes) == expected


def test_unshuffled_batches_are_in_order_and_typed():
    batches = list(DataLoader(_dataset(5), batch_size=2))
    assert all(isinstance(b, tuple) and len(b) == 2 for b in batches)
    assert all(isinstance(t, lucid.Tensor) for b in batches for t in b)
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in batches]), np.arange(5))
    np.testing.assert_array_equal(batches[0][0].numpy(), [[0, 1, 2], [3, 4, 5]])
    assert batches[0][0].dtype == mx.float32 and batches[0][1].dtype == mx.int32


def test_tensor_dataset_batches_with_one_gather_per_tensor(monkeypatch):
    ds = _dataset(8)
    calls: list[object] = []
    original = TensorDataset.__getitem__

    def spy(self, index):
        calls.append(index)
        return original(self, index)

    monkeypatch.setattr(TensorDataset, "__getitem__", spy)
    list(DataLoader(ds, batch_size=4, shuffle=True, seed=0))
    assert len(calls) == 2  # one call per batch, each an index array, no per-sample loop
    # NumPy indices, so that lucid.bounds checks them on the host (no lazy flag)
    assert all(isinstance(c, np.ndarray) and c.shape == (4,) for c in calls)


def test_generic_dataset_is_stacked():
    batches = list(DataLoader(_ListDataset(5), batch_size=2))
    assert [b[0].shape for b in batches] == [(2, 2), (2, 2), (1, 2)]
    np.testing.assert_array_equal(batches[1][1].numpy(), [2, 3])
    np.testing.assert_array_equal(batches[1][0].numpy(), [[2, 2], [3, 3]])


class _NumpyScalarDataset:
    """Samples of NumPy scalars: a tuple is two fields, a list one field of two numbers."""

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> tuple | list:
        return self.kind([np.float32(i) / 2, np.int64(i)])


def test_dataset_of_numpy_scalars_is_stacked():
    (x, y), *_ = DataLoader(_NumpyScalarDataset(tuple), batch_size=3)
    assert (x.dtype, y.dtype) == (mx.float32, mx.int32)
    assert x.tolist() == [0.0, 0.5, 1.0] and y.tolist() == [0, 1, 2]
    ((xy,),) = DataLoader(_NumpyScalarDataset(list), batch_size=3)
    assert xy.dtype == mx.float32 and xy.tolist() == [[0.0, 0.0], [0.5, 1.0], [1.0, 2.0]]


# ----------------------------------------------------------------------------- shuffling


def test_shuffle_is_a_permutation_each_epoch():
    loader = DataLoader(_dataset(10), batch_size=3, shuffle=True, seed=1)
    for _ in range(3):
        labels = np.concatenate(_epoch(loader))
        assert sorted(labels.tolist()) == list(range(10))


def test_shuffle_changes_between_epochs():
    loader = DataLoader(_dataset(50), batch_size=50, shuffle=True, seed=0)
    first, second = _epoch(loader)[0], _epoch(loader)[0]
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, np.arange(50))


def test_same_seed_same_sequence_of_epochs():
    a = DataLoader(_dataset(20), batch_size=4, shuffle=True, seed=7)
    b = DataLoader(_dataset(20), batch_size=4, shuffle=True, seed=7)
    for _ in range(3):
        for ya, yb in zip(_epoch(a), _epoch(b), strict=True):
            np.testing.assert_array_equal(ya, yb)


def test_different_seeds_differ():
    a = np.concatenate(_epoch(DataLoader(_dataset(50), batch_size=50, shuffle=True, seed=0)))
    b = np.concatenate(_epoch(DataLoader(_dataset(50), batch_size=50, shuffle=True, seed=1)))
    assert not np.array_equal(a, b)


def test_seed_matches_numpy_generator():
    """The documented contract: epoch k uses the k-th permutation of default_rng(seed)."""
    rng = np.random.default_rng(3)
    loader = DataLoader(_dataset(12), batch_size=12, shuffle=True, seed=3)
    for _ in range(2):
        np.testing.assert_array_equal(_epoch(loader)[0], rng.permutation(12))


def test_shuffle_with_drop_last_keeps_full_batches_only():
    loader = DataLoader(_dataset(10), batch_size=4, shuffle=True, drop_last=True, seed=0)
    labels = _epoch(loader)
    assert [len(y) for y in labels] == [4, 4]
    assert len(set(np.concatenate(labels).tolist())) == 8


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int; got 0"),
        ({"batch_size": -2}, ValueError, "batch_size must be a positive int; got -2"),
        ({"batch_size": 2.0}, ValueError, "batch_size must be a positive int; got 2.0"),
        ({"batch_size": True}, ValueError, "batch_size must be a positive int; got True"),
        ({"batch_size": np.int64(0)}, ValueError, "batch_size must be a positive int"),
        ({"shuffle": 1}, TypeError, "shuffle must be a bool; got 1"),
        ({"drop_last": "yes"}, TypeError, "drop_last must be a bool; got 'yes'"),
        ({"seed": -1}, ValueError, "seed must be a non-negative int or None; got -1"),
        ({"seed": 1.5}, ValueError, "seed must be a non-negative int or None; got 1.5"),
    ],
)
def test_loader_rejects(kwargs, error, match):
    with pytest.raises(error, match=match):
        DataLoader(_dataset(4), **kwargs)


@pytest.mark.parametrize("batch_size", [np.int64(2), np.int32(2), 2])
def test_loader_accepts_any_integral_batch_size(batch_size):
    loader = DataLoader(_dataset(5), batch_size=batch_size)
    assert type(loader.batch_size) is int and len(loader) == 3
    assert [x.shape[0] for x, _ in loader] == [2, 2, 1]


def test_loader_rejects_non_dataset():
    with pytest.raises(TypeError, match="dataset must have __len__ and __getitem__.*got int"):
        DataLoader(3)

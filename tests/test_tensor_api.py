"""The Tensor's public surface: constructors, dtype rules, creation functions, conversions,
repr and error messages."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch

import lucid
from lucid import Tensor

# --------------------------------------------------------------------------- constructors

CONSTRUCTORS = [
    ("py-float", 1.5, (), mx.float32, 1.5),
    ("py-int", 3, (), mx.int32, 3),
    ("py-bool", True, (), mx.bool_, True),
    ("py-big-int", 2**40, (), mx.int64, 2**40),
    ("float-list", [1.0, 2.0], (2,), mx.float32, [1.0, 2.0]),
    ("int-list", [[1, 2], [3, 4]], (2, 2), mx.int32, [[1, 2], [3, 4]]),
    ("mixed-list", [1, 2.5], (2,), mx.float32, [1.0, 2.5]),
    ("tuple", (1.0, 2.0, 3.0), (3,), mx.float32, [1.0, 2.0, 3.0]),
    ("np-float64", np.array([0.5, 1.5]), (2,), mx.float32, [0.5, 1.5]),
    ("np-float32", np.ones((2, 3), np.float32), (2, 3), mx.float32, [[1.0] * 3] * 2),
    ("np-float16", np.array([1.0], np.float16), (1,), mx.float16, [1.0]),
    ("np-int64", np.array([1, 2]), (2,), mx.int32, [1, 2]),
    ("np-int64-big", np.array([2**40]), (1,), mx.int64, [2**40]),
    ("np-bool", np.array([True, False]), (2,), mx.bool_, [True, False]),
    ("np-reversed-view", np.arange(3.0)[::-1], (3,), mx.float32, [2.0, 1.0, 0.0]),
    ("np-scalar-f64", np.float64(2.5), (), mx.float32, 2.5),
    ("np-scalar-i64", np.int64(7), (), mx.int32, 7),
    # lists of NumPy scalars follow the NumPy-array rules (MLX itself refuses them)
    ("np-scalar-f32-list", [np.float32(1), np.float32(2)], (2,), mx.float32, [1.0, 2.0]),
    ("np-scalar-f64-tuple", (np.float64(0.5), 2), (2,), mx.float32, [0.5, 2.0]),
    ("np-scalar-i64-list", [np.int64(3)], (1,), mx.int32, [3]),
    ("np-scalar-i64-big", [[np.int64(2**40)]], (1, 1), mx.int64, [[2**40]]),
    ("np-scalar-bool-list", [np.bool_(True)], (1,), mx.bool_, [True]),
    ("mx-array", mx.array([1.0, 2.0]), (2,), mx.float32, [1.0, 2.0]),
    ("mx-array-f16", mx.array([1.0], dtype=mx.float16), (1,), mx.float16, [1.0]),
    ("tensor", lucid.tensor([4.0, 5.0]), (2,), mx.float32, [4.0, 5.0]),
]


@pytest.mark.parametrize(
    ("data", "shape", "dtype", "value"),
    [pytest.param(*row[1:], id=row[0]) for row in CONSTRUCTORS],
)
@pytest.mark.parametrize("make", [lucid.tensor, Tensor], ids=["lucid.tensor", "Tensor"])
def test_constructor(make, data, shape, dtype, value):
    t = make(data)
    assert isinstance(t, Tensor)
    assert isinstance(t.data, mx.array)
    assert (t.shape, t.dtype) == (shape, dtype)
    assert t.tolist() == value
    assert not t.requires_grad and t.grad is None and t.is_leaf


@pytest.mark.parametrize(
    ("data", "dtype"),
    [([1, 2], mx.float32), ([1.5], mx.float16), (np.array([1.0]), mx.bfloat16), (2, mx.float32)],
)
def test_constructor_dtype_argument(data, dtype):
    assert lucid.tensor(data, dtype=dtype).dtype == dtype


def test_constructor_from_tensor_drops_graph():
    x = lucid.tensor([1.0], requires_grad=True)
    y = lucid.tensor(x * 2)
    assert y.is_leaf and not y.requires_grad


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ("abc", TypeError, "got str"),
        (None, TypeError, "got NoneType"),
        ({"a": 1}, TypeError, "got dict"),
        ([[1, 2], [3]], ValueError, "non-uniform"),
        ([np.float32(1), [2.0]], ValueError, "Invalid type float32"),
        (["a"], ValueError, "Invalid type str"),
    ],
)
def test_constructor_rejects(data, error, match):
    with pytest.raises(error, match=match):
        lucid.tensor(data)


@pytest.mark.parametrize("data", [[1, 2], 3, np.array([1]), [True]])
def test_requires_grad_needs_floats(data):
    with pytest.raises(TypeError, match="requires_grad=True needs a floating dtype"):
        lucid.tensor(data, requires_grad=True)


# --------------------------------------------------------------------------- properties


def test_properties():
    t = lucid.zeros(2, 3, 4)
    assert t.shape == (2, 3, 4) and t.ndim == 3
    assert t.size == 24 and t.numel() == 24 and len(t) == 2
    assert lucid.tensor(1.0).shape == () and lucid.tensor(1.0).ndim == 0


def test_item_tolist_numpy_float():
    t = lucid.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    arr = t.numpy()
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, [[1, 2], [3, 4]])
    assert lucid.tensor([[2.5]]).item() == 2.5
    assert lucid.tensor(3).item() == 3 and isinstance(lucid.tensor(3).item(), int)
    assert float(lucid.tensor(0.25)) == 0.25


def test_item_of_many_elements_raises():
    with pytest.raises(ValueError, match=r"only a one-element tensor.*\(2,\)"):
        lucid.tensor([1.0, 2.0]).item()


def test_iteration_stops():
    rows = list(lucid.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    assert [r.tolist() for r in rows] == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    with pytest.raises(TypeError, match="0-d"):
        iter(lucid.tensor(1.0))


@pytest.mark.parametrize(("data", "expected"), [([0.0], False), (2.0, True), ([[1]], True)])
def test_bool_of_one_element(data, expected):
    assert bool(lucid.tensor(data)) is expected


def test_bool_of_many_elements_raises():
    with pytest.raises(ValueError, match="ambiguous"):
        bool(lucid.tensor([1.0, 0.0]))


@pytest.mark.parametrize(
    "index", [3, -4, (0, 5), (..., 4), (None, 3), np.int64(3), (0, np.int32(-5))]
)
def test_out_of_range_int_index_raises(index):
    with pytest.raises(IndexError, match="out of bounds"):
        lucid.zeros(3, 4)[index]


def test_comparisons_give_bool_tensors():
    t = lucid.tensor([1.0, 2.0, 3.0])
    assert (t > 1.5).tolist() == [False, True, True]
    assert (t <= 2).tolist() == [True, True, False]
    assert t.eq(lucid.tensor([1.0, 0.0, 3.0])).tolist() == [True, False, True]
    assert (t > 1.5).dtype == mx.bool_ and not (t > 1.5).requires_grad


@pytest.mark.parametrize(
    "other", [2.0, 2, [1.0, 0.0, 3.0], np.float32(3.0), np.array([[1.0], [2.0]])]
)
def test_eq_and_ne_are_elementwise_like_torch(other):
    data = [1.0, 2.0, 3.0]
    t = lucid.tensor(data, requires_grad=True)
    ref = torch.tensor(data)
    lucid_other = lucid.tensor(other) if isinstance(other, list) else other
    torch_other = torch.tensor(other) if isinstance(other, (list, np.ndarray)) else other
    for lucid_out, torch_out in [
        (t == lucid_other, ref == torch_other),
        (t != other, ref != torch_other),
    ]:
        assert lucid_out.dtype == mx.bool_ and not lucid_out.requires_grad
        assert lucid_out.tolist() == torch_out.tolist()


def test_eq_keeps_identity_hashing():
    a, b = lucid.tensor([1.0]), lucid.tensor([1.0])
    assert len({a, b}) == 2 and {a: "a", b: "b"}[b] == "b"
    assert hash(a) == object.__hash__(a)
    assert (a == None) is False and (a != None) is True  # noqa: E711 - the operator is tested
    assert (a == "abc") is False


# --------------------------------------------------------------------------- dtype rules for ops


@pytest.mark.parametrize(
    ("expr", "dtype"),
    [
        (lambda: lucid.tensor([1.0]) * 2, mx.float32),
        (lambda: 2 * lucid.ones(1, dtype=mx.float16), mx.float16),  # scalar takes tensor dtype
        (lambda: lucid.ones(1, dtype=mx.bfloat16) / 3, mx.bfloat16),
        (lambda: lucid.tensor([1, 2]) * 2, mx.int32),
        (lambda: lucid.tensor([1, 2]) + 0.5, mx.float32),  # float scalar promotes an int tensor
        (lambda: lucid.tensor([1, 2]) / 2, mx.float32),  # true division
        (lambda: np.float32(2.0) * lucid.tensor([1.0]), mx.float32),
    ],
)
def test_op_result_dtype(expr, dtype):
    out = expr()
    assert isinstance(out, Tensor) and out.dtype == dtype


def test_numpy_array_on_the_left_defers_to_tensor():
    out = np.ones(2, np.float32) * lucid.tensor([2.0, 3.0])
    assert isinstance(out, Tensor) and out.tolist() == [2.0, 3.0]


# --------------------------------------------------------------------------- creation


@pytest.mark.parametrize(
    ("make", "shape", "dtype"),
    [
        (lambda: lucid.zeros(2, 3), (2, 3), mx.float32),
        (lambda: lucid.zeros((2, 3)), (2, 3), mx.float32),
        (lambda: lucid.zeros([4]), (4,), mx.float32),
        (lambda: lucid.zeros(), (), mx.float32),
        (lambda: lucid.ones(3, dtype=lucid.float16), (3,), mx.float16),
        (lambda: lucid.full((2, 2), 7.0), (2, 2), mx.float32),
        (lambda: lucid.full(3, 7), (3,), mx.int32),
        (lambda: lucid.full((2,), True), (2,), mx.bool_),
        (lambda: lucid.zeros_like(lucid.ones(2, 5)), (2, 5), mx.float32),
        (lambda: lucid.ones_like(lucid.tensor([1, 2])), (2,), mx.int32),
        (lambda: lucid.ones_like(lucid.tensor([1, 2]), dtype=lucid.float32), (2,), mx.float32),
        (lambda: lucid.arange(5), (5,), mx.int32),
        (lambda: lucid.arange(1, 7, 2), (3,), mx.int32),
        (lambda: lucid.arange(0.0, 1.0, 0.25), (4,), mx.float32),
        (lambda: lucid.arange(3, dtype=lucid.float32), (3,), mx.float32),
        (lambda: lucid.randn(2, 3), (2, 3), mx.float32),
        (lambda: lucid.randn((4,), dtype=lucid.float16), (4,), mx.float16),
        (lambda: lucid.rand(3, 2), (3, 2), mx.float32),
    ],
)
def test_creation_shape_and_dtype(make, shape, dtype):
    t = make()
    assert (t.shape, t.dtype) == (shape, dtype)


@pytest.mark.parametrize(
    ("make", "value"),
    [
        (lambda: lucid.zeros(2), [0.0, 0.0]),
        (lambda: lucid.ones(2), [1.0, 1.0]),
        (lambda: lucid.full((2,), 2.5), [2.5, 2.5]),
        (lambda: lucid.arange(4), [0, 1, 2, 3]),
        (lambda: lucid.arange(2, 8, 3), [2, 5]),
        (lambda: lucid.arange(0, 1, 0.25), [0.0, 0.25, 0.5, 0.75]),
    ],
)
def test_creation_values(make, value):
    assert make().tolist() == value


@pytest.mark.parametrize("make", [lucid.zeros, lucid.ones, lucid.randn, lucid.rand])
def test_creation_requires_grad(make):
    t = make(2, requires_grad=True)
    assert t.requires_grad and t.is_leaf


@pytest.mark.parametrize("make", [lucid.randn, lucid.rand])
def test_manual_seed_reproducible(make):
    lucid.manual_seed(123)
    a = make(4, 3).numpy()
    lucid.manual_seed(123)
    b = make(4, 3).numpy()
    lucid.manual_seed(124)
    c = make(4, 3).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_distributions():
    lucid.manual_seed(0)
    n, u = lucid.randn(20000).numpy(), lucid.rand(20000).numpy()
    assert abs(n.mean()) < 0.05 and abs(n.std() - 1) < 0.05
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02


# --------------------------------------------------------------------------- repr


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (lambda: lucid.tensor([1.0, 2.0]), "tensor([1., 2.], dtype=float32)"),
        (lambda: lucid.tensor(3.5), "tensor(3.5, dtype=float32)"),
        (lambda: lucid.tensor([1, 2]), "tensor([1, 2], dtype=int32)"),
        (
            lambda: lucid.ones(2, requires_grad=True),
            "tensor([1., 1.], dtype=float32, requires_grad=True)",
        ),
        (
            lambda: lucid.ones(2, requires_grad=True) * 2,
            "tensor([2., 2.], dtype=float32, grad_fn=mul)",
        ),
        (lambda: lucid.ones(2, dtype=lucid.bfloat16), "tensor([1., 1.], dtype=bfloat16)"),
    ],
)
def test_repr(make, text):
    assert repr(make()) == text


def test_repr_of_large_tensor_is_summarised():
    text = repr(lucid.zeros(1000))
    assert "..." in text and len(text) < 200


def test_numpy_of_bfloat16_says_what_to_do():
    with pytest.raises(TypeError, match="astype"):
        lucid.ones(2, dtype=lucid.bfloat16).numpy()

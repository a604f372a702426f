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


# --------------------------------------------------------------------------- PyTorch habits
# argmax/argmin, .float()/.half()/.to(), .clone(), requires_grad_(), lucid.cat, and dim= as
# an alias of axis=. References: torch for values, mx.vjp (check_against_mlx) for gradients.

from test_tensor_ops import check_against_mlx  # noqa: E402

import lucid.nn.functional as F  # noqa: E402

_A = np.array([[3.0, 1.0, 3.0, -2.0], [0.5, 7.0, 7.0, 0.5], [-1.0, -1.0, -4.0, -4.0]], np.float32)

ARG_CASES = [  # (axis, keepdims); ties in every row: the first index wins, as in torch
    (None, False),
    (None, True),
    (0, False),
    (1, False),
    (-1, True),
    (0, True),
]


@pytest.mark.parametrize(("axis", "keepdims"), ARG_CASES)
@pytest.mark.parametrize("which", ["argmax", "argmin"])
@pytest.mark.parametrize("form", ["function", "method"])
def test_argmax_argmin_match_torch(which, axis, keepdims, form):
    t = lucid.tensor(_A, requires_grad=True)
    out = getattr(lucid, which)(t, axis, keepdims) if form == "function" else (
        getattr(t, which)(axis=axis, keepdims=keepdims)
    )  # fmt: skip
    ref = getattr(torch, which)(torch.from_numpy(_A), dim=axis, keepdim=keepdims)
    assert out.dtype == mx.int32 and not out.requires_grad
    assert out.shape == tuple(ref.shape)
    np.testing.assert_array_equal(out.numpy(), ref.numpy())


@pytest.mark.parametrize(
    ("data", "axis", "match"),
    [(np.zeros((0,)), None, "tensor is empty"), (np.zeros((2, 0)), 1, "axis 1 is empty")],
)
def test_argmax_of_nothing_raises(data, axis, match):
    with pytest.raises(ValueError, match=match):
        lucid.argmax(lucid.tensor(data), axis)


CASTS = [  # (call, source dtype, expected dtype)
    ("float", lambda t: t.float(), mx.float16, mx.float32),
    ("half", lambda t: t.half(), mx.float32, mx.float16),
    ("to-dtype", lambda t: t.to(lucid.bfloat16), mx.float32, mx.bfloat16),
    ("to-dtype-kw", lambda t: t.to(dtype=lucid.float16), mx.float32, mx.float16),
    ("to-device-dtype", lambda t: t.to("cuda:0", lucid.float16), mx.float32, mx.float16),
    ("to-mx-device-dtype", lambda t: t.to(mx.cpu, dtype=lucid.float16), mx.float32, mx.float16),
]


@pytest.mark.parametrize(("call", "src", "dst"), [pytest.param(*c[1:], id=c[0]) for c in CASTS])
def test_casts_are_differentiable(call, src, dst):
    x = lucid.tensor([0.5, -1.25, 3.0], dtype=src, requires_grad=True)
    y = call(x)
    assert y.dtype == dst
    np.testing.assert_array_equal(np.asarray(y), np.array(x.data.astype(dst).astype(mx.float32)))
    (y * lucid.tensor([1.0, 2.0, 3.0], dtype=dst)).sum().backward()
    assert x.grad.dtype == src  # the gradient comes back in the source dtype
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.float(),
        lambda t: t.to(lucid.float32),
        lambda t: t.to("cpu"),
        lambda t: t.to("mps"),
        lambda t: t.to("cuda"),
        lambda t: t.to("gpu:1"),
        lambda t: t.to(mx.gpu),
        lambda t: t.to(),
    ],
    ids=["float", "same-dtype", "cpu", "mps", "cuda", "gpu1", "mx.gpu", "nothing"],
)
def test_to_without_a_change_returns_self_like_torch(call):
    t = lucid.tensor([1.0, 2.0], requires_grad=True)
    assert call(t) is t


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("tpu",), {}, ValueError, "unknown device 'tpu'"),
        ((3,), {}, TypeError, "expected a dtype .* got 3"),
        ((np.float16,), {}, TypeError, "expected a dtype"),
        ((lucid.float16,), {"dtype": lucid.float32}, TypeError, "more than one dtype"),
    ],
    ids=["unknown-device", "int", "numpy-dtype", "two-dtypes"],
)
def test_to_rejects_what_it_cannot_mean(args, kwargs, error, match):
    t = lucid.tensor([1.0])
    with pytest.raises(error, match=match):
        t.to(*args, **kwargs)
    assert t.dtype == mx.float32


def test_clone_is_a_copy_in_the_graph():
    x = lucid.tensor([1.0, 2.0, 3.0], requires_grad=True)
    c = x.clone()
    assert c.data is not x.data and not c.is_leaf
    c.data[0] = 100.0  # item assignment into the clone's array leaves x alone
    assert x.tolist() == [1.0, 2.0, 3.0]
    check_against_mlx(lambda a: a.clone() * a, lambda a: mx.array(a) * a, [(3, 4)])


def test_clone_of_a_tensor_without_grad_has_no_graph():
    c = lucid.tensor([1.0]).clone()
    assert not c.requires_grad and c.is_leaf


def test_requires_grad_underscore():
    t = lucid.tensor([1.0, 2.0])
    assert t.requires_grad_() is t and t.requires_grad
    (t * t).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [2.0, 4.0])
    assert t.requires_grad_(False) is t and not t.requires_grad
    with pytest.raises(TypeError, match="floating dtype"):
        lucid.tensor([1, 2]).requires_grad_()
    with pytest.raises(RuntimeError, match="only a leaf"):
        (lucid.tensor([1.0], requires_grad=True) * 2).requires_grad_(False)
    with pytest.raises(TypeError, match="must be a bool"):
        t.requires_grad_(1)


JOINS = [  # lucid.cat is concatenate under torch's name; both take dim=
    ("cat", lambda a, b: lucid.cat([a, b]), lambda a, b: mx.concatenate([a, b]), (2, 3), (4, 3)),
    (
        "cat-dim1",
        lambda a, b: lucid.cat([a, b, a], dim=1),
        lambda a, b: mx.concatenate([a, b, a], axis=1),
        (2, 3),
        (2, 1),
    ),
    (
        "stack-dim-1",
        lambda a, b: lucid.stack([a, b], dim=-1),
        lambda a, b: mx.stack([a, b], axis=-1),
        (2, 3),
        (2, 3),
    ),
    (
        "concatenate-dim0",
        lambda a, b: lucid.concatenate((a, b), dim=0),
        lambda a, b: mx.concatenate([a, b], axis=0),
        (1, 3),
        (2, 3),
    ),
]


@pytest.mark.parametrize(
    ("lucid_fn", "mlx_fn", "specs"), [pytest.param(f, g, s, id=i) for i, f, g, *s in JOINS]
)
def test_cat_and_stack_gradients_match_mlx(lucid_fn, mlx_fn, specs):
    check_against_mlx(lucid_fn, mlx_fn, specs)


_B = np.random.default_rng(5).standard_normal((2, 3, 4)).astype(np.float32)

DIM_ALIASES = [  # (id, call with dim=/keepdim=, the same call with axis=/keepdims=)
    ("sum", lambda t: t.sum(dim=1), lambda t: t.sum(axis=1)),
    ("sum-keepdim", lambda t: t.sum(dim=(0, 2), keepdim=True), lambda t: t.sum((0, 2), True)),
    ("lucid.sum", lambda t: lucid.sum(t, dim=-1), lambda t: lucid.sum(t, axis=-1)),
    ("mean", lambda t: t.mean(dim=0, keepdim=True), lambda t: t.mean(0, True)),
    ("lucid.mean", lambda t: lucid.mean(t, dim=2), lambda t: lucid.mean(t, 2)),
    ("max", lambda t: t.max(dim=2), lambda t: t.max(2)),
    ("lucid.min", lambda t: lucid.min(t, dim=1, keepdim=True), lambda t: lucid.min(t, 1, True)),
    ("var", lambda t: t.var(dim=1, ddof=1), lambda t: t.var(1, ddof=1)),
    ("lucid.var", lambda t: lucid.var(t, dim=0), lambda t: lucid.var(t, 0)),
    ("logsumexp", lambda t: t.logsumexp(dim=1), lambda t: t.logsumexp(1)),
    ("softmax", lambda t: t.softmax(dim=0), lambda t: t.softmax(0)),
    ("lucid.softmax", lambda t: lucid.softmax(t, dim=1), lambda t: lucid.softmax(t, 1)),
    ("log_softmax", lambda t: t.log_softmax(dim=1), lambda t: t.log_softmax(1)),
    ("F.softmax", lambda t: F.softmax(t, dim=0), lambda t: t.softmax(0)),
    ("F.log_softmax", lambda t: F.log_softmax(t, dim=2), lambda t: t.log_softmax(2)),
    ("argmax", lambda t: t.argmax(dim=1), lambda t: t.argmax(1)),
    ("lucid.argmin", lambda t: lucid.argmin(t, dim=2, keepdim=True),
     lambda t: lucid.argmin(t, 2, True)),
    ("unsqueeze", lambda t: t.unsqueeze(dim=1), lambda t: t.unsqueeze(1)),
    ("squeeze", lambda t: t.unsqueeze(0).squeeze(dim=0), lambda t: t.unsqueeze(0).squeeze(0)),
    ("flatten", lambda t: t.flatten(start_dim=1), lambda t: t.flatten(1)),
    ("flatten-end", lambda t: t.flatten(start_dim=0, end_dim=1), lambda t: t.flatten(0, 1)),
    ("nn.Flatten", lambda t: lucid.nn.Flatten(start_dim=0, end_dim=1)(t),
     lambda t: t.flatten(0, 1)),
    ("cat", lambda t: lucid.cat([t, t], dim=2), lambda t: lucid.concatenate([t, t], 2)),
    ("stack", lambda t: lucid.stack([t, t], dim=1), lambda t: lucid.stack([t, t], 1)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("with_dim", "with_axis"), [pytest.param(f, g, id=i) for i, f, g in DIM_ALIASES]
)
def test_dim_is_an_alias_of_axis(with_dim, with_axis):
    out, ref = with_dim(lucid.tensor(_B)), with_axis(lucid.tensor(_B))
    assert (out.shape, out.dtype) == (ref.shape, ref.dtype)
    np.testing.assert_array_equal(out.numpy(), ref.numpy())


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.sum(axis=0, dim=0),
        lambda t: lucid.mean(t, axis=1, dim=1),
        lambda t: t.sum(0, keepdims=True, keepdim=True),
        lambda t: lucid.cat([t, t], axis=0, dim=0),
        lambda t: t.flatten(start_axis=0, start_dim=0),
        lambda t: t.softmax(1, dim=1),  # positional axis and dim=
    ],
    ids=["sum", "mean", "keepdim", "cat", "flatten", "positional"],
)
def test_a_name_and_its_alias_together_raise_type_error(call):
    with pytest.raises(TypeError):
        call(lucid.tensor(_B))


def test_dim_alias_keeps_the_signature_readable():
    import inspect

    assert list(inspect.signature(lucid.sum).parameters) == ["a", "axis", "keepdims"]

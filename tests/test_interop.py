"""NumPy, MLX and matplotlib read a Tensor's values: ``__array__`` and ``__mlx_array__``.

The MLX tables pin down exactly which MLX 0.32 entry points honour ``__mlx_array__`` (the
README lists them) and which still need ``t.data``: if MLX starts accepting more, the
"refused" table fails and the list should grow.
"""

from __future__ import annotations

import io

import matplotlib
import mlx.core as mx
import numpy as np
import pytest

import lucid
from lucid import Tensor

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

VALUES = [  # (id, data, dtype, the NumPy dtype np.asarray gives)
    ("float32", [[1.5, -2.0], [0.25, 8.0]], mx.float32, np.float32),
    ("float16", [1.0, 65504.0, -0.5], mx.float16, np.float16),
    ("bfloat16", [1.0, 3.0e38, -0.5], mx.bfloat16, np.float32),  # NumPy has no bfloat16
    ("int32", [[1, -2, 3]], mx.int32, np.int32),
    ("int64", [2**40, -1], mx.int64, np.int64),
    ("bool", [True, False], mx.bool_, np.bool_),
    ("scalar", 7.0, mx.float32, np.float32),
    ("empty", np.zeros((0, 3), np.float32), mx.float32, np.float32),
]


def _expected(data, dtype) -> np.ndarray:
    """The values as float64/int64 NumPy, computed without lucid's conversion."""
    arr = mx.array(data, dtype=dtype)
    return np.array(arr.astype(mx.float32) if dtype == mx.bfloat16 else arr)


@pytest.mark.parametrize(
    ("data", "dtype", "np_dtype"), [pytest.param(*v[1:], id=v[0]) for v in VALUES]
)
@pytest.mark.parametrize(
    "convert",
    [np.asarray, np.array, lambda t: np.asarray(t, copy=True)],
    ids=["asarray", "array", "copy"],
)
def test_numpy_sees_the_values(convert, data, dtype, np_dtype) -> None:
    t = lucid.tensor(data, dtype=dtype)
    out = convert(t)
    assert type(out) is np.ndarray and out.dtype == np_dtype and out.shape == t.shape
    np.testing.assert_array_equal(out, _expected(data, dtype))
    assert out.flags.writeable


@pytest.mark.parametrize("np_dtype", [np.float64, np.float16, np.int32, np.complex64])
def test_numpy_dtype_argument_casts(np_dtype) -> None:
    t = lucid.tensor([1.0, -2.5, 3.0])
    out = np.asarray(t, dtype=np_dtype)
    assert out.dtype == np_dtype
    np.testing.assert_array_equal(out, np.array([1.0, -2.5, 3.0]).astype(np_dtype))


def test_a_copy_is_independent_of_the_tensor() -> None:
    t = lucid.tensor([1.0, 2.0])
    out = np.asarray(t)
    out[0] = 99.0
    assert t.tolist() == [1.0, 2.0]


def test_copy_false_gives_a_read_only_view() -> None:
    t = lucid.tensor([[1.0, 2.0], [3.0, 4.0]]).T  # a transposed (strided) array too
    view = np.asarray(t, copy=False)
    np.testing.assert_array_equal(view, [[1.0, 3.0], [2.0, 4.0]])
    assert not view.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        view[0, 0] = 5.0


@pytest.mark.parametrize(
    ("dtype", "np_dtype"), [(mx.bfloat16, None), (mx.float32, np.float64)], ids=["bf16", "cast"]
)
def test_copy_false_refuses_what_needs_a_copy(dtype, np_dtype) -> None:
    t = lucid.tensor([1.0, 2.0], dtype=dtype)
    with pytest.raises(ValueError, match="without a copy"):
        np.asarray(t, dtype=np_dtype, copy=False)


def test_numpy_1_style_call_without_copy() -> None:
    t = lucid.tensor([1.0, 2.0])
    np.testing.assert_array_equal(t.__array__(), [1.0, 2.0])
    assert t.__array__(np.float64).dtype == np.float64


@pytest.mark.parametrize("make", ["leaf", "requires_grad", "intermediate"])
def test_numpy_reads_tensors_in_a_graph(make) -> None:
    x = lucid.tensor([1.0, 2.0], requires_grad=make != "leaf")
    t = x * 3.0 if make == "intermediate" else x
    assert np.allclose(t, np.array([1.0, 2.0]) * (3.0 if make == "intermediate" else 1.0))
    np.testing.assert_allclose(t, t.numpy())


def test_numpy_conversion_raises_a_pending_index_error() -> None:
    t = lucid.tensor([1.0, 2.0, 3.0])
    picked = t[mx.array([0, 7])]  # an mx.array index is checked lazily (lucid.bounds)
    with pytest.raises(IndexError, match="index 7 is out of range"):
        np.asarray(picked)


def test_numpy_array_of_tensors_is_no_object_array() -> None:
    out = np.array([lucid.tensor(1.0), lucid.tensor(2.0)])
    assert out.dtype == np.float32 and out.tolist() == [1.0, 2.0]


# --------------------------------------------------------------------------- MLX

X = [[0.5, -1.5, 2.0], [4.0, 0.25, -3.0]]
POSITIVE = [[0.5, 1.5, 2.0], [4.0, 0.25, 3.0]]

HONOURED = [  # (id, call on an mx.array or a Tensor; the input data)
    ("mx.array", mx.array, X),
    ("mx.asarray", mx.asarray, X),
    *[(f"mx.{name}", getattr(mx, name), X) for name in (
        "abs", "exp", "sin", "cos", "tanh", "sigmoid", "erf", "square", "negative", "sign",
        "floor", "ceil", "round", "isnan", "isfinite", "expm1", "logical_not", "nan_to_num",
    )],
    *[(f"mx.{name}", getattr(mx, name), POSITIVE) for name in (
        "log", "log1p", "sqrt", "rsqrt", "reciprocal",
    )],
    ("array + t", lambda t: mx.ones((2, 3)) + t, X),
    ("array - t", lambda t: mx.ones((2, 3)) - t, X),
    ("array * t", lambda t: mx.full((2, 3), 2.0) * t, X),
    ("array / t", lambda t: mx.ones((2, 3)) / t, POSITIVE),
    ("array ** t", lambda t: mx.full((2, 3), 2.0) ** t, X),
    ("array < t", lambda t: mx.zeros((2, 3)) < t, X),
    ("array == t", lambda t: mx.zeros((2, 3)) == t, X),
]  # fmt: skip


@pytest.mark.parametrize(("call", "data"), [pytest.param(*h[1:], id=h[0]) for h in HONOURED])
def test_mlx_entry_points_that_honour_mlx_array(call, data) -> None:
    t = lucid.tensor(data, requires_grad=True)
    out = call(t)
    assert isinstance(out, mx.array)  # MLX's result: outside lucid's graph
    expected = call(mx.array(data))
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(np.array(out), np.array(expected))


REFUSED = [  # MLX 0.32 still needs t.data here
    ("mx.add", lambda t: mx.add(t, 1)),
    ("mx.multiply", lambda t: mx.multiply(t, t)),
    ("mx.maximum", lambda t: mx.maximum(t, 0)),
    ("mx.where", lambda t: mx.where(mx.array(True), t, t)),
    ("mx.sum", mx.sum),
    ("mx.mean", mx.mean),
    ("mx.max", mx.max),
    ("mx.argmax", mx.argmax),
    ("mx.softmax", mx.softmax),
    ("mx.clip", lambda t: mx.clip(t, 0, 1)),
    ("mx.reshape", lambda t: mx.reshape(t, (3, 2))),
    ("mx.transpose", mx.transpose),
    ("mx.concatenate", lambda t: mx.concatenate([t, t])),
    ("mx.stack", lambda t: mx.stack([t, t])),
    ("mx.matmul", lambda t: mx.matmul(t, t.T)),
    ("array @ t", lambda t: mx.ones((3, 2)) @ t),
    ("mx.allclose", lambda t: mx.allclose(t, t)),
    ("mx.array_equal", lambda t: mx.array_equal(t, t)),
    ("mx.zeros_like", mx.zeros_like),
    ("mx.take", lambda t: mx.take(t, mx.array([0]))),
    ("mx.linalg.norm", mx.linalg.norm),
    ("mx.array([t, t])", lambda t: mx.array([t, t])),
    ("mx.grad", lambda t: mx.grad(lambda x: mx.sum(x))(t)),
    ("mx.save_safetensors", lambda t: mx.save_safetensors(io.BytesIO(), {"t": t})),
]


@pytest.mark.parametrize("call", [pytest.param(c, id=i) for i, c in REFUSED])
def test_mlx_entry_points_that_still_need_data(call) -> None:
    t = lucid.tensor(X)
    call(t.data)  # fine with the array itself
    with pytest.raises((TypeError, ValueError, RuntimeError)):  # bad_cast is a RuntimeError
        call(t)


def test_mx_eval_ignores_a_tensor_without_reading_it() -> None:
    """mx.eval accepts any tree and skips leaves that are not arrays: mx.eval(t) is legal
    but evaluates nothing, and never calls __mlx_array__. Use mx.eval(t.data)."""
    calls = []

    class Probe:
        def __mlx_array__(self) -> mx.array:
            calls.append(1)
            return mx.array(1.0)

    mx.eval(Probe())
    mx.eval([lucid.tensor(1.0)])
    assert calls == []


def test_the_operand_on_the_left_decides_who_keeps_the_graph() -> None:
    w = lucid.tensor([1.0, 2.0], requires_grad=True)
    a = mx.array([3.0, 4.0])
    right = w * a  # Tensor.__mul__: recorded
    left = a * w  # mx.array.__mul__ reads w through __mlx_array__: a plain array
    assert isinstance(right, Tensor) and right.requires_grad
    assert isinstance(left, mx.array)
    np.testing.assert_array_equal(np.array(left), right.numpy())
    right.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 4.0])


# --------------------------------------------------------------------------- matplotlib


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16, mx.int32])
def test_matplotlib_plots_tensors(dtype) -> None:
    y = lucid.tensor([3.0, 1.0, 4.0, 1.0, 5.0], dtype=dtype)
    x = lucid.arange(5)
    fig, ax = plt.subplots()
    try:
        (only,) = ax.plot(y)
        (both,) = ax.plot(x, y * 2 if dtype != mx.int32 else y)
        np.testing.assert_array_equal(only.get_ydata(), [3.0, 1.0, 4.0, 1.0, 5.0])
        np.testing.assert_array_equal(only.get_xdata(), np.arange(5))
        np.testing.assert_array_equal(both.get_xdata(), np.arange(5))
        fig.canvas.draw()  # the Agg renderer really draws it
    finally:
        plt.close(fig)


@pytest.mark.parametrize(
    "expr",
    [
        lambda w: np.float32(2) * w,
        lambda w: np.float64(0.5) + w,
        lambda w: np.int64(3) - w,
        lambda w: np.ones(2, np.float32) / w,
    ],
    ids=["np.float32*", "np.float64+", "np.int64-", "ndarray/"],
)
def test_numpy_on_the_left_still_defers_to_the_tensor(expr) -> None:
    """__array__ must not let NumPy's operators swallow a Tensor: they defer (priority)."""
    w = lucid.tensor([1.0, 2.0], requires_grad=True)
    out = expr(w)
    assert isinstance(out, Tensor) and out.requires_grad
    out.sum().backward()
    assert w.grad is not None


def test_numpy_functions_read_values_outside_the_graph() -> None:
    w = lucid.tensor([0.0, 1.0], requires_grad=True)
    out = np.exp(w)
    assert type(out) is np.ndarray
    np.testing.assert_allclose(out, np.exp([0.0, 1.0]), rtol=1e-6)

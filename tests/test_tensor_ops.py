"""Every differentiable op against MLX's own autodiff.

Each case runs one function twice: on lucid Tensors (value, then ``backward`` with a
random cotangent) and on plain ``mx.array``s through ``mx.vjp``. Values and gradients
must agree to float32 precision. Points where MLX picks a different subgradient than
lucid (ties in ``maximum``, clip bounds, relu at 0) are checked against PyTorch instead,
whose conventions lucid follows.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
import torch

import lucid

RTOL, ATOL = 1e-5, 1e-6  # float32; both sides run the same MLX kernels for the forward


def _inputs(specs: tuple, positive: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """A shape becomes random float32 data (in [0.5, 2) if ``positive``); arrays pass through."""
    out = []
    for spec in specs:
        if isinstance(spec, np.ndarray):
            out.append(spec.astype(np.float32))
        elif positive:
            out.append(rng.uniform(0.5, 2.0, size=spec).astype(np.float32))
        else:
            out.append(rng.standard_normal(spec).astype(np.float32))
    return out


def check_against_mlx(lucid_fn, mlx_fn, specs, positive=False, rtol=RTOL, atol=ATOL):
    rng = np.random.default_rng(0)
    xs = _inputs(specs, positive, rng)
    ts = [lucid.tensor(x, requires_grad=True) for x in xs]
    out = lucid_fn(*ts)
    cotangent = mx.array(rng.standard_normal(out.shape).astype(np.float32))
    out.backward(cotangent)

    (ref_out,), ref_grads = mx.vjp(mlx_fn, [mx.array(x) for x in xs], [cotangent])
    assert out.shape == tuple(ref_out.shape)
    np.testing.assert_allclose(out.numpy(), np.array(ref_out), rtol=rtol, atol=atol)
    for i, (t, g) in enumerate(zip(ts, ref_grads, strict=True)):
        assert t.grad is not None, f"input {i} got no gradient"
        assert t.grad.shape == t.shape, f"input {i}: grad shape {t.grad.shape} != {t.shape}"
        np.testing.assert_allclose(
            t.grad.numpy(), np.array(g), rtol=rtol, atol=atol, err_msg=f"input {i}"
        )


def _chain(x):  # a node used twice: y feeds both factors of z, x feeds y twice
    y = x * x + x.exp()
    return y * y


def _layer(x, w, b, tanh):  # h is used three times
    h = x @ w + b
    return (h * tanh(h)).sum(axis=-1) + h.max(axis=-1)


COND = np.array([[True], [False], [True]])  # broadcasts against (3, 4)
IDX = np.array([0, 2, 0, 0])
IDX2 = np.array([[1, 0], [1, 1]])
SQRT2 = math.sqrt(2.0)


def _case(name, lucid_fn, mlx_fn, *specs, positive=False, **tol):
    return pytest.param(lucid_fn, mlx_fn, specs, positive, tol, id=name)


def _same(name, fn, *specs, positive=False, **tol):  # one function both types understand
    return _case(name, fn, fn, *specs, positive=positive, **tol)


OPS = [
    # ---- arithmetic, with broadcasting and Python scalars on either side
    _same("add", lambda a, b: a + b, (3, 4), (3, 4)),
    _same("add-bcast-col-row", lambda a, b: a + b, (3, 1), (1, 4)),
    _same("add-bcast-rank", lambda a, b: a + b, (4,), (2, 3, 4)),
    _same("add-scalar-tensor", lambda a, b: a + b, (), (3, 4)),
    _same("sub-bcast", lambda a, b: a - b, (3, 1), (1, 4)),
    _same("mul-bcast", lambda a, b: a * b, (2, 3, 1), (3, 4)),
    _same("mul-scalar-tensor", lambda a, b: b * a, (), (3, 4)),
    _same("div-bcast", lambda a, b: a / b, (3, 1), (1, 4), positive=True),
    _same("pow-tensor", lambda a, b: a**b, (3, 4), (4,), positive=True),
    _same("radd-py", lambda a: 2 + a, (3, 4)),
    _same("add-py", lambda a: a + 2.5, (3, 4)),
    _same("rsub-py", lambda a: 2 - a, (3, 4)),
    _same("sub-py", lambda a: a - 2, (3, 4)),
    _same("rmul-py", lambda a: 2 * a, (3, 4)),
    _same("mul-py", lambda a: a * 3.5, (3, 4)),
    _same("div-py", lambda a: a / 3, (3, 4)),
    _same("rdiv-py", lambda a: 3 / a, (3, 4), positive=True),
    _same("pow-py-int", lambda a: a**2, (3, 4)),
    _same("pow-py-int3-neg-base", lambda a: a**3, (3, 4)),
    _same("pow-py-half", lambda a: a**0.5, (3, 4), positive=True),
    _same("rpow-py", lambda a: 2**a, (3, 4)),
    _same("neg", lambda a: -a, (3, 4)),
    # ---- matmul: plain, batched, broadcast batch dims, 1-D operands
    _same("matmul", lambda a, b: a @ b, (3, 4), (4, 5)),
    _same("matmul-batched", lambda a, b: a @ b, (2, 3, 4), (2, 4, 5)),
    _same("matmul-bcast-batch", lambda a, b: a @ b, (2, 1, 3, 4), (5, 4, 2)),
    _same("matmul-2d-by-batched", lambda a, b: a @ b, (3, 4), (2, 4, 5)),
    _same("matmul-vec-mat", lambda a, b: a @ b, (4,), (4, 5)),
    _same("matmul-mat-vec", lambda a, b: a @ b, (3, 4), (4,)),
    _same("matmul-vec-vec", lambda a, b: a @ b, (4,), (4,)),
    _same("matmul-vec-batched", lambda a, b: a @ b, (4,), (2, 4, 5)),
    _same("matmul-batched-vec", lambda a, b: a @ b, (2, 3, 4), (4,)),
    _case("matmul-fn", lucid.matmul, mx.matmul, (3, 4), (4, 2)),
    # ---- elementwise
    _case("exp", lucid.exp, mx.exp, (3, 4)),
    _case("log", lucid.log, mx.log, (3, 4), positive=True),
    _case("sqrt", lucid.sqrt, mx.sqrt, (3, 4), positive=True),
    _case("abs", lucid.abs, mx.abs, (3, 4)),
    _case("tanh", lucid.tanh, mx.tanh, (3, 4)),
    _case("sigmoid", lucid.sigmoid, mx.sigmoid, (3, 4)),
    _case("relu", lucid.relu, mnn.relu, (3, 4)),
    _case("gelu", lucid.gelu, mnn.gelu, (3, 4)),
    _case("clip", lambda a: a.clip(-0.5, 0.5), lambda a: mx.clip(a, -0.5, 0.5), (3, 4)),
    _case("clip-min", lambda a: lucid.clip(a, min=0.0), lambda a: mx.clip(a, 0.0, None), (3, 4)),
    _case("clip-max", lambda a: lucid.clip(a, max=0.2), lambda a: mx.clip(a, None, 0.2), (3, 4)),
    _case("maximum", lucid.maximum, mx.maximum, (3, 1), (1, 4)),
    _case("minimum", lucid.minimum, mx.minimum, (3, 1), (1, 4)),
    _case("maximum-py", lambda a: lucid.maximum(a, 0.1), lambda a: mx.maximum(a, 0.1), (3, 4)),
    _case(
        "where",
        lambda a, b: lucid.where(lucid.tensor(COND), a, b),
        lambda a, b: mx.where(mx.array(COND), a, b),
        (3, 4),
        (1, 4),
    ),
    _case(
        "where-py",
        lambda a: lucid.where(a > 0, a, 0.0),
        lambda a: mx.where(a > 0, a, 0.0),
        (3, 4),
    ),
    # ---- reductions over one or several axes, with and without keepdims
    _same("sum", lambda a: a.sum(), (3, 4)),
    _same("sum-axis", lambda a: a.sum(axis=1), (3, 4)),
    _same("sum-neg-axis-keep", lambda a: a.sum(axis=-1, keepdims=True), (2, 3, 4)),
    _same("sum-axes", lambda a: a.sum(axis=(0, 2)), (2, 3, 4)),
    _same("sum-axes-unsorted-keep", lambda a: a.sum(axis=(2, 0), keepdims=True), (2, 3, 4)),
    _same("mean", lambda a: a.mean(), (3, 4)),
    _same("mean-axes", lambda a: a.mean(axis=(0, 2)), (2, 3, 4)),
    _same("mean-axes-keep", lambda a: a.mean(axis=(1, 2), keepdims=True), (2, 3, 4)),
    _same("max", lambda a: a.max(), (3, 4)),
    _same("max-axis", lambda a: a.max(axis=0), (3, 4)),
    _same("max-axes-keep", lambda a: a.max(axis=(0, 2), keepdims=True), (2, 3, 4)),
    _same("min-axis-keep", lambda a: a.min(axis=1, keepdims=True), (3, 4)),
    _same("min-axes", lambda a: a.min(axis=(-1, 0)), (2, 3, 4)),
    _same("var", lambda a: a.var(), (3, 4)),
    _same("var-axis", lambda a: a.var(axis=1), (3, 4)),
    _same("var-axes-keep", lambda a: a.var(axis=(0, 2), keepdims=True), (2, 3, 4)),
    _same("var-ddof", lambda a: a.var(axis=0, ddof=1), (5, 3)),
    _same("logsumexp", lambda a: a.logsumexp(), (3, 4)),
    _same("logsumexp-axis", lambda a: a.logsumexp(axis=-1), (3, 4)),
    _same("logsumexp-axes-keep", lambda a: a.logsumexp(axis=(0, 2), keepdims=True), (2, 3, 4)),
    _case("softmax", lucid.softmax, lambda a: mx.softmax(a, axis=-1), (3, 4)),
    _case("softmax-axis0", lambda a: a.softmax(0), lambda a: mx.softmax(a, axis=0), (3, 4)),
    _case("log_softmax", lucid.log_softmax, mnn.log_softmax, (3, 4)),
    _case(
        "log_softmax-axis1",
        lambda a: a.log_softmax(axis=1),
        lambda a: mnn.log_softmax(a, axis=1),
        (2, 3, 4),
    ),
    # ---- ties: MLX also shares the gradient of a max/min evenly among tied elements
    _same("max-ties", lambda a: a.max(axis=1), np.array([[1, 3, 3], [2, 2, 2]])),
    _same("max-ties-all", lambda a: a.max(), np.array([[1, 3], [3, 0]])),
    _same("min-ties-keep", lambda a: a.min(axis=0, keepdims=True), np.array([[1, 0], [1, 2]])),
    # ---- shape
    _same("reshape", lambda a: a.reshape(6, 4), (2, 3, 4)),
    _same("reshape-tuple", lambda a: a.reshape((4, -1)), (2, 3, 4)),
    _case("view", lambda a: a.view(-1), lambda a: a.reshape(-1), (2, 3, 4)),
    _same("T", lambda a: a.T, (2, 3, 4)),
    _case("transpose-all", lambda a: a.transpose(), mx.transpose, (2, 3, 4)),
    _case("transpose-swap", lambda a: a.transpose(-2, -1), lambda a: a.swapaxes(-2, -1), (2, 3, 4)),
    _case("transpose-2d", lambda a: a.transpose(0, 1), lambda a: a.T, (3, 4)),
    _same("transpose-perm", lambda a: a.transpose(2, 0, 1), (2, 3, 4)),
    _case("permute", lambda a: a.permute(1, 2, 0), lambda a: a.transpose(1, 2, 0), (2, 3, 4)),
    _same("squeeze", lambda a: a.squeeze(), (1, 3, 1)),
    _same("squeeze-axis", lambda a: a.squeeze(0), (1, 3, 1)),
    _case("unsqueeze", lambda a: a.unsqueeze(1), lambda a: mx.expand_dims(a, 1), (3, 4)),
    _same("flatten", lambda a: a.flatten(), (2, 3, 4)),
    _case("flatten-from-1", lambda a: a.flatten(1), lambda a: mx.flatten(a, 1), (2, 3, 4)),
    # ---- indexing: the gradient scatters back, repeated indices accumulate
    _same("index-int", lambda a: a[1], (3, 4)),
    _same("index-neg-int", lambda a: a[-1, 2], (3, 4)),
    _same("index-slice", lambda a: a[1:3], (4, 5)),
    _same("index-slice-step", lambda a: a[::2, 1:], (4, 5)),
    _same("index-reverse", lambda a: a[::-1], (4, 5)),
    _same("index-none", lambda a: a[:, None], (3, 4)),
    _same("index-ellipsis", lambda a: a[..., 0], (2, 3, 4)),
    _case("index-list-repeated", lambda a: a[[0, 2, 0, 0]], lambda a: a[mx.array(IDX)], (3, 4)),
    _case("index-array-colon", lambda a: a[IDX, :], lambda a: a[mx.array(IDX), :], (3, 4)),
    _case("index-tensor", lambda a: a[lucid.tensor(IDX)], lambda a: a[mx.array(IDX)], (3, 4)),
    _case("index-2d-array", lambda a: a[IDX2], lambda a: a[mx.array(IDX2)], (3, 4)),
    _case(
        "index-two-arrays",
        lambda a: a[IDX, IDX[::-1]],
        lambda a: a[mx.array(IDX), mx.array(IDX[::-1].copy())],
        (3, 4),
    ),
    _case("index-array-axis1", lambda a: a[:, IDX], lambda a: a[:, mx.array(IDX)], (2, 3)),
    _case(
        "index-negative-list",
        lambda a: a[[-1, 0, -3]],
        lambda a: a[mx.array([2, 0, 0])],
        (3, 4),
    ),
    _same("index-negative-mx", lambda a: a[..., mx.array([-1, 1, -1])], (2, 3)),
    # ---- joining, including one tensor joined with itself
    _case(
        "concatenate",
        lambda a, b: lucid.concatenate([a, b]),
        lambda a, b: mx.concatenate([a, b]),
        (2, 3),
        (4, 3),
    ),
    _case(
        "concatenate-axis1-self",
        lambda a, b: lucid.concatenate([a, b, a], axis=-1),
        lambda a, b: mx.concatenate([a, b, a], axis=-1),
        (2, 3),
        (2, 1),
    ),
    _case("stack", lambda a, b: lucid.stack([a, b]), lambda a, b: mx.stack([a, b]), (2, 3), (2, 3)),
    _case(
        "stack-last-self",
        lambda a: lucid.stack([a, a * 2], axis=-1),
        lambda a: mx.stack([a, a * 2], axis=-1),
        (2, 3),
    ),
    # ---- chains: one graph, nodes used more than once
    _same("chain-node-used-twice", _chain, (3, 4)),
    _same("chain-x*x", lambda a: a * a, (3, 4)),
    _case(
        "chain-layer",
        lambda x, w, b: _layer(x, w, b, lucid.tanh),
        lambda x, w, b: _layer(x, w, b, mx.tanh),
        (5, 3),
        (3, 4),
        (4,),
    ),
    _case(
        "chain-softmax-xent",
        lambda z: -(z.log_softmax(axis=-1)[np.arange(3), np.array([1, 0, 3])]).mean(),
        lambda z: -(mnn.log_softmax(z, axis=-1)[mx.arange(3), mx.array([1, 0, 3])]).mean(),
        (3, 4),
    ),
    _case(
        "chain-gelu-var",
        lambda a: (lucid.gelu(a) / SQRT2).var(axis=0) + a.abs().sqrt().sum(axis=0),
        lambda a: (mnn.gelu(a) / SQRT2).var(axis=0) + mx.abs(a).sqrt().sum(axis=0),
        (4, 3),
    ),
]


@pytest.mark.parametrize(("lucid_fn", "mlx_fn", "specs", "positive", "tol"), OPS)
def test_op_matches_mlx_vjp(lucid_fn, mlx_fn, specs, positive, tol):
    check_against_mlx(lucid_fn, mlx_fn, specs, positive, **tol)


# --------------------------------------------------------------------------- subgradients


def check_against_torch(lucid_fn, torch_fn, *inputs):
    xs = [np.asarray(x, dtype=np.float32) for x in inputs]
    ts = [lucid.tensor(x, requires_grad=True) for x in xs]
    out = lucid_fn(*ts)
    out.backward(mx.ones(out.shape))
    refs = [torch.tensor(x, requires_grad=True) for x in xs]
    ref_out = torch_fn(*refs)
    ref_out.backward(torch.ones_like(ref_out))
    np.testing.assert_allclose(out.numpy(), ref_out.detach().numpy(), rtol=RTOL, atol=ATOL)
    for t, r in zip(ts, refs, strict=True):
        np.testing.assert_allclose(t.grad.numpy(), r.grad.numpy(), rtol=RTOL, atol=ATOL)


TIES = [
    ("maximum-ties", lucid.maximum, torch.maximum, [1.0, 2.0, 3.0], [1.0, 0.0, 3.0]),
    ("minimum-ties", lucid.minimum, torch.minimum, [1.0, 2.0, 3.0], [1.0, 0.0, 3.0]),
    ("relu-at-0", lucid.relu, torch.relu, [-1.0, 0.0, 2.0]),
    ("abs-at-0", lucid.abs, torch.abs, [-1.0, 0.0, 2.0]),
    ("clip-at-bounds", lambda a: a.clip(-1, 1), lambda a: a.clamp(-1, 1), [-2, -1, 0, 1, 2]),
    ("max-ties", lambda a: a.max(1), lambda a: a.amax(1), [[1, 3, 3], [2, 2, 2]]),
    ("min-ties", lambda a: a.min(0), lambda a: a.amin(0), [[1, 0], [1, 2]]),
    ("pow-zero-base", lambda a, b: a**b, torch.pow, [0.0, 1.0, 2.0], [2.0, 2.0, 0.5]),
    # d/da is 0 where b == 0, even at 0**0; d/db is 0 at a == 0 with b >= 0, NaN for a < 0
    (
        "pow-zero-exponent",
        lambda a, b: a**b,
        torch.pow,
        [0.0, 0.0, 2.0, -1.5],
        [0.0, 1.0, 0.0, 0.0],
    ),
    ("pow-negative-base", lambda a, b: a**b, torch.pow, [-2.0, -0.5, 3.0], [2.0, 3.0, 2.0]),
    ("pow-zero-base-neg-exp", lambda a, b: a**b, torch.pow, [0.0, 0.0], [-1.0, -2.0]),
    ("pow-scalar-zero-exp", lambda a: a**0, lambda a: a**0, [0.0, 1.0, -2.0]),
    # a divisor n - ddof <= 0 gives inf, or NaN where x == mean (torch warns; lucid is silent)
    ("var-ddof-n-axis", lambda a: a.var(0, ddof=1), lambda a: a.var(0), [[1.0, 2.0, 3.0]]),
    ("var-ddof-above-n", lambda a: a.var(ddof=3), lambda a: a.var(correction=3), [1.0, 2.0]),
    ("var-ddof-n-equal", lambda a: a.var(ddof=2), lambda a: a.var(correction=2), [1.0, 1.0]),
]


@pytest.mark.parametrize(
    ("lucid_fn", "torch_fn", "inputs"), [pytest.param(f, g, xs, id=i) for i, f, g, *xs in TIES]
)
@pytest.mark.filterwarnings("ignore:.*degrees of freedom is <= 0")
def test_subgradient_matches_torch(lucid_fn, torch_fn, inputs):
    check_against_torch(lucid_fn, torch_fn, *inputs)


# --------------------------------------------------------------------------- boolean masks
# PyTorch is the reference: MLX has no boolean-mask indexing (the output shape depends on
# the mask's values). Every mask form a user may pass, alone and inside a tuple.

_X = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)
ROW_MASK = np.array([True, False, True, True])
FULL_MASK = _X > 0
COL_MASK = np.array([False, True, True])

MASKS = [
    ("rows-numpy", lambda a: a[ROW_MASK], lambda t: t[torch.from_numpy(ROW_MASK)]),
    ("rows-list", lambda a: a[ROW_MASK.tolist()], lambda t: t[ROW_MASK.tolist()]),
    ("rows-mx", lambda a: a[mx.array(ROW_MASK)], lambda t: t[torch.from_numpy(ROW_MASK)]),
    ("full-tensor", lambda a: a[a > 0], lambda t: t[t > 0]),
    ("full-numpy", lambda a: a[FULL_MASK], lambda t: t[torch.from_numpy(FULL_MASK)]),
    ("cols-in-tuple", lambda a: a[:, COL_MASK], lambda t: t[:, torch.from_numpy(COL_MASK)]),
    ("rows-then-slice", lambda a: a[ROW_MASK, 1:], lambda t: t[torch.from_numpy(ROW_MASK), 1:]),
    ("ellipsis-cols", lambda a: a[..., COL_MASK], lambda t: t[..., torch.from_numpy(COL_MASK)]),
    ("none-selected", lambda a: a[np.zeros(4, bool)], lambda t: t[torch.zeros(4, dtype=bool)]),
]


@pytest.mark.parametrize(("lucid_fn", "torch_fn"), [pytest.param(f, g, id=i) for i, f, g in MASKS])
def test_boolean_mask_matches_torch(lucid_fn, torch_fn):
    x = lucid.tensor(_X, requires_grad=True)
    t = torch.tensor(_X, requires_grad=True)
    out, ref = lucid_fn(x), torch_fn(t)
    assert out.shape == tuple(ref.shape)
    np.testing.assert_array_equal(out.numpy(), ref.detach().numpy())
    cotangent = np.random.default_rng(4).standard_normal(out.shape).astype(np.float32)
    out.backward(cotangent)
    ref.backward(torch.from_numpy(cotangent))
    np.testing.assert_array_equal(x.grad.numpy(), t.grad.numpy())


@pytest.mark.parametrize(
    ("index", "fragments"),
    [
        (np.ones(3, bool), ["mask has shape (3,)", "shape (4,)"]),
        (np.ones((4, 2), bool), ["(4, 2)", "(4, 3)"]),
        ((slice(None), np.ones(4, bool)), ["(4,)", "from axis 1", "(3,)"]),
        (np.ones((4, 3, 1), bool), ["too many indices"]),
        (mx.array(True), ["mask has shape ()"]),
    ],
    ids=["short", "2d-wrong", "axis1-wrong", "too-deep", "0-d"],
)
def test_boolean_mask_of_the_wrong_shape_raises(index, fragments):
    with pytest.raises(IndexError) as info:
        lucid.tensor(_X)[index]
    for fragment in fragments:
        assert fragment in str(info.value)

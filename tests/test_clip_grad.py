"""clip_grad_norm_ and clip_grad_value_ against torch.nn.utils on the same gradients."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
import torch

import lucid
from lucid.nn.utils import clip_grad_norm_, clip_grad_value_

SHAPES = [(3, 4), (5,), (2, 2, 3)]


def _grads(scale: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(scale * rng.standard_normal(s)).astype(np.float32) for s in SHAPES]


def _pair(grads: list[np.ndarray | None]) -> tuple[list[lucid.Tensor], list[torch.Tensor]]:
    """lucid and torch parameters carrying the same gradients (None: no gradient)."""
    ours, theirs = [], []
    for g in grads:
        shape = (2,) if g is None else g.shape
        p = lucid.nn.Parameter(np.zeros(shape, dtype=np.float32))
        t = torch.zeros(shape, requires_grad=True)
        if g is not None:
            p.grad = lucid.tensor(g)
            t.grad = torch.from_numpy(g.copy())
        ours.append(p)
        theirs.append(t)
    return ours, theirs


def _assert_grads_match(ours: list[lucid.Tensor], theirs: list[torch.Tensor]) -> None:
    for p, t in zip(ours, theirs, strict=True):
        if t.grad is None:
            assert p.grad is None
        else:
            np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, 0.5, math.inf, "inf"])
@pytest.mark.parametrize(
    ("scale", "max_norm"),
    [(1.0, 0.5), (1.0, 100.0), (10.0, 1.0), (1e-3, 1.0), (1.0, 0.0)],
)
def test_clip_grad_norm_matches_torch(norm_type, scale, max_norm):
    grads = _grads(scale)
    ours, theirs = _pair(grads)
    total = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=float(norm_type))
    assert isinstance(total, lucid.Tensor) and total.shape == ()
    np.testing.assert_allclose(total.item(), expected.item(), rtol=1e-5)
    _assert_grads_match(ours, theirs)


def test_clip_grad_norm_skips_missing_grads_and_accepts_generators():
    grads = [_grads(5.0)[0], None, _grads(5.0)[2]]
    ours, theirs = _pair(grads)
    total = clip_grad_norm_((p for p in ours), 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    np.testing.assert_allclose(total.item(), expected.item(), rtol=1e-5)
    _assert_grads_match(ours, theirs)


def test_clip_grad_norm_single_tensor_and_no_grads():
    (p,), (t,) = _pair([_grads(3.0)[0]])
    expected = torch.nn.utils.clip_grad_norm_(t, 1.0)
    np.testing.assert_allclose(clip_grad_norm_(p, 1.0).item(), expected.item(), rtol=1e-5)
    _assert_grads_match([p], [t])
    empty, _ = _pair([None, None])
    assert clip_grad_norm_(empty, 1.0).item() == 0.0
    assert all(p.grad is None for p in empty)


def test_clip_grad_norm_keeps_dtype():
    p = lucid.nn.Parameter(np.zeros(4, dtype=np.float16))
    p.grad = lucid.tensor(np.full(4, 10.0, dtype=np.float16))
    clip_grad_norm_([p], 1.0)
    assert p.grad.dtype == mx.float16
    np.testing.assert_allclose(p.grad.numpy().astype(np.float32), np.full(4, 0.5), rtol=1e-3)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_clip_grad_norm_error_if_nonfinite(bad):
    grads = _grads(1.0)
    grads[1][2] = bad
    ours, theirs = _pair(grads)
    before = [p.grad for p in ours]
    with pytest.raises(RuntimeError, match="non-finite|is (inf|nan)") as ours_err:
        clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    assert "error_if_nonfinite=False" in str(ours_err.value)
    assert all(p.grad is g for p, g in zip(ours, before, strict=True))  # left as it was


def test_clip_grad_norm_nonfinite_without_error_matches_torch():
    grads = _grads(1.0)
    grads[0][0, 0] = math.inf
    ours, theirs = _pair(grads)
    total = clip_grad_norm_(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert total.item() == expected.item() == math.inf
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(np.isnan(p.grad.numpy()), np.isnan(t.grad.numpy()))


@pytest.mark.parametrize("clip_value", [0.0, 0.1, 0.5, 10.0])
def test_clip_grad_value_matches_torch(clip_value):
    grads = [*_grads(1.0), None]
    ours, theirs = _pair(grads)
    assert clip_grad_value_(ours, clip_value) is None
    torch.nn.utils.clip_grad_value_(theirs, clip_value)
    _assert_grads_match(ours, theirs)


# ----------------------------------------------------------------------------- laziness


def _no_eval(*_args, **_kwargs):
    raise AssertionError("clipping evaluated an array; it must stay lazy")


@pytest.mark.parametrize(
    "clip",
    [
        lambda ps: clip_grad_norm_(ps, 0.1),
        lambda ps: clip_grad_norm_(ps, 0.1, norm_type=math.inf),
        lambda ps: clip_grad_value_(ps, 0.1),
    ],
    ids=["norm", "inf-norm", "value"],
)
def test_clipping_is_lazy(monkeypatch, clip):
    ours, _ = _pair(_grads(2.0))
    for name in ("eval", "async_eval"):
        monkeypatch.setattr(mx, name, _no_eval)
    monkeypatch.setattr(mx.array, "item", _no_eval)
    monkeypatch.setattr(mx.array, "tolist", _no_eval)
    monkeypatch.setattr(mx.array, "__array__", _no_eval, raising=False)
    clip(ours)
    monkeypatch.undo()
    assert all(np.isfinite(p.grad.numpy()).all() for p in ours)


def test_error_if_nonfinite_is_the_documented_evaluation(monkeypatch):
    ours, _ = _pair(_grads(2.0))
    monkeypatch.setattr(mx.array, "item", _no_eval)
    with pytest.raises(AssertionError, match="must stay lazy"):
        clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda ps: clip_grad_norm_(ps, -1.0), ValueError, "max_norm must be >= 0; got -1.0"),
        (lambda ps: clip_grad_norm_(ps, math.nan), ValueError, "max_norm must be >= 0; got nan"),
        (lambda ps: clip_grad_norm_(ps, 1.0, 0.0), ValueError, "norm_type must be > 0 or inf"),
        (lambda ps: clip_grad_norm_(ps, 1.0, -2), ValueError, "norm_type must be > 0 or inf"),
        (lambda ps: clip_grad_value_(ps, -0.1), ValueError, "clip_value must be >= 0; got -0.1"),
        (lambda ps: clip_grad_norm_([*ps, 3], 1.0), TypeError, r"parameters\[3\] must be a Tensor"),
    ],
)
def test_clip_rejects(call, error, match):
    ours, _ = _pair(_grads(1.0))
    before = [p.grad for p in ours]
    with pytest.raises(error, match=match):
        call(ours)
    assert all(p.grad is g for p, g in zip(ours, before, strict=True))


# ----------------------------------------------------------------------------- row-sparse
# torch 2.13 refuses sparse gradients in both functions (no sparse linalg_vector_norm or
# clamp_), so the reference is torch's clipping of the dense equivalent of the gradient
# that torch.nn.Embedding(sparse=True) produced: exactly what a sparse clip must equal.

ROWS, DIM = 7, 3
LOOKUPS = np.array([1, 4, 1, 1, 6, 4, 0])  # rows 1 and 4 repeat: their norm is not additive


def _sparse_pair(scale: float, seed: int = 0):
    """An embedding (sparse) and a linear layer, in lucid and torch with the same weights,
    after one backward of the same loss: lucid's embedding grad is a SparseGrad, torch's a
    sparse COO tensor with repeated indices."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    w = rng.standard_normal((2, DIM)).astype(np.float32)
    upstream = (scale * rng.standard_normal((len(LOOKUPS), 2))).astype(np.float32)

    emb, lin = lucid.nn.Embedding(ROWS, DIM, sparse=True), lucid.nn.Linear(DIM, 2)
    emb.weight.data, lin.weight.data, lin.bias.data = mx.array(table), mx.array(w), mx.zeros(2)
    lin(emb(LOOKUPS)).backward(upstream)

    t_emb, t_lin = torch.nn.Embedding(ROWS, DIM, sparse=True), torch.nn.Linear(DIM, 2)
    with torch.no_grad():
        t_emb.weight.copy_(torch.from_numpy(table))
        t_lin.weight.copy_(torch.from_numpy(w))
        t_lin.bias.zero_()
    t_lin(t_emb(torch.from_numpy(LOOKUPS))).backward(torch.from_numpy(upstream))
    assert t_emb.weight.grad.is_sparse and not t_emb.weight.grad.is_coalesced()
    t_emb.weight.grad = t_emb.weight.grad.to_dense()  # the reference's only change
    return [emb.weight, lin.weight, lin.bias], [t_emb.weight, t_lin.weight, t_lin.bias]


def _assert_mixed_grads_match(ours, theirs) -> None:
    assert isinstance(ours[0].grad, lucid.SparseGrad)  # still row-sparse, never densified
    assert ours[0].grad.nnz == len(LOOKUPS)
    np.testing.assert_allclose(
        np.array(ours[0].grad.to_dense()), theirs[0].grad.numpy(), rtol=1e-5, atol=1e-7
    )
    _assert_grads_match(ours[1:], theirs[1:])


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_sparse_matches_torch_on_the_dense_equivalent(norm_type, max_norm):
    ours, theirs = _sparse_pair(scale=2.0)
    total = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    np.testing.assert_allclose(total.item(), expected.item(), rtol=1e-5)
    _assert_mixed_grads_match(ours, theirs)


def test_clip_grad_norm_sparse_sums_repeats_before_the_norm():
    p = lucid.nn.Parameter(np.zeros((3, 2), dtype=np.float32))
    p.grad = lucid.SparseGrad([1, 1], np.array([[3.0, 0.0], [1.0, 0.0]], np.float32), (3, 2))
    assert clip_grad_norm_([p], 1e3).item() == pytest.approx(4.0)  # ||(4, 0)||, not 3 + 1


@pytest.mark.parametrize("clip_value", [0.0, 0.3, 1.5, 100.0])
def test_clip_grad_value_sparse_clamps_the_summed_rows(clip_value):
    ours, theirs = _sparse_pair(scale=1.0)
    clip_grad_value_(ours, clip_value)
    torch.nn.utils.clip_grad_value_(theirs, clip_value)
    _assert_mixed_grads_match(ours, theirs)


def test_sparse_clip_then_adagrad_step_matches_torch():
    """The clipped SparseGrad keeps the rows recorded at lookup and drives the row-sparse
    step; torch steps its dense equivalent (zero rows change nothing in Adagrad)."""
    ours, theirs = _sparse_pair(scale=3.0)
    clip_grad_norm_(ours, 0.5)
    assert ours[0].grad._rows is not None
    torch.nn.utils.clip_grad_norm_(theirs, 0.5)
    lucid.optim.Adagrad(ours, lr=0.1).step()
    torch.optim.Adagrad(theirs, lr=0.1).step()
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "clip",
    [lambda ps: clip_grad_norm_(ps, 0.1), lambda ps: clip_grad_value_(ps, 0.1)],
    ids=["norm", "value"],
)
def test_sparse_clipping_is_lazy(monkeypatch, clip):
    ours, _ = _sparse_pair(scale=2.0)
    for name in ("eval", "async_eval"):
        monkeypatch.setattr(mx, name, _no_eval)
    monkeypatch.setattr(mx.array, "item", _no_eval)
    monkeypatch.setattr(mx.array, "tolist", _no_eval)
    clip(ours)
    monkeypatch.undo()
    assert np.isfinite(np.array(ours[0].grad.to_dense())).all()

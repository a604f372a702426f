"""Layers, losses and functions against PyTorch with the same weights: forward values and the
gradients w.r.t. every floating input and every parameter, under a random upstream gradient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
import torch

import lucid
import lucid.nn as nn
import lucid.nn.functional as F

RTOL, ATOL = 1e-5, 1e-6  # float32: a few ulps of reordering between two implementations
_rng = np.random.default_rng(0)


def randn(*shape: int, scale: float = 1.0) -> np.ndarray:
    return np.asarray(scale * _rng.standard_normal(shape), dtype=np.float32)


def ints(high: int, *shape: int) -> np.ndarray:
    return _rng.integers(0, high, size=shape).astype(np.int64)


def _to_lucid(a: np.ndarray) -> lucid.Tensor:
    floating = np.issubdtype(a.dtype, np.floating)
    return lucid.tensor(a, requires_grad=floating)


def _to_torch(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(a.copy())
    if np.issubdtype(a.dtype, np.floating):
        t.requires_grad_(True)
    return t


def _close(actual: Any, expected: torch.Tensor, what: str, rtol: float, atol: float) -> None:
    assert actual is not None, f"{what}: lucid produced no gradient"
    actual = np.array(actual.data if isinstance(actual, lucid.Tensor) else actual)
    np.testing.assert_allclose(
        actual, expected.detach().numpy(), rtol=rtol, atol=atol, err_msg=what
    )


def _copy_weights(lucid_mod: nn.Module, torch_mod: torch.nn.Module) -> None:
    """Randomise lucid's parameters (so no init value hides a bug) and load them into torch."""
    for p in lucid_mod.parameters():
        p.data = mx.array(randn(*p.shape))
    state = {k: torch.from_numpy(np.array(v)) for k, v in lucid_mod.state_dict().items()}
    torch_mod.load_state_dict(state, strict=True)


def check_parity(
    lucid_fn: Callable[..., lucid.Tensor],
    torch_fn: Callable[..., torch.Tensor],
    inputs: list[np.ndarray],
    rtol: float = RTOL,
    atol: float = ATOL,
) -> None:
    """Same inputs (and weights, for modules) through both; compare outputs and all grads."""
    if isinstance(lucid_fn, nn.Module):
        _copy_weights(lucid_fn, torch_fn)
    xs, ts = [_to_lucid(a) for a in inputs], [_to_torch(a) for a in inputs]
    out, ref = lucid_fn(*xs), torch_fn(*ts)
    _close(out, ref, "output", rtol, atol)

    upstream = randn(*ref.shape)
    out.backward(upstream)
    ref.backward(torch.from_numpy(upstream))
    for i, (x, t) in enumerate(zip(xs, ts, strict=True)):
        if t.requires_grad:
            _close(x.grad, t.grad, f"grad of input {i}", rtol, atol)
    if isinstance(lucid_fn, nn.Module):
        ref_grads = dict(torch_fn.named_parameters())
        for name, p in lucid_fn.named_parameters():
            _close(p.grad, ref_grads[name].grad, f"grad of {name}", rtol, atol)


def _mlp(lib: Any) -> Any:
    return lib.Sequential(
        lib.Linear(6, 8),
        lib.GELU(),
        lib.LayerNorm(8),
        lib.Linear(8, 8),
        lib.Tanh(),
        lib.Linear(8, 3),
    )


LAYERS = [
    ("linear", lambda lib: lib.Linear(4, 3), [randn(5, 4)]),
    ("linear_batched", lambda lib: lib.Linear(4, 3), [randn(2, 5, 4)]),
    ("linear_vector", lambda lib: lib.Linear(4, 3), [randn(4)]),
    ("linear_no_bias", lambda lib: lib.Linear(4, 3, bias=False), [randn(5, 4)]),
    ("embedding", lambda lib: lib.Embedding(7, 4), [ints(7, 3, 5)]),
    ("embedding_repeats", lambda lib: lib.Embedding(3, 2), [np.array([0, 2, 2, 2, 0])]),
    ("embedding_padding", lambda lib: lib.Embedding(7, 4, padding_idx=2), [ints(7, 4, 6)]),
    ("embedding_neg_padding", lambda lib: lib.Embedding(5, 3, padding_idx=-1), [ints(5, 20)]),
    ("relu", lambda lib: lib.ReLU(), [randn(4, 5)]),
    ("tanh", lambda lib: lib.Tanh(), [randn(4, 5, scale=3)]),
    ("sigmoid", lambda lib: lib.Sigmoid(), [randn(4, 5, scale=3)]),
    ("gelu", lambda lib: lib.GELU(), [randn(4, 5, scale=3)]),
    ("gelu_tanh", lambda lib: lib.GELU(approximate="tanh"), [randn(4, 5, scale=3)]),
    ("layer_norm", lambda lib: lib.LayerNorm(6), [randn(4, 6, scale=3)]),
    ("layer_norm_2d", lambda lib: lib.LayerNorm((3, 4)), [randn(2, 3, 4)]),
    ("layer_norm_eps", lambda lib: lib.LayerNorm(5, eps=1e-2), [randn(3, 5, scale=0.1)]),
    ("layer_norm_no_bias", lambda lib: lib.LayerNorm(6, bias=False), [randn(4, 6)]),
    ("layer_norm_plain", lambda lib: lib.LayerNorm(6, elementwise_affine=False), [randn(4, 6)]),
    ("flatten", lambda lib: lib.Flatten(), [randn(2, 3, 4)]),
    ("identity", lambda lib: lib.Identity(), [randn(2, 3)]),
    ("dropout_eval", lambda lib: lib.Dropout(0.3).eval(), [randn(4, 5)]),
    ("mlp", _mlp, [randn(5, 6)]),
]


@pytest.mark.parametrize(("name", "build", "inputs"), LAYERS, ids=[c[0] for c in LAYERS])
def test_layer_matches_torch(name: str, build: Callable, inputs: list[np.ndarray]) -> None:
    check_parity(build(nn), build(torch.nn), inputs)


def _ce_targets(n: int, c: int, ignore: int | None = None) -> np.ndarray:
    t = ints(c, n)
    if ignore is not None:
        t[::3] = ignore
    return t


_LOGITS = randn(6, 5, scale=3)
_CLASS_WEIGHTS = _rng.uniform(0.2, 3.0, size=5).astype(np.float32)


def _ce(lib: Any, reduction: str, weighted: bool = False, **kw: Any) -> Any:
    """CrossEntropyLoss of either library; class weights given as each one takes them."""
    if weighted:
        w = _CLASS_WEIGHTS
        kw["weight"] = torch.from_numpy(w.copy()) if lib is torch.nn else w
    return lib.CrossEntropyLoss(reduction=reduction, **kw)


# weight, label_smoothing and ignore_index in every combination, with ignored targets
# both outside the classes (-100, -1) and inside them (0, a class whose rows drop out)
_CE_CASES = [
    ("cross_entropy_weight", dict(weighted=True), _ce_targets(6, 5)),
    ("cross_entropy_smooth", dict(label_smoothing=0.1), _ce_targets(6, 5)),
    ("cross_entropy_smooth_full", dict(label_smoothing=1.0), _ce_targets(6, 5)),
    ("cross_entropy_weight_smooth", dict(weighted=True, label_smoothing=0.25), _ce_targets(6, 5)),
    ("cross_entropy_weight_ignore", dict(weighted=True), _ce_targets(6, 5, -100)),
    ("cross_entropy_smooth_ignore", dict(label_smoothing=0.2), _ce_targets(6, 5, -100)),
    (
        "cross_entropy_weight_smooth_ignore",
        dict(weighted=True, label_smoothing=0.3, ignore_index=-1),
        _ce_targets(6, 5, -1),
    ),
    (
        "cross_entropy_ignore_a_class",
        dict(weighted=True, label_smoothing=0.1, ignore_index=0),
        _ce_targets(6, 5, 0),
    ),
    (  # the mean divides by zero: NaN, as in torch
        "cross_entropy_all_ignored",
        dict(weighted=True, label_smoothing=0.1),
        np.full(6, -100, dtype=np.int64),
    ),
]
_BCE_LOGITS = np.array([[-60.0, -3.0, 0.0, 0.0], [0.5, 2.0, 30.0, 90.0]], dtype=np.float32)
_PROBS = _rng.uniform(size=(2, 4)).astype(np.float32)

LOSSES = [
    (name, reduction, build, inputs)
    for reduction in ("mean", "sum", "none")
    for name, build, inputs in [
        ("mse", lambda lib, r: lib.MSELoss(reduction=r), [randn(4, 3), randn(4, 3)]),
        ("l1", lambda lib, r: lib.L1Loss(reduction=r), [randn(4, 3), randn(4, 3)]),
        ("cross_entropy", lambda lib, r: lib.CrossEntropyLoss(reduction=r), [_LOGITS, ints(5, 6)]),
        (
            "cross_entropy_ignore",
            lambda lib, r: lib.CrossEntropyLoss(reduction=r, ignore_index=-1),
            [_LOGITS, _ce_targets(6, 5, ignore=-1)],
        ),
        *[
            (name, lambda lib, r, kw=kw: _ce(lib, r, **kw), [_LOGITS, targets])
            for name, kw, targets in _CE_CASES
        ],
        ("bce_logits", lambda lib, r: lib.BCEWithLogitsLoss(reduction=r), [_BCE_LOGITS, _PROBS]),
        (
            "bce_logits_hard",
            lambda lib, r: lib.BCEWithLogitsLoss(reduction=r),
            [randn(5, 3, scale=4), (_rng.uniform(size=(5, 3)) > 0.5).astype(np.float32)],
        ),
    ]
]


@pytest.mark.parametrize(
    ("name", "reduction", "build", "inputs"), LOSSES, ids=[f"{c[0]}-{c[1]}" for c in LOSSES]
)
def test_loss_matches_torch(name: str, reduction: str, build: Callable, inputs: list) -> None:
    check_parity(build(nn, reduction), build(torch.nn, reduction), inputs)


def test_l1_gradient_at_zero_difference_is_zero_like_torch() -> None:
    x = randn(3, 4)
    check_parity(nn.L1Loss(), torch.nn.L1Loss(), [x, x.copy()])


def test_mse_gradient_flows_into_target_like_torch() -> None:
    check_parity(F.mse_loss, torch.nn.functional.mse_loss, [randn(3, 4), randn(3, 4)])


FUNCTIONS = [
    ("softmax_last", lambda x: F.softmax(x), lambda x: torch.softmax(x, -1), [randn(3, 5)]),
    ("softmax_0", lambda x: F.softmax(x, 0), lambda x: torch.softmax(x, 0), [randn(3, 5)]),
    ("log_softmax", lambda x: F.log_softmax(x), lambda x: torch.log_softmax(x, -1), [randn(3, 5)]),
    (
        "log_softmax_large",
        lambda x: F.log_softmax(x, 1),
        lambda x: torch.log_softmax(x, 1),
        [randn(2, 4, scale=100)],
    ),
    (
        "linear",
        F.linear,
        torch.nn.functional.linear,
        [randn(5, 4), randn(3, 4), randn(3)],
    ),
    (
        "layer_norm",
        lambda x, w, b: F.layer_norm(x, 4, w, b),
        lambda x, w, b: torch.nn.functional.layer_norm(x, (4,), w, b),
        [randn(3, 4), randn(4), randn(4)],
    ),
    (
        "embedding",
        F.embedding,
        torch.nn.functional.embedding,
        [ints(6, 2, 3), randn(6, 4)],
    ),
    (
        "cross_entropy_logits_grad",
        F.cross_entropy,
        torch.nn.functional.cross_entropy,
        [randn(4, 7, scale=10), ints(7, 4)],
    ),
    (
        "bce_target_grad",
        F.binary_cross_entropy_with_logits,
        torch.nn.functional.binary_cross_entropy_with_logits,
        [randn(4, 2), _rng.uniform(size=(4, 2)).astype(np.float32)],
    ),
]


@pytest.mark.parametrize(("name", "fn", "ref", "inputs"), FUNCTIONS, ids=[c[0] for c in FUNCTIONS])
def test_function_matches_torch(name: str, fn: Callable, ref: Callable, inputs: list) -> None:
    check_parity(fn, ref, inputs)

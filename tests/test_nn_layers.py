"""Layer behaviour that has no PyTorch twin (dropout masks come from another generator),
argument validation, target types for losses, dtypes, and the no-``mx.eval`` rule."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F

# --------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_mask_scale_rate_and_gradient(p: float) -> None:
    lucid.manual_seed(0)
    x = lucid.ones(200, 500, requires_grad=True)
    y = nn.Dropout(p)(x)
    out = y.numpy()
    scale = np.float32(1 / (1 - p))
    assert set(np.unique(out).tolist()) <= {0.0, float(scale)}
    assert abs((out == 0).mean() - p) < 0.01  # 1e5 Bernoulli draws: std of the rate < 0.002
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), out)  # d(x * mask)/dx = mask, x = 1


@pytest.mark.parametrize(("p", "train"), [(0.5, False), (0.0, True), (1.0, False)])
def test_dropout_is_identity_in_eval_or_at_zero(p: float, train: bool) -> None:
    x = lucid.randn(3, 4)
    layer = nn.Dropout(p).train(train)
    assert layer(x) is x


def test_dropout_one_zeroes_everything() -> None:
    x = lucid.randn(3, 4, requires_grad=True)
    y = F.dropout(x, 1.0)
    assert not np.any(y.numpy())
    y.sum().backward()
    assert not np.any(x.grad.numpy())


def test_dropout_is_reproducible_under_manual_seed() -> None:
    x = lucid.ones(64)
    lucid.manual_seed(3)
    a = F.dropout(x, 0.5).numpy()
    lucid.manual_seed(3)
    b = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- embedding


def test_embedding_padding_row_is_zero_at_init_and_never_gets_gradient() -> None:
    emb = nn.Embedding(6, 3, padding_idx=-2)
    assert emb.padding_idx == 4
    assert not np.any(emb.weight.numpy()[4]) and np.all(emb.weight.numpy()[:4] != 0)
    emb.weight.data = mx.ones((6, 3))  # lookups return the row's current value
    idx = np.array([[4, 1], [4, 4]])
    out = emb(idx)
    np.testing.assert_array_equal(out.numpy(), np.ones((2, 2, 3)))
    out.sum().backward()
    expected = np.zeros((6, 3), np.float32)
    expected[1] = 1
    np.testing.assert_array_equal(emb.weight.grad.numpy(), expected)


@pytest.mark.parametrize(
    "indices",
    [np.array([1, 2]), mx.array([1, 2]), lucid.tensor([1, 2]), [1, 2]],
    ids=["numpy", "mlx", "tensor", "list"],
)
def test_embedding_accepts_index_containers(indices: Any) -> None:
    emb = nn.Embedding(4, 2, sparse=True)
    assert emb.sparse
    np.testing.assert_array_equal(emb(indices).numpy(), emb.weight.numpy()[[1, 2]])


# --------------------------------------------------------------------------- losses: target types


def _same_loss(loss: nn.Module, x: np.ndarray, targets: list[Any]) -> None:
    values = [loss(lucid.tensor(x), t).item() for t in targets]
    np.testing.assert_allclose(values, values[0], rtol=0, atol=0)


def test_cross_entropy_target_types() -> None:
    t = np.array([0, 2, 1])
    _same_loss(
        nn.CrossEntropyLoss(),
        np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32),
        [t, t.astype(np.int32), mx.array(t), lucid.tensor(t), t.tolist()],
    )


@pytest.mark.parametrize("loss", [nn.MSELoss(), nn.L1Loss(), nn.BCEWithLogitsLoss()])
def test_regression_target_types(loss: nn.Module) -> None:
    y = np.random.default_rng(1).uniform(size=(2, 3))
    x = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)
    _same_loss(loss, x, [y, y.astype(np.float32), mx.array(y.astype(np.float32)), lucid.tensor(y)])


def test_cross_entropy_all_ignored_is_nan_like_torch() -> None:
    loss = F.cross_entropy(lucid.randn(2, 3), np.array([-100, -100]))
    assert np.isnan(loss.item())


# --------------------------------------------------------------------------- validation

VALIDATION = [
    ("linear_in", lambda: nn.Linear(-1, 2), ValueError, ["in_features", "-1", "positive int"]),
    ("linear_out", lambda: nn.Linear(2, 0), ValueError, ["out_features", "0"]),
    ("linear_float", lambda: nn.Linear(2.5, 3), ValueError, ["in_features", "2.5"]),
    ("linear_bias", lambda: nn.Linear(2, 3, bias="yes"), TypeError, ["bias", "'yes'", "bool"]),
    ("embedding_num", lambda: nn.Embedding(0, 3), ValueError, ["num_embeddings", "0"]),
    ("embedding_pad", lambda: nn.Embedding(5, 3, padding_idx=5), ValueError, ["padding_idx", "5"]),
    ("embedding_sparse", lambda: nn.Embedding(5, 3, sparse=1), TypeError, ["sparse", "1"]),
    ("dropout_high", lambda: nn.Dropout(p=1.5), ValueError, ["p", "1.5", "[0, 1]"]),
    ("dropout_negative", lambda: nn.Dropout(p=-0.1), ValueError, ["p", "-0.1"]),
    ("dropout_fn", lambda: F.dropout(lucid.ones(2), p=2), ValueError, ["p", "2"]),
    ("layer_norm_shape", lambda: nn.LayerNorm(0), ValueError, ["normalized_shape", "0"]),
    ("layer_norm_eps", lambda: nn.LayerNorm(4, eps=-1.0), ValueError, ["eps", "-1.0"]),
    ("gelu_mode", lambda: nn.GELU("fast"), ValueError, ["approximate", "'fast'", "'tanh'"]),
    ("flatten_axis", lambda: nn.Flatten(start_axis=1.0), TypeError, ["start_axis", "1.0"]),
    ("mse_reduction", lambda: nn.MSELoss(reduction="avg"), ValueError, ["reduction", "'avg'"]),
    ("ce_reduction", lambda: nn.CrossEntropyLoss("max"), ValueError, ["reduction", "'max'"]),
    ("ce_ignore", lambda: nn.CrossEntropyLoss(ignore_index=None), TypeError, ["ignore_index"]),
    ("ce_smoothing", lambda: nn.CrossEntropyLoss(label_smoothing=1.5), ValueError, ["1.5"]),
    ("ce_weight_int", lambda: nn.CrossEntropyLoss(weight=[1, 2]), ValueError, ["weight", "int32"]),
    (
        "ce_weight_shape",
        lambda: F.cross_entropy(lucid.ones(2, 3), [0, 1], weight=np.ones(4, np.float32)),
        ValueError,
        ["weight", "(3,)", "(4,)"],
    ),
    (
        "ce_fn_smoothing",
        lambda: F.cross_entropy(lucid.ones(2, 3), [0, 1], label_smoothing=-0.1),
        ValueError,
        ["label_smoothing", "-0.1"],
    ),
    (
        "fn_reduction",
        lambda: F.l1_loss(lucid.ones(2), lucid.ones(2), reduction="avg"),
        ValueError,
        ["reduction", "'avg'", "'mean'"],
    ),
    (
        "ce_float_target",
        lambda: F.cross_entropy(lucid.ones(2, 3), np.array([0.0, 1.0])),
        TypeError,
        ["integer", "float32"],
    ),
    (
        "ce_target_shape",
        lambda: F.cross_entropy(lucid.ones(2, 3), np.array([[0], [1]])),
        ValueError,
        ["target shape (2, 1)", "(2,)"],
    ),
    (
        "ce_input_rank",
        lambda: F.cross_entropy(lucid.ones(3), np.array([0])),
        ValueError,
        ["(N, C)", "(3,)"],
    ),
    (
        "mse_shape",
        lambda: F.mse_loss(lucid.ones(2, 3), np.ones(3)),
        ValueError,
        ["target shape (3,)", "(2, 3)"],
    ),
    (
        "bce_shape",
        lambda: F.binary_cross_entropy_with_logits(lucid.ones(2), np.ones(3)),
        ValueError,
        ["target shape (3,)"],
    ),
    (
        "layer_norm_input",
        lambda: F.layer_norm(lucid.ones(2, 3), 4),
        ValueError,
        ["(2, 3)", "(4,)"],
    ),
    (
        "embedding_float_index",
        lambda: nn.Embedding(3, 2)(np.array([0.0, 1.0])),
        TypeError,
        ["integer indices", "float32"],
    ),
]


@pytest.mark.parametrize(
    ("case", "action", "error", "fragments"), VALIDATION, ids=[c[0] for c in VALIDATION]
)
def test_invalid_arguments_fail_early_and_clearly(
    case: str, action: Any, error: type, fragments: list[str]
) -> None:
    with pytest.raises(error) as info:
        action()
    for fragment in fragments:
        assert fragment in str(info.value)


# ------------------------------------------------------------------ dtypes, shapes, laziness


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_layers_keep_their_dtype(dtype: mx.Dtype) -> None:
    model = nn.Sequential(nn.Linear(3, 4, dtype=dtype), nn.LayerNorm(4, dtype=dtype))
    emb = nn.Embedding(5, 3, padding_idx=0, dtype=dtype)
    assert all(p.dtype == dtype for p in [*model.parameters(), *emb.parameters()])
    assert model(emb(np.array([0, 1]))).dtype == dtype


def test_flatten_and_identity() -> None:
    x = lucid.randn(2, 3, 4, 5)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 1)(x).shape == (6, 4, 5)
    assert nn.Identity(7, key="ignored")(x) is x


def test_forward_and_backward_never_call_mx_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Sequential(
        nn.Embedding(10, 8, padding_idx=0),
        nn.LayerNorm(8),
        nn.Dropout(0.2),
        nn.Linear(8, 8),
        nn.GELU(),
        nn.Flatten(),
        nn.Linear(24, 5),
    )
    idx, target = np.array([[0, 3, 4], [5, 6, 0]]), np.array([1, 4])

    def forbidden(*args: Any) -> None:
        raise AssertionError("mx.eval called during forward/backward")

    monkeypatch.setattr(mx, "eval", forbidden)
    logits = model(idx)
    loss = F.cross_entropy(logits, target) + F.binary_cross_entropy_with_logits(
        logits, np.zeros((2, 5))
    )
    loss = loss + F.mse_loss(logits, np.zeros((2, 5))) + F.l1_loss(logits, np.zeros((2, 5)))
    loss.backward()
    monkeypatch.undo()
    assert all(p.grad is not None for p in model.parameters())

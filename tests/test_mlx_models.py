"""lucid optimizers on ``mlx.nn`` models: parameter trees, ``update(model, grads)``,
``apply_gradients``, parameter groups by predicate, checkpoints, and refusals.

References: ``mlx.optimizers`` (same process, same model, same data) where its rule has
the same definition as lucid's, checked line by line against MLX 0.32's
``apply_single``: Adagrad (eps outside the square root, as lucid), SGD with momentum
and dampening 0 (MLX's first buffer is ``(1 - dampening) g``, torch's and lucid's ``g``:
equal only at dampening 0) and coupled weight decay, Nesterov, RMSprop (alpha, eps
outside the root), Adam and AdamW with ``bias_correction=True`` (MLX's default is
False; torch and lucid correct), and Lion. ``mlx.optimizers.MultiOptimizer`` is the
reference for parameter groups.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as mo
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map, tree_unflatten

import lucid
import lucid.optim as optim

STEPS = 50


class Net(nn.Module):
    """A small MLP with a norm, a bias-free layer and a bias, 7 parameter arrays."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.norm = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 16, bias=False)
        self.head = nn.Linear(16, 3)

    def __call__(self, x: mx.array) -> mx.array:
        h = self.norm(nn.relu(self.fc1(x)))
        return self.head(nn.relu(self.fc2(h)))


def make_model(seed: int = 0) -> Net:
    mx.random.seed(seed)
    model = Net()
    mx.eval(model.parameters())
    return model


def _data(seed: int = 1) -> tuple[mx.array, mx.array]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, 6), dtype=np.float32)
    y = rng.standard_normal((64, 3), dtype=np.float32)
    return mx.array(x), mx.array(y)


X, Y = _data()


def loss_fn(model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
    return nn.losses.mse_loss(model(x), y)


def train(model: nn.Module, opt: Any, steps: int, start: int = 0) -> list[float]:
    """``steps`` full-batch steps (the batch scaled by the step number, so that the
    gradients change more than the parameters alone make them); the losses."""
    value_and_grad = nn.value_and_grad(model, loss_fn)
    losses = []
    for i in range(start, start + steps):
        loss, grads = value_and_grad(model, X * (1 + 0.01 * i), Y)
        opt.update(model, grads)
        mx.eval(model.parameters(), loss)
        losses.append(loss.item())
    return losses


def flat(model_or_tree: Any) -> dict[str, np.ndarray]:
    tree = model_or_tree.parameters() if isinstance(model_or_tree, nn.Module) else model_or_tree
    return {k: np.array(v) for k, v in tree_flatten(tree)}


def assert_same_params(got: dict[str, np.ndarray], want: dict[str, np.ndarray], **tol: float):
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], err_msg=k, **tol)


# ------------------------------------------------------------------------------ parity

# float32, 50 steps. rtol 1e-5 (the bound) for losses and parameters; the
# absolute part covers parameters near 0, whose error is that of the updates.
RTOL, ATOL = 1e-5, 1e-6
# MLX computes Adam's bias corrections 1 - β^t in float32 (0.999f is 0.99900001: 1e-5
# relative in 1 - β2 at t = 1), lucid in float64 on the host, as torch does. Measured on
# this model: 5.3e-6 apart after 50 steps (2.4e-6 after 10); with MLX's corrections
# computed in float64 instead, 3.6e-7 (6e-8 after 10).
ADAM_ATOL = 1e-5

Case = tuple[str, Callable[[Any], optim.Optimizer], Callable[[], mo.Optimizer], float]
PARITY: list[Case] = [
    ("Adagrad", lambda t: optim.Adagrad(t, lr=0.05, eps=1e-8), lambda: mo.Adagrad(0.05, eps=1e-8),
     ATOL),
    ("SGD momentum", lambda t: optim.SGD(t, lr=0.05, momentum=0.9, weight_decay=0.01),
     lambda: mo.SGD(0.05, momentum=0.9, weight_decay=0.01), ATOL),
    ("SGD nesterov", lambda t: optim.SGD(t, lr=0.05, momentum=0.9, nesterov=True),
     lambda: mo.SGD(0.05, momentum=0.9, nesterov=True), ATOL),
    ("RMSprop", lambda t: optim.RMSprop(t, lr=3e-3, alpha=0.9, eps=1e-8),
     lambda: mo.RMSprop(3e-3, alpha=0.9, eps=1e-8), ATOL),
    ("Adam", lambda t: optim.Adam(t, lr=1e-2, betas=(0.9, 0.999), eps=1e-8),
     lambda: mo.Adam(1e-2, betas=[0.9, 0.999], eps=1e-8, bias_correction=True), ADAM_ATOL),
    ("AdamW", lambda t: optim.AdamW(t, lr=1e-2, weight_decay=0.1),
     lambda: mo.AdamW(1e-2, weight_decay=0.1, bias_correction=True), ADAM_ATOL),
    ("Lion", lambda t: optim.Lion(t, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1),
     lambda: mo.Lion(1e-3, betas=[0.9, 0.99], weight_decay=0.1), ATOL),
    # a schedule as lr: MLX calls it with its step count before the update (0 first), as
    # lucid does with the step count before the parameter's update
    ("Adagrad cosine schedule",
     lambda t: optim.Adagrad(t, lr=mo.cosine_decay(0.1, STEPS, 0.01), eps=1e-8),
     lambda: mo.Adagrad(mo.cosine_decay(0.1, STEPS, 0.01), eps=1e-8), ATOL),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "make_lucid", "make_mlx", "atol"), PARITY, ids=[c[0] for c in PARITY]
)
def test_matches_mlx_optimizers(
    name: str, make_lucid: Callable, make_mlx: Callable, atol: float
) -> None:
    ours, theirs = make_model(), make_model()
    opt = make_lucid(ours.trainable_parameters())
    got = train(ours, opt, STEPS)
    want = train(theirs, make_mlx(), STEPS)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    assert got[-1] < got[0]
    assert_same_params(flat(ours), flat(theirs), rtol=RTOL, atol=atol)


def test_frozen_parameters_stay_and_the_rest_matches_mlx() -> None:
    ours, theirs = make_model(), make_model()
    for m in (ours, theirs):
        m.norm.freeze()
        m.fc1.freeze(keys=["bias"])
    frozen = {k: v for k, v in flat(ours).items() if k.startswith("norm") or k == "fc1.bias"}
    opt = optim.Adam(ours.trainable_parameters(), lr=1e-2)
    assert len(opt.param_groups[0]["params"]) == 7 - 3
    np.testing.assert_allclose(
        train(ours, opt, 20), train(theirs, mo.Adam(1e-2, bias_correction=True), 20), rtol=RTOL
    )
    now = flat(ours)
    assert_same_params({k: now[k] for k in frozen}, frozen, rtol=0, atol=0)
    assert_same_params(now, flat(theirs), rtol=RTOL, atol=ADAM_ATOL)


def test_values_changed_outside_are_read_before_the_step() -> None:
    """``model.update`` by the user between steps: the next step starts from the new
    values (with its state kept), as MLX's stateless ``apply_single`` does."""
    ours, theirs = make_model(), make_model()
    opt = optim.Adagrad(ours.trainable_parameters(), lr=0.05, eps=1e-8)
    ref = mo.Adagrad(0.05, eps=1e-8)
    train(ours, opt, 5)
    train(theirs, ref, 5)
    for m in (ours, theirs):
        m.update(tree_map(lambda a: 0.5 * a, m.parameters()))
        m.head.weight = m.head.weight + 0.25  # an attribute assigned anew
    np.testing.assert_allclose(train(ours, opt, 5, 5), train(theirs, ref, 5, 5), rtol=RTOL)
    assert_same_params(flat(ours), flat(theirs), rtol=RTOL, atol=ATOL)


def test_apply_gradients_returns_the_tree_of_the_gradients() -> None:
    model = make_model()
    before = flat(model)
    opt = optim.SGD(model.trainable_parameters(), lr=0.1)
    ref = mo.SGD(0.1)
    _, grads = nn.value_and_grad(model, loss_fn)(model, X, Y)
    part = {"head": grads["head"]}  # a subset: only these leaves are updated
    got = opt.apply_gradients(part, model)
    want = ref.apply_gradients(part, model)
    assert flat(model).keys() == before.keys()
    assert_same_params(flat(model), before, rtol=0, atol=0)  # the model is not touched
    assert_same_params(flat(got), flat(want), rtol=1e-6)
    assert [k for k, _ in tree_flatten(got)] == ["head.weight", "head.bias"]
    model.update(got)
    assert_same_params({k: v for k, v in flat(model).items() if not k.startswith("head")},
                       {k: v for k, v in before.items() if not k.startswith("head")},
                       rtol=0, atol=0)  # fmt: skip


def test_step_is_traced_once() -> None:
    model = make_model()
    opt = optim.AdamW(model.trainable_parameters(), lr=mo.linear_schedule(1e-2, 1e-3, 30))
    train(model, opt, 2)
    traces = opt.trace_count
    train(model, opt, 20, 2)
    assert opt.trace_count == traces


# ------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("through", ["state_dict", "lucid.save"])
def test_resume_equals_an_uninterrupted_run(through: str, tmp_path) -> None:
    def make(tree: Any) -> optim.Optimizer:
        groups = optim.param_groups(tree, [(lambda path, a: a.ndim < 2, {"weight_decay": 0.0})])
        return optim.AdamW(groups, lr=mo.cosine_decay(1e-2, 40), weight_decay=0.1)

    whole = make_model()
    whole_opt = make(whole.trainable_parameters())
    train(whole, whole_opt, 20)
    checkpoint = {"model": dict(tree_flatten(whole.parameters())), "optim": whole_opt.state_dict()}
    if through == "lucid.save":
        lucid.save(checkpoint, tmp_path / "ckpt.lucid")
        checkpoint = lucid.load(tmp_path / "ckpt.lucid")
    want = train(whole, whole_opt, 20, 20)

    resumed = make_model(seed=7)  # other values, replaced by the checkpoint's
    opt = make(resumed.trainable_parameters())  # built before the weights are loaded
    resumed.update(tree_unflatten(list(checkpoint["model"].items())))
    opt.load_state_dict(checkpoint["optim"])
    got = train(resumed, opt, 20, 20)
    np.testing.assert_array_equal(got, want)
    assert_same_params(flat(resumed), flat(whole), rtol=0, atol=0)


# ------------------------------------------------------------------------ param groups


def test_param_groups_by_predicate_match_a_hand_split_reference() -> None:
    """No weight decay on biases and norms (the 1-D parameters), against MLX's
    MultiOptimizer with the same split."""
    ours, theirs = make_model(), make_model()
    no_decay = lambda path, a: a.ndim < 2  # noqa: E731
    groups = optim.param_groups(ours.trainable_parameters(), [(no_decay, {"weight_decay": 0.0})])
    assert [list(g["params"]) for g in groups] == [
        ["fc1.weight", "fc2.weight", "head.weight"],
        ["fc1.bias", "norm.weight", "norm.bias", "head.bias"],
    ]
    opt = optim.AdamW(groups, lr=1e-2, weight_decay=0.5)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    ref = mo.MultiOptimizer(
        [mo.AdamW(1e-2, weight_decay=0.0, bias_correction=True),
         mo.AdamW(1e-2, weight_decay=0.5, bias_correction=True)],
        [no_decay],
    )  # fmt: skip
    np.testing.assert_allclose(train(ours, opt, 30), train(theirs, ref, 30), rtol=RTOL)
    assert_same_params(flat(ours), flat(theirs), rtol=RTOL, atol=ADAM_ATOL)


def test_param_groups_first_rule_wins_and_groups_keep_tree_order() -> None:
    tree = make_model().trainable_parameters()
    groups = optim.param_groups(
        tree,
        [(lambda p, a: p.startswith("norm"), {"lr": 0.1}), (lambda p, a: a.ndim < 2, {"lr": 0.2})],
    )
    assert [(list(g["params"]), g.get("lr")) for g in groups] == [
        (["fc1.weight", "fc2.weight", "head.weight"], None),
        (["norm.weight", "norm.bias"], 0.1),
        (["fc1.bias", "head.bias"], 0.2),
    ]
    everything = optim.param_groups(tree, [(lambda p, a: True, {"lr": 0.3})])
    assert len(everything) == 1 and everything[0]["lr"] == 0.3
    opt = optim.SGD(everything, lr=0.01)
    assert [type(p) for p in opt.param_groups[0]["params"]] == [lucid.nn.Parameter] * 7


BAD_RULES = [
    ([(lambda p, a: p.endswith("bais"), {"weight_decay": 0.0})], ValueError,
     r"rules\[0\] takes no"),
    ({"bias": {"weight_decay": 0.0}}, TypeError, "list of"),
    ([(lambda p, a: True,)], TypeError, r"rules\[0\] must be a \(predicate, dict\) pair"),
    ([("bias", {"weight_decay": 0.0})], TypeError, "predicate must be callable"),
    ([(lambda p, a: True, {"params": []})], TypeError, "without 'params'"),
]  # fmt: skip


@pytest.mark.parametrize(("rules", "error", "words"), BAD_RULES)
def test_param_groups_refuses_bad_rules(rules: Any, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        optim.param_groups(make_model().trainable_parameters(), rules)


def test_param_groups_refuses_a_module() -> None:
    with pytest.raises(TypeError, match=r"trainable_parameters\(\)"):
        optim.param_groups(make_model(), [])


# ---------------------------------------------------------------------------- refusals


def _int_leaf() -> dict:
    return {"w": mx.zeros(3), "count": mx.array([1, 2])}


BAD_TREES = [
    pytest.param(lambda: make_model(), TypeError, r"trainable_parameters\(\)", id="module"),
    pytest.param(_int_leaf, TypeError, "'count' has dtype mlx.core.int32", id="int_leaf"),
    pytest.param(lambda: {"w": mx.zeros(3), "s": [1.0]}, TypeError, "'s.0' is a float",
                 id="number_leaf"),
    pytest.param(lambda: {"a": {}, "b": []}, ValueError, "no arrays", id="empty"),
    pytest.param(lambda: [{"params": {"w": mx.zeros(2)}}, {"params": {"w": mx.zeros(2)}}],
                 ValueError, "'w' is already in another parameter group", id="same_path_twice"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "error", "words"), BAD_TREES)
def test_bad_trees_refused_at_construction(make: Callable, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        optim.Adam(make())


def _grads() -> dict:
    model = make_model()
    return nn.value_and_grad(model, loss_fn)(model, X, Y)[1]


def _with(tree: dict, path: str, value: Any) -> dict:
    items = dict(tree_flatten(tree))
    items[path] = value
    return tree_unflatten(list(items.items()))


BAD_GRADS = [  # (gradient tree from the good one, error, words)
    pytest.param(lambda g: _with(g, "extra.weight", mx.zeros(3)), ValueError,
                 "'extra.weight', which is not one of the optimizer's 7", id="unknown_path"),
    pytest.param(lambda g: _with(g, "head.bias", mx.zeros(4)), ValueError,
                 r"'head.bias' has shape \(4,\) and dtype mlx.core.float32; the parameter has "
                 r"\(3,\)", id="shape"),
    pytest.param(lambda g: _with(g, "fc1.bias", g["fc1"]["bias"].astype(mx.float16)),
                 ValueError, "'fc1.bias' has shape .*float16; the parameter has .*float32",
                 id="dtype"),
    pytest.param(lambda g: _with(g, "norm.weight", "x"), TypeError,
                 "gradients: 'norm.weight' is a str; expected an mx.array", id="not_an_array"),
]  # fmt: skip


def _snapshot(model: nn.Module, opt: optim.Optimizer) -> tuple[dict, dict, list]:
    sd = opt.state_dict()
    state = {i: {k: np.array(v) for k, v in s.items()} for i, s in sd["state"].items()}
    inner = [(np.array(p.data), p.grad) for g in opt.param_groups for p in g["params"]]
    return flat(model), state, inner


def _assert_unchanged(before: tuple, after: tuple) -> None:
    assert_same_params(after[0], before[0], rtol=0, atol=0)
    assert after[1].keys() == before[1].keys()
    for i in before[1]:
        assert_same_params(after[1][i], before[1][i], rtol=0, atol=0)
    for (d0, g0), (d1, g1) in zip(before[2], after[2], strict=True):
        np.testing.assert_array_equal(d1, d0)
        assert g1 is g0


@pytest.mark.parametrize(("make", "error", "words"), BAD_GRADS)
def test_bad_gradient_tree_changes_nothing(make: Callable, error: type, words: str) -> None:
    model = make_model()
    opt = optim.Adam(model.trainable_parameters(), lr=1e-2)
    train(model, opt, 2)
    model.update(tree_map(lambda a: a + 1, model.parameters()))  # to be read by the next step
    before = _snapshot(model, opt)
    with pytest.raises(error, match=words):
        opt.update(model, make(_grads()))
    _assert_unchanged(before, _snapshot(model, opt))
    train(model, opt, 1, 2)  # and it still works


def test_a_step_that_fails_changes_nothing() -> None:
    """A schedule that returns a bad value at step 2 stops the step after the model's
    new values and the gradients were handed to the Parameters: both are put back."""
    model = make_model()
    opt = optim.SGD(model.trainable_parameters(), lr=lambda step: 0.1 if step < 2 else -1.0)
    train(model, opt, 2)
    model.update(tree_map(lambda a: 2 * a, model.parameters()))
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match="the schedule at step 2"):
        train(model, opt, 1, 2)
    _assert_unchanged(before, _snapshot(model, opt))


def test_parameters_missing_a_gradient_path() -> None:
    opt = optim.SGD(make_model().trainable_parameters(), lr=0.1)
    with pytest.raises(ValueError, match="'fc1.bias'; the parameters have no such leaf"):
        opt.apply_gradients(_grads(), {"fc1": {"weight": mx.zeros((16, 6))}})


def test_flat_and_tuple_trees() -> None:
    """Trees of any shape MLX's tree utilities take: a flat ``{path: array}`` as the
    parameters, tuples in the gradients (given back as tuples)."""
    rng = np.random.default_rng(3)
    w = [mx.array(rng.standard_normal(n, dtype=np.float32)) for n in (2, 3, 4)]
    g = [mx.array(rng.standard_normal(n, dtype=np.float32)) for n in (2, 3, 4)]
    params = {"pair": (w[0], w[1]), "rest": [w[2]]}
    opt = optim.SGD(params, lr=0.5)
    flat_params = dict(tree_flatten(params))
    assert list(flat_params) == ["pair.0", "pair.1", "rest.0"]
    out = opt.apply_gradients({"pair": (g[0], g[1]), "rest": [g[2]]}, flat_params)
    assert isinstance(out["pair"], tuple) and isinstance(out["rest"], list)
    for got, p, d in zip([*out["pair"], *out["rest"]], w, g, strict=True):
        np.testing.assert_allclose(np.array(got), np.array(p) - 0.5 * np.array(d), rtol=1e-6)


@pytest.mark.parametrize("gradients", [mx.zeros(3), None, "grads"])
def test_gradients_must_be_a_tree(gradients: Any) -> None:
    opt = optim.SGD(make_model().trainable_parameters(), lr=0.1)
    with pytest.raises(TypeError, match="gradients must be a tree of arrays"):
        opt.apply_gradients(gradients, {})


def test_a_parameter_unfrozen_later_joins_by_add_param_group() -> None:
    model = make_model()
    model.norm.freeze()
    opt = optim.Adagrad(model.trainable_parameters(), lr=0.05, eps=1e-8)
    model.norm.unfreeze()
    with pytest.raises(ValueError, match=r"'norm.weight'.*add_param_group"):
        train(model, opt, 1)
    norm = {k: v for k, v in tree_flatten(model.trainable_parameters()) if k.startswith("norm")}
    opt.add_param_group({"params": norm, "lr": 0.01})
    ref = mo.MultiOptimizer(
        [mo.Adagrad(0.01, eps=1e-8), mo.Adagrad(0.05, eps=1e-8)],
        [lambda path, a: path.startswith("norm")],
    )
    theirs = make_model()
    np.testing.assert_allclose(train(model, opt, 10), train(theirs, ref, 10), rtol=RTOL)
    assert_same_params(flat(model), flat(theirs), rtol=RTOL, atol=ATOL)

"""The Optimizer base class through Adagrad: groups, errors, zero_grad, closures, state."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from optim_cases import assert_same_snapshot, make_params, set_grads, snapshot, values

import lucid
from lucid.nn import Parameter
from lucid.optim import Adagrad, Optimizer


def _params(n: int = 3) -> list[Parameter]:
    return make_params([np.full((i + 1,), float(i + 1), np.float32) for i in range(n)])


def _ones(params: list[Parameter]) -> None:
    set_grads(params, [np.ones(p.shape, np.float32) for p in params])


# ---------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda ps: ps, id="list"),
        pytest.param(lambda ps: tuple(ps), id="tuple"),
        pytest.param(lambda ps: (p for p in ps), id="generator"),
        pytest.param(lambda ps: [{"params": ps}], id="one_group"),
        pytest.param(lambda ps: [{"params": ps[:1]}, {"params": ps[1:]}], id="two_groups"),
    ],
)
def test_params_forms(make) -> None:
    ps = _params()
    opt = Adagrad(make(ps), lr=0.5)
    assert [p for g in opt.param_groups for p in g["params"]] == ps
    for g in opt.param_groups:
        assert {k: v for k, v in g.items() if k != "params"} == opt.defaults
        assert isinstance(g["params"], list)
    assert opt.defaults["lr"] == 0.5
    assert set(opt.state) == set(ps)
    assert isinstance(opt, Optimizer)


def test_group_overrides_and_defaults() -> None:
    ps = _params()
    opt = Adagrad(
        [{"params": ps[:1], "lr": 0.1, "initial_accumulator_value": 0.5}, {"params": ps[1:]}],
        lr=0.01,
        weight_decay=0.2,
    )
    g0, g1 = opt.param_groups
    assert (g0["lr"], g1["lr"]) == (0.1, 0.01)
    assert g0["weight_decay"] == g1["weight_decay"] == 0.2
    assert opt.defaults["lr"] == 0.01  # an override does not leak into defaults
    np.testing.assert_array_equal(np.array(opt.state[ps[0]]["sum"]), 0.5)
    np.testing.assert_array_equal(np.array(opt.state[ps[1]]["sum"]), 0.0)


def test_state_is_a_dict_of_arrays_per_parameter() -> None:
    ps = _params()
    opt = Adagrad(ps)
    _ones(ps)
    opt.step()
    for p in ps:
        assert set(opt.state[p]) == {"step", "sum"}
        assert all(isinstance(v, mx.array) for v in opt.state[p].values())
        assert opt.state[p]["sum"].shape == tuple(p.shape)
        assert opt.state[p]["step"].item() == 1


BAD_PARAMS = [
    pytest.param(lambda ps: [], ValueError, "empty", id="empty_list"),
    pytest.param(lambda ps: [{"params": []}], ValueError, "empty", id="empty_group"),
    pytest.param(
        lambda ps: [{"params": ps}, {"params": ps[:1]}],
        ValueError,
        "another",
        id="param_in_two_groups",
    ),
    pytest.param(lambda ps: [ps[0], ps[0]], ValueError, "twice", id="param_twice"),
    pytest.param(
        lambda ps: [ps[0], lucid.tensor([1.0])], TypeError, "Parameter", id="plain_tensor"
    ),
    pytest.param(lambda ps: [ps[0], mx.array([1.0])], TypeError, "Parameter", id="mx_array"),
    pytest.param(lambda ps: ps[0], TypeError, "iterable", id="single_parameter"),
    pytest.param(
        lambda ps: [{"params": ps, "momentum": 0.9}],
        ValueError,
        "momentum",
        id="unknown_hyperparameter",
    ),
    pytest.param(lambda ps: [{"lr": 0.1}], ValueError, "params", id="group_without_params"),
]


@pytest.mark.parametrize("make, error, words", BAD_PARAMS)
def test_bad_params_raise(make, error, words) -> None:
    with pytest.raises(error, match=words):
        Adagrad(make(_params()))


BAD_GROUPS = [  # (old, new) -> the group to add; old are the optimizer's own parameters
    pytest.param(lambda old, new: {"params": []}, ValueError, "empty", id="empty"),
    pytest.param(
        lambda old, new: {"params": [new[0], old[1]]},
        ValueError,
        "another",
        id="param_in_another_group",
    ),
    pytest.param(lambda old, new: {"params": [new[0], new[0]]}, ValueError, "twice", id="twice"),
    pytest.param(
        lambda old, new: {"params": [new[0], lucid.tensor([1.0])]},
        TypeError,
        "Parameter",
        id="plain_tensor",
    ),
    pytest.param(
        lambda old, new: {"params": new, "betas": 0.9},
        ValueError,
        "betas",
        id="unknown_hyperparameter",
    ),
    pytest.param(lambda old, new: {"params": new, "lr": -1.0}, ValueError, "lr", id="bad_lr"),
    pytest.param(lambda old, new: {"lr": 0.1}, ValueError, "params", id="no_params"),
    pytest.param(lambda old, new: new, TypeError, "dict", id="not_a_dict"),
]


@pytest.mark.parametrize("make, error, words", BAD_GROUPS)
def test_bad_add_param_group_changes_nothing(make, error, words) -> None:
    old, new = _params(), _params()
    opt = Adagrad(old)
    _ones(old)
    opt.step()
    before = snapshot(opt)
    with pytest.raises(error, match=words):
        opt.add_param_group(make(old, new))
    assert_same_snapshot(before, snapshot(opt))
    assert set(opt.state) == set(old)


# ---------------------------------------------------------------------------- add_param_group


@pytest.mark.parametrize("steps_before", [0, 1, 5])
def test_add_param_group_at_any_time(steps_before: int) -> None:
    ps, late = _params(2), _params(2)
    opt = Adagrad(ps, lr=0.1)
    for _ in range(steps_before):
        _ones(ps)
        opt.step()
    opt.add_param_group({"params": late, "lr": 0.2, "initial_accumulator_value": 0.3})
    assert opt.param_groups[1]["lr"] == 0.2
    assert opt.param_groups[1]["weight_decay"] == opt.defaults["weight_decay"]
    for p in late:  # state exists at once
        assert opt.state[p]["step"].item() == 0
        np.testing.assert_allclose(np.array(opt.state[p]["sum"]), 0.3)
    opt.zero_grad()
    opt.step()  # nothing has a gradient: a step must not fail
    _ones(ps + late)
    opt.step()
    for p in late:
        assert opt.state[p]["step"].item() == 1
    for p in ps:
        assert opt.state[p]["step"].item() == steps_before + 1
    np.testing.assert_allclose(
        values(late)[0], 1.0 - 0.2 * 1 / (np.sqrt(0.3 + 1) + 1e-10), rtol=1e-6
    )


def test_add_param_group_accepts_a_single_parameter() -> None:
    ps = _params(2)
    opt = Adagrad(ps[:1])
    opt.add_param_group({"params": ps[1]})
    assert opt.param_groups[1]["params"] == [ps[1]]


# ---------------------------------------------------------------------------- zero_grad, step


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none: bool) -> None:
    ps = _params()
    opt = Adagrad(ps)
    _ones(ps[:2])  # ps[2] has no gradient
    opt.zero_grad(set_to_none=set_to_none)
    for p in ps[:2]:
        if set_to_none:
            assert p.grad is None
        else:
            assert p.grad.dtype == p.dtype and p.grad.shape == p.shape
            np.testing.assert_array_equal(p.grad.numpy(), 0)
    assert ps[2].grad is None


def test_zero_grad_default_sets_none() -> None:
    ps = _params()
    opt = Adagrad(ps)
    _ones(ps)
    opt.zero_grad()
    assert all(p.grad is None for p in ps)


def test_step_with_zero_grads_still_counts() -> None:
    ps = _params(1)
    opt = Adagrad(ps)
    _ones(ps)
    opt.zero_grad(set_to_none=False)
    opt.step()
    assert opt.state[ps[0]]["step"].item() == 1
    np.testing.assert_array_equal(values(ps)[0], 1.0)


def test_step_returns_closure_loss() -> None:
    p = Parameter([1.0, -2.0])
    opt = Adagrad([p], lr=0.1)
    calls = []

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        calls.append(loss.item())
        return loss

    loss = opt.step(closure)
    assert calls == [5.0] and loss.item() == 5.0
    np.testing.assert_allclose(values([p])[0], [0.9, -1.9], rtol=1e-6)
    assert opt.step() is None


@pytest.mark.parametrize(
    "grad, error",
    [
        pytest.param(lambda: lucid.tensor([1.0, 1.0, 1.0]), ValueError, id="shape"),
        pytest.param(lambda: lucid.tensor([1.0, 1.0], dtype=mx.float16), ValueError, id="dtype"),
        pytest.param(lambda: mx.array([1.0, 1.0]), TypeError, id="not_a_tensor"),
    ],
)
def test_bad_grad_raises_and_changes_nothing(grad, error) -> None:
    ps = make_params([np.ones(2, np.float32), np.ones(2, np.float32)])
    opt = Adagrad([{"params": ps[:1]}, {"params": ps[1:]}])
    _ones(ps)
    opt.step()
    before = snapshot(opt)
    _ones(ps)
    ps[1].grad = grad()  # group 0 is fine, group 1 is not: group 0 must not move either
    with pytest.raises(error, match=r"param group 1, params\[0\]"):
        opt.step()
    assert_same_snapshot(before, snapshot(opt))


def test_repr_lists_groups_and_hyperparameters() -> None:
    ps = _params()
    opt = Adagrad([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.5}], weight_decay=0.25)
    text = repr(opt)
    assert text.startswith("Adagrad")
    assert "Parameter Group 0" in text and "Parameter Group 1" in text
    for name in opt.defaults:
        assert text.count(f"    {name}: ") == 2, name
    assert "lr: 0.5" in text and "weight_decay: 0.25" in text

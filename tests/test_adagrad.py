"""Adagrad: parity with torch.optim.Adagrad, the decoupled rule against a float64 NumPy
transcription, argument validation, the compiled step, and half-precision dtypes."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from optim_cases import (
    Scenario,
    grad_stream,
    make_params,
    numpy_adagrad,
    run_stream,
    set_grads,
    train,
    train_lucid,
    values,
)

import lucid
import lucid.optim.optimizer as optimizer_module
from lucid.nn import Parameter
from lucid.optim import Adagrad

# ---------------------------------------------------------------------------- torch parity

STEPS = 50
# Over 50 float32 steps rounding accumulates in G and theta, and the two sides do not
# round alike: lucid computes lr_t in float32 (it enters the compiled step as a float32
# array) while torch computes it in float64 Python floats, and the MLX and torch matmuls
# feeding the gradients sum in different orders. Per step the sides agree to ~1e-6.
PARITY_RTOL, PARITY_ATOL = 1e-5, 1e-6


def _torch_loss(params, x, y):
    w1, b1, w2, b2 = params
    out = torch.tanh(torch.from_numpy(x) @ w1 + b1) @ w2 + b2
    return ((out - torch.from_numpy(y)) ** 2).mean()


def _train_torch(sc: Scenario, steps: int) -> list[list[np.ndarray]]:
    return train(
        sc,
        steps,
        new_param=lambda w: torch.tensor(w, requires_grad=True),
        new_opt=torch.optim.Adagrad,
        loss_fn=_torch_loss,
        to_numpy=lambda p: p.detach().numpy().copy(),
    )


def _assert_histories_close(ours, ref, rtol, atol) -> None:
    for t, (a, b) in enumerate(zip(ours, ref, strict=True), start=1):
        for i, (pa, pb) in enumerate(zip(a, b, strict=True)):
            np.testing.assert_allclose(pa, pb, rtol=rtol, atol=atol, err_msg=f"step {t}, p{i}")


PARITY = [
    pytest.param(Scenario(), id="defaults"),
    pytest.param(Scenario({"lr": 0.1, "lr_decay": 0.05}), id="lr_decay"),
    pytest.param(Scenario({"lr": 0.05, "weight_decay": 0.1}), id="weight_decay"),
    pytest.param(Scenario({"initial_accumulator_value": 0.3}), id="initial_accumulator"),
    pytest.param(Scenario({"lr": 0.05, "maximize": True}), id="maximize"),
    pytest.param(Scenario(group_lrs=(0.1, 0.01)), id="two_groups"),
    pytest.param(Scenario(lr_schedule=lambda t: 0.1 / t), id="lr_changed_each_step"),
    pytest.param(Scenario({"lr": 0.05}, skip_every=3), id="no_grad_some_steps"),
    pytest.param(Scenario({"lr": 0.05}, late_group=True), id="add_param_group_after_5"),
    pytest.param(
        Scenario({"lr": 0.1, "weight_decay": 0.05, "lr_decay": 0.01, "eps": 1e-3}), id="all"
    ),
]


@pytest.mark.parametrize("sc", PARITY)
def test_matches_torch(sc: Scenario) -> None:
    ours = train_lucid(sc, STEPS, decoupled_weight_decay=False)
    ref = _train_torch(sc, STEPS)
    _assert_histories_close(ours, ref, PARITY_RTOL, PARITY_ATOL)
    assert not np.array_equal(ours[-1][0], ours[0][0])  # it did train


# ---------------------------------------------------------------------------- NumPy reference

SHAPES = [(3, 4), (5,), ()]


def _check_against_numpy(kwargs: dict, steps: int = 30, skip: bool = False) -> None:
    rng = np.random.default_rng(3)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads: list[list] = grad_stream(SHAPES, steps)
    if skip:  # parameter 1 has no gradient on every other step
        grads = [
            [g if i != 1 or t % 2 else None for i, g in enumerate(gs)] for t, gs in enumerate(grads)
        ]
    params = make_params(init)
    opt = Adagrad(params, **kwargs)
    ref = numpy_adagrad(init, grads, **kwargs)
    for t, step_grads in enumerate(grads):
        set_grads(params, step_grads)
        opt.step()
        for i, (p, r) in enumerate(zip(values(params), ref[t], strict=True)):
            # float32 against float64 over up to 30 steps
            np.testing.assert_allclose(p, r, rtol=1e-5, atol=1e-6, err_msg=f"step {t}, p{i}")


REFERENCE = [
    pytest.param({}, id="defaults"),
    pytest.param({"lr": 0.1, "weight_decay": 0.1}, id="decoupled_wd"),
    pytest.param({"lr": 0.1, "weight_decay": 0.2, "lr_decay": 0.1}, id="wd_and_lr_decay"),
    pytest.param({"lr": 0.05, "maximize": True, "weight_decay": 0.1}, id="maximize_wd"),
    pytest.param({"lr": 0.05, "initial_accumulator_value": 0.5, "eps": 1e-4}, id="iav_eps"),
    pytest.param({"lr": 0.1, "weight_decay": 0.1, "decoupled_weight_decay": False}, id="coupled"),
    pytest.param({"lr": 0.1, "lr_decay": 0.5, "maximize": True}, id="maximize_lr_decay"),
]


@pytest.mark.parametrize("kwargs", REFERENCE)
def test_matches_numpy_reference(kwargs: dict) -> None:
    _check_against_numpy(kwargs)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    lr=st.floats(0.0, 1.0),
    eps=st.floats(1e-10, 1e-2),
    weight_decay=st.floats(0.0, 0.5),
    initial_accumulator_value=st.floats(0.0, 2.0),
    lr_decay=st.floats(0.0, 1.0),
    maximize=st.booleans(),
    decoupled_weight_decay=st.booleans(),
)
def test_any_hyperparameters_match_numpy_reference(**kwargs) -> None:
    _check_against_numpy(kwargs, steps=5)


def test_params_without_grad_are_skipped() -> None:
    _check_against_numpy({"lr": 0.1, "lr_decay": 0.2, "weight_decay": 0.1}, skip=True)
    params = make_params([np.ones(3, np.float32), np.ones(2, np.float32)])
    opt = Adagrad(params, lr=0.1, weight_decay=0.5)
    set_grads(params, [np.ones(3, np.float32), None])
    opt.step()
    assert opt.state[params[1]]["step"].item() == 0
    np.testing.assert_array_equal(np.array(opt.state[params[1]]["sum"]), 0)
    np.testing.assert_array_equal(np.array(params[1].data), 1)  # weight decay skipped too
    assert opt.state[params[0]]["step"].item() == 1


def test_signature_and_defaults() -> None:
    opt = Adagrad([Parameter([1.0])])
    assert opt.defaults == {
        "lr": 1e-2,
        "eps": 1e-10,
        "weight_decay": 0.0,
        "initial_accumulator_value": 0.0,
        "lr_decay": 0.0,
        "maximize": False,
        "decoupled_weight_decay": True,
    }
    Adagrad([Parameter([1.0])], 0.1, 1e-8, 0.01, 0.1)  # the spec's four positionals
    with pytest.raises(TypeError):
        Adagrad([Parameter([1.0])], 0.1, 1e-8, 0.01, 0.1, 0.5)  # lr_decay is keyword-only


# ---------------------------------------------------------------------------- validation

NUMERIC = ["lr", "eps", "weight_decay", "lr_decay", "initial_accumulator_value"]
# out of range: ValueError; of the wrong type: TypeError
BAD = [(v, ValueError) for v in (-1.0, -1e-12, math.nan, math.inf, -math.inf)] + [
    (v, TypeError) for v in ("0.1", None, True, [0.1])
]


def _assert_rejects(fn, name: str, error: type = ValueError) -> None:
    with pytest.raises(error, match=name):
        fn()


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value, error", BAD, ids=repr)
def test_bad_hyperparameter_raises(name: str, value, error: type) -> None:
    _assert_rejects(lambda: Adagrad([Parameter([1.0])], **{name: value}), name, error)
    opt = Adagrad([Parameter([1.0])])
    group = {"params": [Parameter([2.0])], name: value}
    _assert_rejects(lambda: opt.add_param_group(group), name, error)
    assert len(opt.param_groups) == 1 and len(opt.state) == 1


@pytest.mark.parametrize("name", ["maximize", "decoupled_weight_decay"])
def test_bad_flag_raises(name: str) -> None:
    _assert_rejects(lambda: Adagrad([Parameter([1.0])], **{name: "yes"}), name, TypeError)


@pytest.mark.parametrize("name", NUMERIC)
def test_zero_is_allowed(name: str) -> None:
    Adagrad([Parameter([1.0])], **{name: 0.0})
    Adagrad([Parameter([1.0])], **{name: 0})


def test_bad_value_set_between_steps_raises_and_changes_nothing() -> None:
    p = Parameter([1.0, 2.0])
    opt = Adagrad([p], lr=0.1)
    p.grad = lucid.tensor([1.0, 1.0])
    opt.step()
    opt.param_groups[0]["lr"] = -0.5
    before = np.array(p.data), np.array(opt.state[p]["sum"]), opt.state[p]["step"].item()
    _assert_rejects(opt.step, "lr")
    after = np.array(p.data), np.array(opt.state[p]["sum"]), opt.state[p]["step"].item()
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2] == after[2]


# ---------------------------------------------------------------------------- compiled step


def _eager_step(opt: Adagrad, params: list[Parameter]) -> list[tuple[mx.array, dict]]:
    """Adagrad.update applied directly per parameter, with no mx.compile in the way."""
    group = opt.param_groups[0]
    out = []
    for p in params:
        state = {k: v for k, v in opt.state[p].items() if k != "step"}
        t = int(opt.state[p]["step"].item()) + 1
        hyper = {k: mx.array(v) for k, v in opt.step_hyperparameters(group, t).items()}
        out.append(Adagrad.rule(p.data, p.grad.data, state, hyper, **opt.static_config(group)))
    return out


COMPILE = [
    pytest.param({}, id="defaults"),
    pytest.param({"lr": 0.1, "weight_decay": 0.1, "lr_decay": 0.1}, id="decoupled"),
    pytest.param({"weight_decay": 0.1, "decoupled_weight_decay": False}, id="coupled"),
    pytest.param({"maximize": True, "initial_accumulator_value": 0.2}, id="maximize"),
]


@pytest.mark.parametrize("kwargs", COMPILE)
def test_compiled_step_equals_eager_update(kwargs: dict) -> None:
    rng = np.random.default_rng(4)
    params = make_params([rng.standard_normal(s).astype(np.float32) for s in SHAPES])
    opt = Adagrad(params, **kwargs)
    for step_grads in grad_stream(SHAPES, 10):
        set_grads(params, step_grads)
        expected = _eager_step(opt, params)
        opt.step()
        for p, (data, state) in zip(params, expected, strict=True):
            np.testing.assert_array_equal(np.array(p.data), np.array(data))
            np.testing.assert_array_equal(np.array(opt.state[p]["sum"]), np.array(state["sum"]))


def _run_fresh(kwargs: dict, steps: int = 10) -> tuple[list[np.ndarray], Adagrad]:
    rng = np.random.default_rng(4)
    params = make_params([rng.standard_normal(s).astype(np.float32) for s in SHAPES])
    opt = Adagrad(params, **kwargs)
    run_stream(opt, params, grad_stream(SHAPES, steps))
    return values(params) + [np.array(opt.state[p]["sum"]) for p in params], opt


@pytest.mark.parametrize("kwargs", COMPILE)
def test_disable_compile_gives_the_same_result(
    kwargs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled, _ = _run_fresh(kwargs)
    # with compile off every step retraces; lucid says so (once per process, hence the reset)
    monkeypatch.setattr(lucid.optim.compiled, "_warned_no_compile", False)
    mx.disable_compile()
    try:
        with pytest.warns(RuntimeWarning, match="mx.compile is not compiling"):
            eager, _ = _run_fresh(kwargs)
    finally:
        mx.enable_compile()
    for a, b in zip(compiled, eager, strict=True):
        np.testing.assert_array_equal(a, b)


def test_one_trace_for_100_steps_with_changing_lr() -> None:
    params = make_params([np.ones(s, np.float32) for s in SHAPES])
    opt = Adagrad(params, lr_decay=0.01, weight_decay=0.01)
    for t, step_grads in enumerate(grad_stream(SHAPES, 100), start=1):
        opt.param_groups[0]["lr"] = 0.1 / t
        opt.param_groups[0]["eps"] = 1e-10 * t
        set_grads(params, step_grads)
        opt.step()
    assert opt.trace_count == 1


def test_one_eval_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    params = make_params([np.ones(s, np.float32) for s in SHAPES])
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": 0.5, "maximize": True}]
    opt = Adagrad(groups, weight_decay=0.1)
    grads = grad_stream(SHAPES, 5)
    calls = []
    real_eval = optimizer_module.mx.eval

    def counting_eval(*args, **kwargs):
        calls.append(1)
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(optimizer_module.mx, "eval", counting_eval)
    for step_grads in grads:
        set_grads(params, step_grads)
        n = len(calls)
        opt.step()
        assert len(calls) == n + 1
    monkeypatch.undo()
    # and the results are evaluated, not left as lazy graphs that grow with each step
    assert values(params)[0].shape == SHAPES[0]


# ---------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16, mx.float32])
def test_half_precision_keeps_dtype(dtype: mx.Dtype) -> None:
    rng = np.random.default_rng(5)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = grad_stream(SHAPES, 10)
    params = make_params(init, dtype)
    mixed = make_params([np.ones(2, np.float32)])  # a float32 parameter in a second group
    opt = Adagrad([{"params": params}, {"params": mixed}], lr=0.05, weight_decay=0.1)
    for step_grads in grads:
        set_grads(params + mixed, step_grads + [np.ones(2, np.float32)])
        opt.step()
    for p in params:
        assert p.dtype == dtype
        assert opt.state[p]["sum"].dtype == dtype
    assert mixed[0].dtype == opt.state[mixed[0]]["sum"].dtype == mx.float32
    ref = numpy_adagrad(init, grads, lr=0.05, weight_decay=0.1)[-1]
    tol = 1e-5 if dtype == mx.float32 else 5e-2  # half precision rounds every step
    for p, r in zip(values(params), ref, strict=True):
        np.testing.assert_allclose(p, r, rtol=tol, atol=tol)

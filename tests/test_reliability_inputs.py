"""Bad hyperparameters, bad parameters, bad gradients and non-finite values.

Every refused call must raise an error that names what was wrong, and leave the optimizer,
its parameters and their state exactly as they were (checked with :func:`_snapshot`).
Non-finite gradients are not refused: they flow through as in ``torch.optim.Adagrad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
import torch

import lucid
from lucid import nn
from lucid.optim import Adagrad

NAN, INF = math.nan, math.inf
NUMERIC = ("lr", "eps", "weight_decay", "lr_decay", "initial_accumulator_value")


def _param(*shape: int, dtype: mx.Dtype = mx.float32, seed: int = 0) -> nn.Parameter:
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return nn.Parameter(mx.array(values).astype(dtype))


def _grad_like(p: nn.Parameter, seed: int = 1) -> lucid.Tensor:
    values = np.random.default_rng(seed).standard_normal(p.shape).astype(np.float32)
    return lucid.Tensor(mx.array(values).astype(p.dtype))


def _two_group_optimizer() -> tuple[Adagrad, list[nn.Parameter]]:
    """Two groups, stepped once, every parameter holding a fresh valid gradient."""
    params = [_param(2, 3, seed=0), _param(4, seed=1), _param(3, dtype=mx.float16, seed=2)]
    opt = Adagrad(
        [{"params": params[:2]}, {"params": params[2:], "lr": 0.5, "weight_decay": 0.1}],
        lr=0.1,
    )
    for i, p in enumerate(params):
        p.grad = _grad_like(p, seed=10 + i)
    opt.step()
    for i, p in enumerate(params):
        p.grad = _grad_like(p, seed=20 + i)
    return opt, params


# ---------------------------------------------------------------------------- helpers


def _np(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32) if a.dtype == mx.bfloat16 else a)


def _snapshot(opt: Adagrad, params: list[nn.Parameter]) -> dict[str, Any]:
    """Everything a failed call must leave as it was: values, dtypes, groups, state."""
    return {
        "params": [(p.dtype, _np(p.data)) for p in params],
        "groups": [
            {
                **{k: v for k, v in g.items() if k != "params"},
                "params": [id(p) for p in g["params"]],
            }
            for g in opt.param_groups
        ],
        "state": {
            id(p): {k: (v.dtype, _np(v)) for k, v in s.items()} for p, s in opt.state.items()
        },
        "traces": opt.trace_count,
    }


def _assert_unchanged(before: dict[str, Any], opt: Adagrad, params: list[nn.Parameter]) -> None:
    after = _snapshot(opt, params)
    for i, ((d0, v0), (d1, v1)) in enumerate(zip(before["params"], after["params"], strict=True)):
        assert d0 == d1, f"params[{i}] dtype changed"
        np.testing.assert_array_equal(v0, v1, err_msg=f"params[{i}] changed")
    assert _same_groups(before["groups"], after["groups"]), "param_groups changed"
    assert before["state"].keys() == after["state"].keys(), "state gained or lost parameters"
    for pid, s0 in before["state"].items():
        s1 = after["state"][pid]
        assert s0.keys() == s1.keys()
        for k in s0:
            assert s0[k][0] == s1[k][0], f"state {k!r} dtype changed"
            np.testing.assert_array_equal(s0[k][1], s1[k][1], err_msg=f"state {k!r} changed")
    assert before["traces"] == after["traces"]


def _same_groups(a: list[dict], b: list[dict]) -> bool:
    """Group equality where NaN equals NaN (a NaN lr set by hand stays NaN)."""
    if len(a) != len(b) or any(x.keys() != y.keys() for x, y in zip(a, b, strict=True)):
        return False
    same = lambda u, v: u == v or (isinstance(u, float) and math.isnan(u) and math.isnan(v))  # noqa: E731
    return all(same(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)


def _assert_refused(
    call: Callable[[], Any], error: type[Exception], words: str, opt: Adagrad, params: list
) -> None:
    """``call`` raises ``error`` mentioning ``words``, and nothing changes."""
    before = _snapshot(opt, params)
    with pytest.raises(error, match=words):
        call()
    _assert_unchanged(before, opt, params)


# ---------------------------------------------------------------------------- hyperparameters

BAD_VALUES = [-1.0, -1e-12, NAN, INF, -INF]
# a value out of range is a ValueError, a value of the wrong type a TypeError (as for
# any Python function)
BAD_HYPER = [
    *[pytest.param(name, v, ValueError, id=f"{name}={v}") for name in NUMERIC for v in BAD_VALUES],
    pytest.param("lr", "0.1", TypeError, id="lr=str"),
    pytest.param("lr", None, TypeError, id="lr=None"),
    pytest.param("eps", True, TypeError, id="eps=bool"),
    pytest.param("lr", mx.array(0.1), TypeError, id="lr=mx.array"),
    pytest.param("weight_decay", [0.1], TypeError, id="weight_decay=list"),
    pytest.param("maximize", 1, TypeError, id="maximize=int"),
    pytest.param("decoupled_weight_decay", "yes", TypeError, id="decoupled_weight_decay=str"),
]


@pytest.mark.parametrize("name, value, error", BAD_HYPER)
def test_bad_hyperparameter_at_construction(name: str, value: Any, error: type) -> None:
    p = _param(3)
    before = _np(p.data)
    with pytest.raises(error, match=name):
        Adagrad([p], **{name: value})
    np.testing.assert_array_equal(_np(p.data), before)
    assert p.grad is None


@pytest.mark.parametrize("name, value, error", BAD_HYPER)
def test_bad_hyperparameter_in_add_param_group(name: str, value: Any, error: type) -> None:
    opt, params = _two_group_optimizer()
    new = _param(5, seed=7)
    call = lambda: opt.add_param_group({"params": [new], name: value})  # noqa: E731
    _assert_refused(call, error, name, opt, params)
    assert new not in opt.state and len(opt.param_groups) == 2


@pytest.mark.parametrize("name, value, error", BAD_HYPER)
def test_bad_hyperparameter_set_by_hand_refused_at_step(name: str, value: Any, error: type) -> None:
    opt, params = _two_group_optimizer()
    opt.param_groups[-1][name] = value  # the last group: earlier groups must not step
    _assert_refused(opt.step, error, name, opt, params)
    opt.param_groups[-1][name] = opt.defaults[name] if name != "lr" else 0.5
    opt.step()  # repaired, it steps again


# ---------------------------------------------------------------------------- parameters


def _int_data_parameter() -> nn.Parameter:
    p = _param(2)
    p.data = mx.array([1, 2])
    return p


_shared = _param(2)
BAD_PARAMS = [  # (build the params argument, error, words in the message)
    pytest.param(lambda: [], ValueError, "empty", id="empty_list"),
    pytest.param(lambda: iter([]), ValueError, "empty", id="empty_iterator"),
    pytest.param(lambda: [{"params": []}], ValueError, "empty", id="empty_group"),
    pytest.param(lambda: [{"lr": 0.1}], ValueError, "'params'", id="group_without_params"),
    pytest.param(lambda: [lucid.Tensor([1.0, 2.0])], TypeError, "Parameter", id="plain_tensor"),
    pytest.param(lambda: [mx.ones(2)], TypeError, "Parameter", id="mx_array"),
    pytest.param(lambda: [np.ones(2)], TypeError, "Parameter", id="numpy_array"),
    pytest.param(lambda: [_param(2), 1.0], TypeError, r"params\[1\]", id="float_second"),
    pytest.param(lambda: [_param(2), None], TypeError, r"params\[1\]", id="none_second"),
    pytest.param(lambda: _param(2), TypeError, "single Parameter", id="bare_parameter"),
    pytest.param(lambda: mx.ones(2), TypeError, "single array", id="bare_array"),
    pytest.param(lambda: [_shared, _shared], ValueError, "twice", id="duplicate_in_group"),
    pytest.param(
        lambda: [{"params": [_shared]}, {"params": [_param(1), _shared]}],
        ValueError,
        r"group 1, params\[1\]: already in another",
        id="duplicate_across_groups",
    ),
    pytest.param(
        lambda: [{"params": [_param(2)], "momentum": 0.9}], ValueError, "momentum", id="unknown_key"
    ),
    pytest.param(lambda: [_int_data_parameter()], TypeError, "floating", id="int_data"),
    pytest.param(
        lambda: [{"params": [_param(2)]}, _param(2)], TypeError, "dict", id="group_then_parameter"
    ),
]


@pytest.mark.parametrize("make, error, words", BAD_PARAMS)
def test_bad_params_at_construction(make: Callable[[], Any], error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        Adagrad(make())


BAD_GROUPS = [  # (build a group from the optimizer's own params, error, words)
    pytest.param(lambda own: {"params": []}, ValueError, "empty", id="empty"),
    pytest.param(lambda own: {"lr": 0.1}, ValueError, "'params'", id="no_params_key"),
    pytest.param(lambda own: [_param(2)], TypeError, "dict", id="not_a_dict"),
    pytest.param(lambda own: {"params": [mx.ones(2)]}, TypeError, "Parameter", id="mx_array"),
    pytest.param(lambda own: {"params": [_param(2), lucid.Tensor([1.0])]}, TypeError,
                 r"group 2, params\[1\]: expected an nn.Parameter", id="tensor_second"),
    pytest.param(lambda own: {"params": [_param(3), own[2]]}, ValueError,
                 r"group 2, params\[1\]: already in another", id="param_of_another_group"),
    pytest.param(lambda own: {"params": [_shared, _shared]}, ValueError, "twice", id="twice"),
    pytest.param(lambda own: {"params": [_param(2)], "betas": (0.9, 0.99)}, ValueError, "betas",
                 id="unknown_key"),
    pytest.param(lambda own: {"params": [_int_data_parameter()]}, TypeError, "floating",
                 id="int_data"),
]  # fmt: skip


@pytest.mark.parametrize("make, error, words", BAD_GROUPS)
def test_bad_group_in_add_param_group(make: Callable, error: type, words: str) -> None:
    opt, params = _two_group_optimizer()
    group = make(params)
    _assert_refused(lambda: opt.add_param_group(group), error, words, opt, params)
    assert len(opt.param_groups) == 2 and len(opt.state) == 3


# Python lists of ints are not here: Parameter documents that Python numbers become float32.
INT_DATA = [np.array([1, 2]), np.array([True, False]), mx.array([1, 2], dtype=mx.uint8)]


@pytest.mark.parametrize("data", INT_DATA, ids=["int64", "bool", "uint8"])
def test_integer_parameter_refused(data: Any) -> None:
    with pytest.raises(TypeError, match="floating"):
        nn.Parameter(data)


# ---------------------------------------------------------------------------- gradients


def _int_grad_on_int_data(p: nn.Parameter) -> None:
    p.data = mx.zeros(p.shape, dtype=mx.int32)
    p.grad = lucid.Tensor(mx.ones(p.shape, dtype=mx.int32))


def _reshaped_data(p: nn.Parameter) -> None:
    p.data = mx.zeros((p.size + 1,), dtype=p.dtype)
    p.grad = lucid.Tensor(mx.ones((p.size,), dtype=p.dtype))


def _broadcastable_data(p: nn.Parameter) -> None:
    p.data = mx.zeros((1,), dtype=p.dtype)  # would silently broadcast against its state
    p.grad = lucid.Tensor(mx.ones((1,), dtype=p.dtype))


BAD_GRADS = [  # (spoil the last parameter, error, words); that parameter has shape (3,) float16
    pytest.param(lambda p: setattr(p, "grad", lucid.Tensor(mx.ones((4,), dtype=mx.float16))),
                 ValueError, r"params\[0\]: grad has shape \(4,\)", id="shape"),
    pytest.param(lambda p: setattr(p, "grad", lucid.Tensor(mx.ones((1,), dtype=mx.float16))),
                 ValueError, "shape", id="broadcastable_shape"),
    pytest.param(lambda p: setattr(p, "grad", lucid.Tensor(mx.ones((3, 1), dtype=mx.float16))),
                 ValueError, "shape", id="extra_axis"),
    pytest.param(lambda p: setattr(p, "grad", lucid.Tensor(mx.ones((3,)))),
                 ValueError, "grad has dtype mlx.core.float32", id="dtype_float32"),
    pytest.param(lambda p: setattr(p, "grad", lucid.Tensor(mx.ones((3,), dtype=mx.bfloat16))),
                 ValueError, "dtype", id="dtype_bfloat16"),
    pytest.param(lambda p: setattr(p, "grad", lucid.Tensor(mx.ones((3,), dtype=mx.int32))),
                 ValueError, "dtype", id="dtype_int"),
    pytest.param(lambda p: setattr(p, "grad", mx.ones((3,), dtype=mx.float16)),
                 TypeError, "grad must be a Tensor", id="mx_array"),
    pytest.param(lambda p: setattr(p, "grad", np.ones(3, np.float16)),
                 TypeError, "grad must be a Tensor", id="numpy_array"),
    pytest.param(lambda p: setattr(p, "grad", 1.0), TypeError, "grad", id="float"),
    pytest.param(_int_grad_on_int_data, TypeError, "floating", id="int_data_and_grad"),
    pytest.param(_reshaped_data, ValueError, "state 'sum'", id="data_reshaped"),
    pytest.param(_broadcastable_data, ValueError, "state 'sum'", id="data_broadcastable"),
]  # fmt: skip


@pytest.mark.parametrize("spoil, error, words", BAD_GRADS)
def test_bad_gradient_refused_before_any_parameter_changes(
    spoil: Callable[[nn.Parameter], None], error: type, words: str
) -> None:
    opt, params = _two_group_optimizer()
    last = params[-1]
    good_data, good_grad = last.data, last.grad
    spoil(last)
    _assert_refused(opt.step, error, words, opt, params)
    assert "param group 1" in _message(opt.step)
    last.data, last.grad = good_data, good_grad
    opt.step()  # repaired, every parameter steps
    assert all(int(opt.state[p]["step"].item()) == 2 for p in params)


def _message(call: Callable[[], Any]) -> str:
    try:
        call()
    except Exception as e:  # noqa: BLE001 - the message is what we look at
        return str(e)
    return ""


# ---------------------------------------------------------------------------- non-finite values

NONFINITE = [
    pytest.param([NAN, 1.0, 2.0, -0.5], id="one_nan"),
    pytest.param([INF, 1.0, 2.0, -0.5], id="one_inf"),
    pytest.param([-INF, 1.0, 0.0, -0.5], id="one_minus_inf"),
    pytest.param([NAN, INF, -INF, 0.0], id="mixed"),
    pytest.param([NAN] * 4, id="all_nan"),
]
TORCH_CONFIGS = [
    pytest.param({}, id="defaults"),
    pytest.param({"weight_decay": 0.1, "decoupled_weight_decay": False}, id="coupled_wd"),
    pytest.param({"maximize": True, "lr_decay": 0.1}, id="maximize_lr_decay"),
    pytest.param({"initial_accumulator_value": 0.5, "eps": 1e-3}, id="initial_sum"),
]


def _assert_same_pattern(ours: mx.array, theirs: torch.Tensor, what: str) -> None:
    a, b = _np(ours), theirs.detach().numpy()
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{what}: NaN pattern")
    np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b), err_msg=f"{what}: +inf")
    np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b), err_msg=f"{what}: -inf")
    finite = np.isfinite(a)
    np.testing.assert_allclose(a[finite], b[finite], rtol=1e-6, atol=1e-7, err_msg=what)


@pytest.mark.parametrize("config", TORCH_CONFIGS)
@pytest.mark.parametrize("bad", NONFINITE)
def test_nonfinite_gradients_flow_through_like_torch(bad: list[float], config: dict) -> None:
    x0 = np.array([0.5, -1.0, 2.0, 0.25], np.float32)
    p, t = nn.Parameter(x0.copy()), torch.tensor(x0.copy(), requires_grad=True)
    opt = Adagrad([p], lr=0.1, **config)
    torch_config = {k: v for k, v in config.items() if k != "decoupled_weight_decay"}
    topt = torch.optim.Adagrad([t], lr=0.1, **torch_config)
    for g in (np.array(bad, np.float32), np.array([0.1, -0.2, 0.3, 0.4], np.float32)):
        p.grad, t.grad = lucid.Tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
        _assert_same_pattern(p.data, t, "param")
        _assert_same_pattern(opt.state[p]["sum"], topt.state[t]["sum"], "sum")


@pytest.mark.parametrize("bad", NONFINITE)
def test_clip_grad_norm_error_if_nonfinite_stops_them(bad: list[float]) -> None:
    opt, params = _two_group_optimizer()
    params[1].grad = lucid.Tensor(np.array(bad, np.float32))
    grads = [p.grad for p in params]
    call = lambda: nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)  # noqa: E731
    _assert_refused(call, RuntimeError, "nan|inf", opt, params)
    assert all(p.grad is g for p, g in zip(params, grads, strict=True)), "grads were replaced"

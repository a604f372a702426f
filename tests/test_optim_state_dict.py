"""Optimizer.state_dict / load_state_dict: layout, copies, exact resumption, validation."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from optim_cases import (
    assert_same_snapshot,
    grad_stream,
    make_params,
    run_stream,
    snapshot,
    values,
)

import lucid
from lucid.nn import Parameter
from lucid.optim import Adagrad

SHAPES = [(3, 2), (4,), (2, 2), ()]
KWARGS = {"lr": 0.1, "weight_decay": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1}


def _init() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def _groups(params: list[Parameter]) -> list[dict]:
    """Two groups with different hyperparameters, so group order and ids matter."""
    return [{"params": params[:2]}, {"params": params[2:], "lr": 0.05, "maximize": True}]


def _setup(dtype: mx.Dtype | None = None) -> tuple[list[Parameter], Adagrad]:
    params = make_params(_init(), dtype)
    return params, Adagrad(_groups(params), **KWARGS)


def _trained(steps: int = 6) -> tuple[list[Parameter], Adagrad]:
    params, opt = _setup()
    grads = grad_stream(SHAPES, steps)
    for g in grads:
        g[3] = None  # the last parameter never gets a gradient: it has no step yet
    run_stream(opt, params, grads)
    return params, opt


# ---------------------------------------------------------------------------- layout


def test_layout_is_pytorchs() -> None:
    params, opt = _trained()
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert list(sd["state"]) == [0, 1, 2, 3]  # int ids in order across groups
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    for g, mine in zip(sd["param_groups"], opt.param_groups, strict=True):
        assert set(g) == set(opt.defaults) | {"params"}
        assert {k: v for k, v in g.items() if k != "params"} == {
            k: v for k, v in mine.items() if k != "params"
        }
    for i, entry in sd["state"].items():
        assert set(entry) == {"step", "sum"}
        assert all(isinstance(v, mx.array) for v in entry.values())
        assert entry["sum"].shape == params[i].shape
    assert [sd["state"][i]["step"].item() for i in range(4)] == [6, 6, 6, 0]


def test_state_dict_is_a_copy() -> None:
    params, opt = _trained()
    sd = opt.state_dict()
    kept = {i: {k: np.array(v) for k, v in e.items()} for i, e in sd["state"].items()}
    kept_groups = copy.deepcopy(sd["param_groups"])
    run_stream(opt, params, grad_stream(SHAPES, 3, seed=9))  # later steps...
    for i, entry in sd["state"].items():  # ...leave what was returned as it was
        for k, v in entry.items():
            np.testing.assert_array_equal(np.array(v), kept[i][k])
    assert sd["param_groups"] == kept_groups
    before = snapshot(opt)
    sd["param_groups"][0]["lr"] = 123.0  # and editing it leaves the optimizer alone
    sd["param_groups"][1]["params"].append(99)
    sd["state"][0]["sum"] = mx.zeros(3)
    sd["state"].clear()
    assert_same_snapshot(before, snapshot(opt))


def test_state_dict_read_only_after_later_steps() -> None:
    """Nothing is evaluated when the dict is taken: later steps must not reuse its buffers."""
    params, opt = _trained()
    _, twin = _trained()
    sd = opt.state_dict()
    run_stream(opt, params, grad_stream(SHAPES, 3, seed=9))
    assert_same_snapshot(snapshot(twin, False), _snapshot_of_state_dict(sd, twin))


def _snapshot_of_state_dict(sd: dict, like: Adagrad) -> dict:
    """``sd`` loaded into an optimizer shaped like ``like``, as a snapshot."""
    params = make_params(values([p for g in like.param_groups for p in g["params"]]))
    opt = Adagrad(_groups(params), **KWARGS)
    opt.load_state_dict(sd)
    return snapshot(opt, False)


def _bump_in_place(sd: dict) -> None:
    for entry in sd["state"].values():
        for k in entry:
            entry[k] += 1  # mx.array's += writes into the same array object


def test_in_place_edits_of_a_state_dict_change_no_optimizer() -> None:
    params, opt = _trained()
    _, twin = _trained()  # an untouched copy: the runs must stay identical
    before = snapshot(opt)
    _bump_in_place(opt.state_dict())
    assert_same_snapshot(before, snapshot(opt))
    fresh_a, fresh_b = _trained(), _trained()  # step counters are shared between optimizers
    assert_same_snapshot(snapshot(fresh_a[1], False), snapshot(twin, False))
    run_stream(opt, params, grad_stream(SHAPES, 2, seed=5))
    run_stream(fresh_b[1], fresh_b[0], grad_stream(SHAPES, 2, seed=5))
    assert_same_snapshot(snapshot(opt, False), snapshot(fresh_b[1], False))


def test_in_place_edits_after_load_change_nothing() -> None:
    _, source = _trained()
    sd = source.state_dict()
    _, opt = _setup()
    opt.load_state_dict(sd)
    before = snapshot(opt)
    _bump_in_place(sd)
    assert_same_snapshot(before, snapshot(opt))


# ---------------------------------------------------------------------------- exact resumption


def _resume(via: str, tmp_path: Path) -> None:
    """Train 6 steps, save, train 6 more; resuming from the save must give the same bits."""
    first, rest = grad_stream(SHAPES, 6), grad_stream(SHAPES, 6, seed=11)
    for g in first:
        g[3] = None
    params, opt = _setup()
    run_stream(opt, params, first)
    sd = opt.state_dict()
    saved_values = values(params)
    run_stream(opt, params, rest)
    expected = snapshot(opt, same_params=False)

    if via == "same_optimizer":  # rewind the optimizer it came from
        for p, v in zip(params, saved_values, strict=True):
            p.data = mx.array(v)
        new_params, new_opt = params, opt
    else:  # a fresh optimizer over fresh parameters holding the saved values
        new_params = make_params(saved_values)
        new_opt = Adagrad(_groups(new_params))  # default hyperparameters: the load sets them
    if via == "file":
        lucid.save(sd, tmp_path / "opt.lucid")
        sd = lucid.load(tmp_path / "opt.lucid")
    new_opt.load_state_dict(sd)
    run_stream(new_opt, new_params, rest)
    got = snapshot(new_opt, same_params=False)
    got["defaults"] = expected["defaults"]  # as in PyTorch, a load sets groups, not defaults
    assert_same_snapshot(expected, got)  # np.array_equal on every array: bitwise


@pytest.mark.parametrize("via", ["same_optimizer", "fresh_optimizer", "file"])
def test_resume_is_bitwise_identical(via: str, tmp_path: Path) -> None:
    _resume(via, tmp_path)


def test_load_casts_state_to_parameter_dtype(tmp_path: Path) -> None:
    _, opt32 = _trained()
    sd = opt32.state_dict()
    for dtype in (mx.float16, mx.bfloat16):
        params, opt = _setup(dtype)
        opt.load_state_dict(sd)
        for p in params:
            assert opt.state[p]["sum"].dtype == dtype
        np.testing.assert_allclose(
            np.array(opt.state[params[0]]["sum"].astype(mx.float32)),
            np.array(sd["state"][0]["sum"]),
            rtol=1e-2,
        )
        lucid.save(opt.state_dict(), tmp_path / "half.lucid")  # half state saves and loads
        back = lucid.load(tmp_path / "half.lucid")
        assert back["state"][0]["sum"].dtype == dtype


def test_load_into_untrained_optimizer_then_step() -> None:
    _, trained = _trained()
    params, opt = _setup()
    opt.load_state_dict(trained.state_dict())
    assert opt.state[params[0]]["step"].item() == 6
    assert opt.state[params[3]]["step"].item() == 0
    run_stream(opt, params, grad_stream(SHAPES, 2))
    assert opt.state[params[3]]["step"].item() == 2


# ---------------------------------------------------------------------------- validation


def _set(path: tuple, value):
    """An edit of a state dict: set the value at ``path`` (a missing key is deleted)."""

    def edit(sd: dict) -> None:
        node = sd
        for key in path[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value(node[path[-1]]) if callable(value) else value

    return edit


_DELETE = object()

MALFORMED = [  # (edit, words the message must contain)
    pytest.param(
        lambda sd: sd["param_groups"].pop(), ["param_groups", "1 groups"], id="too_few_groups"
    ),
    pytest.param(
        lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0])),
        ["param_groups", "3 groups"],
        id="too_many_groups",
    ),
    pytest.param(
        _set(("param_groups", 1, "params"), [2]), ["param group 1", "params"], id="group_too_small"
    ),
    pytest.param(
        _set(("param_groups", 0, "params"), [0, 1, 4]),
        ["param group 0", "params"],
        id="group_too_big",
    ),
    pytest.param(_set(("param_groups", 0, "params"), [0, 0]), ["params"], id="repeated_id"),
    pytest.param(_set(("param_groups", 0, "params"), [0, 7]), ["params"], id="id_out_of_range"),
    pytest.param(
        _set(("param_groups", 1, "momentum"), 0.9),
        ["param group 1", "momentum"],
        id="unknown_group_key",
    ),
    pytest.param(
        _set(("param_groups", 1, "eps"), _DELETE), ["param group 1", "eps"], id="missing_group_key"
    ),
    pytest.param(
        _set(("param_groups", 0, "params"), _DELETE),
        ["param group 0", "params"],
        id="missing_params",
    ),
    pytest.param(
        _set(("param_groups", 1, "lr"), -0.1), ["param group 1", "lr"], id="bad_hyperparameter"
    ),
    pytest.param(
        _set(("param_groups", 1, "lr_decay"), math.nan),
        ["param group 1", "lr_decay"],
        id="nan_hyperparameter",
    ),
    pytest.param(
        _set(("param_groups", 0, "maximize"), "no"), ["param group 0", "maximize"], id="bad_flag"
    ),
    pytest.param(
        _set(("state", 2, "sum"), mx.zeros((2, 3))),
        ["param group 1", "params[0]", "'sum'", "shape"],
        id="wrong_state_shape",
    ),
    pytest.param(
        _set(("state", 1, "sum"), mx.zeros((1, 4))),
        ["param group 0", "params[1]", "'sum'", "shape"],
        id="wrong_state_rank",
    ),
    pytest.param(
        _set(("state", 1, "momentum"), mx.zeros(4)),
        ["param group 0", "params[1]", "momentum"],
        id="unknown_state_key",
    ),
    pytest.param(
        _set(("state", 2, "sum"), _DELETE),
        ["param group 1", "params[0]", "sum"],
        id="missing_state_key",
    ),
    pytest.param(
        _set(("state", 0, "sum"), np.zeros((3, 2))), ["params[0]", "'sum'"], id="state_not_an_array"
    ),
    pytest.param(
        _set(("state", 0, "sum"), mx.zeros((3, 2), dtype=mx.bool_)),
        ["params[0]", "'sum'", "dtype"],
        id="bool_state",
    ),
    pytest.param(
        _set(("state", 2, "step"), mx.array(-1.0)),
        ["param group 1", "params[0]", "'step'"],
        id="negative_step",
    ),
    pytest.param(
        _set(("state", 2, "step"), mx.array(2.5)), ["params[0]", "'step'"], id="fractional_step"
    ),
    pytest.param(
        _set(("state", 2, "step"), mx.array(math.nan)), ["params[0]", "'step'"], id="nan_step"
    ),
    pytest.param(
        _set(("state", 2, "step"), mx.array([3.0])), ["params[0]", "'step'"], id="step_not_scalar"
    ),
    pytest.param(_set(("state", 2, "step"), "3"), ["params[0]", "'step'"], id="step_a_string"),
    pytest.param(_set(("state",), lambda s: {**s, 9: s[0]}), ["9"], id="state_id_unknown"),
    pytest.param(_set(("state",), lambda s: {**s, "x": s[0]}), ["'x'"], id="state_id_not_int"),
    pytest.param(_set(("state",), _DELETE), ["'state'"], id="missing_state"),
    pytest.param(_set(("param_groups",), _DELETE), ["'param_groups'"], id="missing_groups"),
    pytest.param(_set(("extra",), 1), ["extra"], id="unknown_top_key"),
    pytest.param(_set(("param_groups",), {}), ["param_groups"], id="groups_not_a_list"),
    pytest.param(_set(("param_groups", 0), [0, 1]), ["param group 0"], id="group_not_a_dict"),
]


def _assert_load_rejected(edit, words: list[str]) -> None:
    _, source = _trained()
    sd = source.state_dict()
    edit(sd)
    params, opt = _trained(steps=3)  # a different state, so a partial load would show
    opt.param_groups[0]["lr"] = 0.3
    before = snapshot(opt)
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(sd)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert_same_snapshot(before, snapshot(opt))


@pytest.mark.parametrize("edit, words", MALFORMED)
def test_malformed_state_dict_raises_and_changes_nothing(edit, words) -> None:
    _assert_load_rejected(edit, words)


def test_not_a_dict_raises() -> None:
    _, opt = _trained()
    with pytest.raises(ValueError):
        opt.load_state_dict([1, 2])  # type: ignore[arg-type]


def test_python_number_step_is_accepted() -> None:
    _, source = _trained()
    sd = source.state_dict()
    sd["state"][0]["step"] = 6
    params, opt = _setup()
    opt.load_state_dict(sd)
    assert opt.state[params[0]]["step"].item() == 6

"""Corrupt, truncated, hostile and foreign checkpoints; atomic saves; no pickle.

``lucid.load`` must refuse a bad file with a :class:`CheckpointError` (a ``ValueError``)
that names the file: never a crash, a hang, another exception type or a partial result.
``Optimizer.load_state_dict`` must refuse a foreign or malformed state dict with a
``ValueError`` and leave the optimizer exactly as it was. (Round trips and the basic bad
files are in ``test_serialization.py``; this file is the adversarial side.)
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

import lucid
import lucid.serialization as serialization
from lucid import nn
from lucid.optim import Adagrad
from lucid.serialization import CheckpointError

FORMAT = "lucid.checkpoint.v1"


def _trained() -> tuple[Adagrad, list[nn.Parameter]]:
    """An optimizer with two groups of mixed dtypes, stepped twice."""
    params = [
        nn.Parameter(mx.arange(6, dtype=mx.float32).reshape(2, 3)),
        nn.Parameter(mx.array([1.0, -2.0, 0.5], dtype=mx.float16)),
        nn.Parameter(mx.array([0.25, 4.0], dtype=mx.bfloat16)),
    ]
    opt = Adagrad([{"params": params[:2]}, {"params": params[2:], "lr": 0.3}], weight_decay=0.01)
    for k in range(2):
        for p in params:
            p.grad = lucid.Tensor(mx.full(p.shape, 0.5 + k, dtype=p.dtype))
        opt.step()
    return opt, params


def _write_checkpoint(path: Path) -> bytes:
    opt, params = _trained()
    lucid.save({"optimizer": opt.state_dict(), "params": [p.data for p in params]}, path)
    return path.read_bytes()


# ---------------------------------------------------------------------------- helpers


def _np(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32) if a.dtype == mx.bfloat16 else a)


def _assert_load_refused(path: Path, words: str = "") -> None:
    """``lucid.load`` raises a CheckpointError (a ValueError) naming the file."""
    with pytest.raises(CheckpointError, match=words or None) as info:
        lucid.load(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


def _snapshot(opt: Adagrad, params: list[nn.Parameter]) -> Any:
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    state = [{k: (v.dtype, _np(v).tolist()) for k, v in opt.state[p].items()} for p in params]
    return groups, [(p.dtype, _np(p.data).tolist()) for p in params], state, len(opt.state)


def _assert_load_state_dict_refused(opt: Adagrad, params: list, sd: Any, words: str) -> None:
    """``load_state_dict(sd)`` raises ValueError mentioning ``words``; nothing changes."""
    before = _snapshot(opt, params)
    with pytest.raises(ValueError, match=words):
        opt.load_state_dict(sd)
    assert _snapshot(opt, params) == before


def _run_isolated(script: str, timeout: float = 120) -> dict:
    """Run ``script`` in a fresh interpreter, so a segfault or hang fails one test only."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"the loader crashed the process (exit code {proc.returncode}; a negative code is a "
        f"signal, -11 a segfault)\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- truncation

_SWEEP = """
import json, sys
import lucid
from lucid.serialization import CheckpointError
path, mode = {path!r}, {mode!r}
good = open(path, "rb").read()
out = {{"refused": [], "loaded": [], "other": []}}
for offset in range(0, len(good), 7):
    if mode == "truncate":
        blob = good[:offset]
    else:  # flip every bit of one byte
        blob = good[:offset] + bytes([good[offset] ^ 0xFF]) + good[offset + 1 :]
    bad = path + ".bad"
    open(bad, "wb").write(blob)
    print(offset, file=sys.stderr, flush=True)  # the last offset tried, should it crash
    try:
        lucid.load(bad)
        out["loaded"].append(offset)
    except CheckpointError:
        out["refused"].append(offset)
    except BaseException as e:
        out["other"].append([offset, type(e).__name__, str(e)[:200]])
print(json.dumps(out))
"""


@pytest.mark.parametrize("mode", ["truncate", "flip_byte"])
def test_corruption_sweep_never_crashes_the_process(mode: str, tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    good = _write_checkpoint(path)
    out = _run_isolated(_SWEEP.format(path=str(path), mode=mode))
    assert out["other"] == [], "errors other than CheckpointError"
    if mode == "truncate":  # a shortened file is always refused
        assert out["loaded"] == [] and len(out["refused"]) == len(range(0, len(good), 7))
    else:  # a flipped byte in the data region may load (different numbers); never anything else
        data_start = 8 + struct.unpack("<Q", good[:8])[0]
        assert all(offset >= data_start for offset in out["loaded"])


def test_truncation_in_process(tmp_path: Path) -> None:
    path, bad = tmp_path / "ckpt", tmp_path / "bad"
    good = _write_checkpoint(path)
    for offset in [*range(0, len(good), 7), len(good) - 1]:
        bad.write_bytes(good[:offset])
        _assert_load_refused(bad)
    assert isinstance(lucid.load(path), dict)  # the intact file still loads


# ---------------------------------------------------------------------------- hostile bytes


def _random_bytes(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def _plausible_length(seed: int, size: int) -> bytes:
    """A header length that fits the file, followed by random bytes."""
    n = size // 2
    return struct.pack("<Q", n) + _random_bytes(seed, size)


def _nested_header(depth: int) -> bytes:
    meta = json.dumps({"__metadata__": {"lucid": "x"}})[:-1]
    blob = (meta + ', "a": ' + "[" * depth + "]" * depth + "}").encode()
    return struct.pack("<Q", len(blob)) + blob


def _lucid_file(tree_json: str, arrays: dict | None = None) -> Callable[[Path], None]:
    """A valid safetensors file whose lucid metadata is ``tree_json``, written by MLX."""

    def write(path: Path) -> None:
        tmp = path.with_name(path.name + ".safetensors")  # MLX adds the suffix when missing
        mx.save_safetensors(str(tmp), arrays or {}, metadata={"lucid": tree_json})
        tmp.rename(path)

    return write


def _nested_tree(depth: int) -> str:
    return _meta(None).replace("null", "[" * depth + "]" * depth)


def _meta(tree: Any, **extra: Any) -> str:
    return json.dumps({"format": FORMAT, "tree": tree, **extra})


HOSTILE = [  # (write a file at path, words in the error)
    *[pytest.param(lambda p, s=s, n=n: p.write_bytes(_random_bytes(s, n)), "", id=f"random{s}_{n}")
      for s in range(4) for n in (1, 9, 300, 4096)],
    *[pytest.param(lambda p, s=s: p.write_bytes(_plausible_length(s, 512)), "", id=f"fits{s}")
      for s in range(4)],
    pytest.param(lambda p: p.write_bytes(b""), "too short", id="empty"),
    pytest.param(lambda p: p.write_bytes(b"\0" * 8), "", id="zero_header"),
    pytest.param(lambda p: p.write_bytes(_nested_header(100_000)), "nested", id="deep_header"),
    pytest.param(_lucid_file("[" * 100_000 + "]" * 100_000), "nested", id="deep_tree_json"),
    pytest.param(_lucid_file(_nested_tree(100_000)), "nested", id="deep_tree_inner"),
    pytest.param(_lucid_file(_meta(1, extra=2)), "not a lucid", id="extra_top_key"),
    pytest.param(_lucid_file(json.dumps({"format": 1, "tree": 1})), "not a lucid",
                 id="format_not_str"),
    pytest.param(_lucid_file(json.dumps({"tree": 1})), "not a lucid", id="no_format"),
    pytest.param(_lucid_file(json.dumps([FORMAT, 1])), "not a lucid", id="meta_is_list"),
    pytest.param(_lucid_file('"' + FORMAT + '"'), "not a lucid", id="meta_is_str"),
    pytest.param(_lucid_file(_meta({"__array__": 0})), "missing", id="array_name_int"),
    pytest.param(_lucid_file(_meta({"__array__": "a0", "x": 1}), {"a0": mx.zeros(1)}),
                 "unexpected", id="array_extra_key"),
    pytest.param(_lucid_file(_meta({"__dict__": [["a", 1, 2]]})), "malformed", id="item_of_3"),
    pytest.param(_lucid_file(_meta({"__dict__": [[["a"], 1]]})), "malformed", id="list_key"),
    pytest.param(_lucid_file(_meta({"__dict__": [[None, 1]]})), "malformed", id="null_key"),
    pytest.param(_lucid_file(_meta({"__dict__": ["ab"]})), "malformed", id="item_is_str"),
    pytest.param(_lucid_file(_meta({"__dict__": {"a": 1}})), "unexpected", id="dict_not_list"),
    pytest.param(_lucid_file(_meta({"__tuple__": "ab"})), "unexpected", id="tuple_not_list"),
    pytest.param(_lucid_file(_meta({"a": 1})), "unexpected", id="plain_object"),
    pytest.param(_lucid_file(_meta({})), "unexpected", id="empty_object"),
    pytest.param(_lucid_file(_meta({"__array__": "a0"}), {"a0": mx.zeros(1), "a1": mx.zeros(1)}),
                 "not referenced", id="extra_array"),
]  # fmt: skip


@pytest.mark.parametrize("write, words", HOSTILE)
def test_hostile_file_refused(write: Callable[[Path], None], words: str, tmp_path: Path) -> None:
    path = tmp_path / "bad"
    write(path)
    _assert_load_refused(path, words)


def test_hostile_files_never_crash_the_process(tmp_path: Path) -> None:
    """The same files, in a fresh interpreter: a crash there fails this test only."""
    paths = []
    for i, case in enumerate(HOSTILE):
        paths.append(str(tmp_path / f"bad{i}"))
        case.values[0](Path(paths[-1]))
    script = f"""
    import json, lucid
    from lucid.serialization import CheckpointError
    other = []
    for path in {paths!r}:
        try:
            lucid.load(path)
            other.append([path, "loaded"])
        except CheckpointError:
            pass
        except BaseException as e:
            other.append([path, type(e).__name__])
    print(json.dumps(other))
    """
    assert _run_isolated(script) == []


# ---------------------------------------------------------------------------- no pickle


def test_nothing_is_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good, evil = tmp_path / "good", tmp_path / "evil"
    _write_checkpoint(good)
    evil.write_bytes(pickle.dumps({"optimizer": {"state": {}, "param_groups": []}}))

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("lucid.load unpickled something")

    for name in ("load", "loads", "Unpickler", "_load", "_loads", "_Unpickler"):
        monkeypatch.setattr(pickle, name, refuse, raising=False)
    monkeypatch.setattr(np, "load", refuse)
    loaded = lucid.load(good)
    assert set(loaded) == {"optimizer", "params"}
    _assert_load_refused(evil)


# ---------------------------------------------------------------------------- atomic save


def _write_garbage(kind: str, error: BaseException) -> Callable[..., None]:
    def fake_save_safetensors(file: str, arrays: dict, metadata: dict | None = None) -> None:
        if kind == "half_a_real_file":
            real(file, arrays, metadata=metadata)
            blob = Path(file).read_bytes()
            Path(file).write_bytes(blob[: len(blob) // 2])
        elif kind == "random":
            Path(file).write_bytes(_random_bytes(0, 300))
        raise error  # kind "nothing": fails before writing a byte

    real = mx.save_safetensors
    return fake_save_safetensors


FAILED_WRITES = [
    pytest.param(kind, error, id=f"{kind}-{type(error).__name__}")
    for kind in ("nothing", "random", "half_a_real_file")
    for error in (OSError("disk full"), RuntimeError("mlx failed"), KeyboardInterrupt())
]


@pytest.mark.parametrize("kind, error", FAILED_WRITES)
def test_failed_save_keeps_the_previous_checkpoint(
    kind: str, error: BaseException, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt"
    good = _write_checkpoint(path)
    opt, params = _trained()
    for p in params:
        p.grad = lucid.Tensor(mx.ones(p.shape, dtype=p.dtype))
    opt.step()  # a newer state, whose save fails
    monkeypatch.setattr(serialization.mx, "save_safetensors", _write_garbage(kind, error))
    with pytest.raises(type(error)):
        lucid.save({"optimizer": opt.state_dict()}, path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"], "a temporary file was left"
    fresh, fresh_params = _trained()
    fresh.load_state_dict(lucid.load(path)["optimizer"])  # the old checkpoint still loads


def test_failed_rename_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt"
    good = _write_checkpoint(path)

    def fail(*args: Any) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(serialization.os, "replace", fail)
    with pytest.raises(OSError, match="rename failed"):
        lucid.save({"x": mx.ones(3)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


# ---------------------------------------------------------------------------- foreign state dicts


def _copy(tree: Any) -> Any:
    """A deep copy of the containers (arrays are immutable, so they are shared)."""
    if isinstance(tree, dict):
        return {k: _copy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_copy(v) for v in tree]
    return tree


def _sgd_like(sd: dict) -> None:  # what torch.optim.SGD(momentum=0.9) would save
    for g in sd["param_groups"]:
        for k in ("eps", "initial_accumulator_value", "lr_decay", "decoupled_weight_decay"):
            del g[k]
        g.update(momentum=0.9, dampening=0.0, nesterov=False)
    for s in sd["state"].values():
        s["momentum_buffer"] = s.pop("sum")
        del s["step"]


def _adam_like(sd: dict) -> None:  # Adam's state keys, Adagrad's hyperparameters
    for s in sd["state"].values():
        s["exp_avg"] = s["exp_avg_sq"] = s.pop("sum")


def _set(*keys: Any, value: Any) -> Callable[[dict], None]:
    def mutate(sd: dict) -> None:
        node = sd
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return mutate


def _delete(*keys: Any) -> Callable[[dict], None]:
    def mutate(sd: dict) -> None:
        node = sd
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]

    return mutate


def _move_param(sd: dict) -> None:  # same total, other group sizes: [0, 1, 2] -> [0], [1, 2]
    sd["param_groups"][0]["params"], sd["param_groups"][1]["params"] = [0], [1, 2]


def _merge_groups(sd: dict) -> None:
    sd["param_groups"] = [{**sd["param_groups"][0], "params": [0, 1, 2]}]


def _three_groups(sd: dict) -> None:
    g0, g1 = sd["param_groups"]
    sd["param_groups"] = [{**g0, "params": [0]}, {**g0, "params": [1]}, g1]


FOREIGN = [  # (mutate a saved state dict, words in the error)
    pytest.param(_sgd_like, "unknown keys", id="sgd_momentum"),
    pytest.param(_adam_like, "state keys", id="adam_state"),
    pytest.param(_move_param, "lists 1 parameters", id="other_group_sizes"),
    pytest.param(_merge_groups, "1 groups", id="one_group"),
    pytest.param(_three_groups, "3 groups", id="three_groups"),
    pytest.param(_set("param_groups", value=[]), "0 groups", id="no_groups"),
    pytest.param(_set("param_groups", value={}), "groups", id="groups_is_dict"),
    pytest.param(_set("state", value=[]), "'state' must be a dict", id="state_is_list"),
    pytest.param(_set("extra", value=1), "exactly the keys", id="extra_top_key"),
    pytest.param(_delete("state"), "exactly the keys", id="no_state"),
    pytest.param(_set("param_groups", 0, "lr", value="0.1"), "lr", id="lr_str"),
    pytest.param(_set("param_groups", 1, "lr", value=-1.0), "lr", id="lr_negative"),
    pytest.param(_set("param_groups", 1, "eps", value=None), "eps", id="eps_none"),
    pytest.param(_set("param_groups", 0, "maximize", value=0), "maximize", id="maximize_int"),
    pytest.param(_set("param_groups", 0, "momentum", value=0.9), "momentum", id="extra_hyper"),
    pytest.param(_delete("param_groups", 1, "lr_decay"), "lr_decay", id="missing_hyper"),
    pytest.param(_delete("param_groups", 1, "params"), "params", id="missing_params"),
    pytest.param(_set("param_groups", 1, "params", value=[2, 2]), "2 parameters", id="ids_2x"),
    pytest.param(_set("param_groups", 1, "params", value=[1]), "each once", id="id_twice"),
    pytest.param(_set("param_groups", 1, "params", value=[7]), "each once", id="id_range"),
    pytest.param(_set("param_groups", 1, "params", value=["x"]), "not an int", id="id_str"),
    pytest.param(_set("param_groups", 1, "params", value=[True]), "not an int", id="id_bool"),
    pytest.param(_set("param_groups", 1, "params", value=2), "params", id="params_int"),
    pytest.param(_set("state", 9, value={}), "names no parameter", id="state_key_range"),
    pytest.param(_set("state", "w", value={}), "not an int", id="state_key_str"),
    pytest.param(_set("state", 0, value=[1.0]), "state keys", id="entry_list"),
    pytest.param(_delete("state", 1, "sum"), "state keys", id="missing_sum"),
    pytest.param(_set("state", 1, "exp_avg", value=mx.zeros(3)), "state keys", id="extra_state"),
    pytest.param(_set("state", 0, "sum", value=mx.zeros((3, 2))), "shape", id="sum_shape"),
    pytest.param(_set("state", 0, "sum", value=mx.zeros(6)), "shape", id="sum_flat"),
    pytest.param(_set("state", 0, "sum", value=[[0.0] * 3] * 2), "mx.array", id="sum_list"),
    pytest.param(_set("state", 0, "sum", value=mx.zeros((2, 3), dtype=mx.bool_)), "dtype",
                 id="sum_bool"),
    pytest.param(_set("state", 0, "sum", value=mx.zeros((2, 3), dtype=mx.complex64)), "dtype",
                 id="sum_complex"),
    pytest.param(_set("state", 2, "step", value=mx.array(-1.0)), "count", id="step_negative"),
    pytest.param(_set("state", 2, "step", value=mx.array(1.5)), "count", id="step_fraction"),
    pytest.param(_set("state", 2, "step", value=mx.array(float("nan"))), "count", id="step_nan"),
    pytest.param(_set("state", 2, "step", value=mx.array([1.0])), "shape", id="step_vector"),
    pytest.param(_set("state", 2, "step", value="2"), "mx.array", id="step_str"),
]  # fmt: skip


@pytest.mark.parametrize("mutate, words", FOREIGN)
def test_foreign_state_dict_refused(mutate: Callable[[dict], None], words: str, tmp_path) -> None:
    source, _ = _trained()
    sd = _copy(source.state_dict())
    mutate(sd)
    opt, params = _trained()
    for p in params:  # make the target differ from the source, so a partial load would show
        p.grad = lucid.Tensor(mx.full(p.shape, 3.0, dtype=p.dtype))
    opt.step()
    _assert_load_state_dict_refused(opt, params, sd, words)
    try:  # and through a file, when the mutated dict can be saved at all
        lucid.save(sd, tmp_path / "sd")
    except (TypeError, ValueError):
        return
    _assert_load_state_dict_refused(opt, params, lucid.load(tmp_path / "sd"), words)

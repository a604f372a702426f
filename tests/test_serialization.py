"""lucid.save / lucid.load: exact round trips, atomic writes, no pickle, bad files refused."""

from __future__ import annotations

import json
import math
import pickle
import struct
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import lucid
import lucid.serialization as serialization
from lucid.serialization import CheckpointError

# ---------------------------------------------------------------------------- round trips


def _assert_tree_equal(a, b, where: str = "obj") -> None:
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, mx.array):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        if a.dtype == mx.bfloat16:  # NumPy has no bfloat16; float32 holds it exactly
            a, b = a.astype(mx.float32), b.astype(mx.float32)
        np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), where  # same keys, same types, same order
        for k in a:
            _assert_tree_equal(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_tree_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


ARRAYS = {
    "float32": mx.array([[1.5, -2.0], [3.25, 1e-30]]),
    "float16": mx.array([1.0, 65504.0, -0.5], dtype=mx.float16),
    "bfloat16": mx.array([1.0, 3.0e38, -0.5], dtype=mx.bfloat16),
    "int32": mx.array([1, -2, 3], dtype=mx.int32),
    "int64": mx.array([2**40, -1], dtype=mx.int64),
    "uint8": mx.array([0, 255], dtype=mx.uint8),
    "bool": mx.array([True, False]),
    "scalar": mx.array(7.0),
    "empty": mx.zeros((0, 3)),
}

TREES = [
    pytest.param(ARRAYS, id="every_dtype"),
    pytest.param({0: {"step": mx.array(3.0)}, 1: {}}, id="int_keys"),
    pytest.param({"a": [1, 2.5, "s", None, True, False], "b": (1, (2, [3]))}, id="python_values"),
    pytest.param([mx.ones(2), {"x": [mx.zeros(1), mx.zeros(1)]}], id="list_top_level"),
    pytest.param({"n": -(2**62), "f": 1e-300, "u": 'ünïcödé "quoted"'}, id="number_edges"),
    pytest.param({0: "int", "0": "str", -3: [], 10**20: None}, id="int_and_str_keys"),
    pytest.param({"__array__": "a0", "__tuple__": [], "__dict__": 1}, id="reserved_names_as_data"),
    pytest.param({}, id="empty_dict"),
    pytest.param(3.5, id="bare_float"),
]


@pytest.mark.parametrize("tree", TREES)
def test_round_trip(tree, tmp_path: Path) -> None:
    lucid.save(tree, tmp_path / "ckpt")
    _assert_tree_equal(tree, lucid.load(tmp_path / "ckpt"))


def test_tensors_load_as_arrays(tmp_path: Path) -> None:
    t = lucid.tensor([1.0, 2.0])
    lucid.save({"w": t, "p": lucid.nn.Parameter([3.0])}, str(tmp_path / "t"))  # str path too
    back = lucid.load(str(tmp_path / "t"))
    _assert_tree_equal(back, {"w": t.data, "p": mx.array([3.0])})


def test_optimizer_state_dict_round_trip(tmp_path: Path) -> None:
    p = lucid.nn.Parameter(mx.ones((2, 3), dtype=mx.bfloat16))
    opt = lucid.optim.Adagrad([p], lr=0.1, maximize=True)
    p.grad = lucid.Tensor(mx.ones((2, 3), dtype=mx.bfloat16))
    opt.step()
    lucid.save(opt.state_dict(), tmp_path / "opt")
    _assert_tree_equal(opt.state_dict(), lucid.load(tmp_path / "opt"))


# ---------------------------------------------------------------------------- atomic writes


def _leftovers(folder: Path, keep: str) -> list[str]:
    return sorted(f.name for f in folder.iterdir() if f.name != keep)


def test_overwrite_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    lucid.save({"v": mx.array([1.0])}, path)
    lucid.save({"v": mx.array([2.0, 3.0])}, path)
    _assert_tree_equal(lucid.load(path), {"v": mx.array([2.0, 3.0])})
    assert _leftovers(tmp_path, "ckpt") == []


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt"
    old = {"v": mx.array([1.0, 2.0])}
    lucid.save(old, path)

    def crash_mid_write(file, arrays, metadata=None):
        Path(file).write_bytes(b"\x00partial")  # some bytes reach the disk, then it fails
        raise OSError("disk full")

    monkeypatch.setattr(serialization.mx, "save_safetensors", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        lucid.save({"v": mx.array([9.0])}, path)
    monkeypatch.undo()
    _assert_tree_equal(lucid.load(path), old)
    assert _leftovers(tmp_path, "ckpt") == []  # the temporary file is gone


UNSAVEABLE = [
    pytest.param({"x": math.nan}, ValueError, "finite", id="nan"),
    pytest.param({"x": [math.inf]}, ValueError, "finite", id="inf"),
    pytest.param({1.5: 1}, TypeError, "key", id="float_key"),
    pytest.param({True: 1}, TypeError, "key", id="bool_key"),
    pytest.param({(1, 2): 1}, TypeError, "key", id="tuple_key"),
    pytest.param({"x": {1, 2}}, TypeError, "set", id="set"),
    pytest.param({"x": object()}, TypeError, "object", id="object"),
    pytest.param({"x": np.array([None])}, TypeError, "dtype object", id="numpy_object_array"),
    pytest.param({"x": np.array(["a"])}, TypeError, "dtype <U1", id="numpy_str_array"),
    pytest.param({"x": len}, TypeError, "builtin", id="function"),
]


@pytest.mark.parametrize("tree, error, words", UNSAVEABLE)
def test_unsaveable_values_raise_and_write_nothing(tree, error, words, tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    lucid.save({"old": 1}, path)
    with pytest.raises(error, match=words):
        lucid.save(tree, path)
    assert lucid.load(path) == {"old": 1}
    assert _leftovers(tmp_path, "ckpt") == []


# ---------------------------------------------------------------------------- refusing bad files


def _raw(header: dict, data: bytes = b"") -> bytes:
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


def _lucid_meta(tree) -> dict:
    return {"lucid": json.dumps({"format": "lucid.checkpoint.v1", "tree": tree})}


def _write_safetensors(path: Path, arrays: dict, metadata: dict) -> None:
    tmp = path.with_name(path.name + ".safetensors")  # MLX adds the suffix when it is missing
    mx.save_safetensors(str(tmp), arrays, metadata=metadata)
    tmp.rename(path)


def _good(path: Path) -> bytes:
    lucid.save({"w": mx.arange(8, dtype=mx.float32)}, path)
    return path.read_bytes()


BAD_FILES = [  # (path, good checkpoint bytes) -> writes a bad file at path
    pytest.param(lambda p, good: p.write_bytes(b""), id="empty"),
    pytest.param(lambda p, good: p.write_bytes(good[:5]), id="shorter_than_header_length"),
    pytest.param(lambda p, good: p.write_bytes(good[: len(good) // 2]), id="truncated"),
    pytest.param(lambda p, good: p.write_bytes(good[:-4]), id="last_bytes_missing"),
    pytest.param(lambda p, good: p.write_bytes(struct.pack("<Q", 2**60) + b"{}"), id="huge_header"),
    pytest.param(
        lambda p, good: p.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{}"), id="not_utf8"
    ),
    pytest.param(lambda p, good: p.write_bytes(_raw([1, 2])), id="header_not_a_dict"),  # type: ignore[arg-type]
    pytest.param(lambda p, good: p.write_bytes(pickle.dumps({"w": [1.0]})), id="pickle"),
    pytest.param(lambda p, good: p.write_bytes(np.random.default_rng(0).bytes(256)), id="noise"),
    pytest.param(lambda p, good: _write_safetensors(p, {"a": mx.zeros(2)}, {}), id="no_metadata"),
    pytest.param(
        lambda p, good: _write_safetensors(p, {"a": mx.zeros(2)}, {"lucid": "{"}), id="bad_json"
    ),
    pytest.param(
        lambda p, good: _write_safetensors(
            p, {}, {"lucid": json.dumps({"format": "other", "tree": 1})}
        ),
        id="wrong_format_tag",
    ),
    pytest.param(
        lambda p, good: _write_safetensors(p, {}, _lucid_meta({"__array__": "a0"})),
        id="array_missing",
    ),
    pytest.param(
        lambda p, good: _write_safetensors(
            p, {"a0": mx.zeros(2), "a1": mx.zeros(1)}, _lucid_meta({"__array__": "a0"})
        ),
        id="array_not_referenced",
    ),  # fmt: skip
    pytest.param(
        lambda p, good: _write_safetensors(p, {}, _lucid_meta({"__pickle__": "x"})),
        id="unknown_object",
    ),
    pytest.param(
        lambda p, good: _write_safetensors(p, {}, _lucid_meta({"__dict__": [[1.5, 2]]})),
        id="float_dict_key",
    ),
    pytest.param(
        lambda p, good: p.write_bytes(
            _raw(
                {
                    "a0": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                    "__metadata__": _lucid_meta({"__array__": "a0"}),
                },
                b"\x00" * 8,
            )
        ),
        id="data_past_the_end",
    ),
    pytest.param(
        lambda p, good: p.write_bytes(
            _raw(
                {
                    "a0": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]},
                    "__metadata__": _lucid_meta({"__array__": "a0"}),
                },
                b"\x00" * 8,
            )
        ),
        id="shape_disagrees_with_size",
    ),
    pytest.param(
        lambda p, good: p.write_bytes(
            _raw(
                {
                    "a0": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]},
                    "__metadata__": _lucid_meta({"__array__": "a0"}),
                },
                b"\x00" * 8,
            )
        ),
        id="unknown_dtype",
    ),
]


@pytest.mark.parametrize("write", BAD_FILES)
def test_bad_file_raises_checkpoint_error(write, tmp_path: Path) -> None:
    path = tmp_path / "bad"
    good = _good(tmp_path / "good")
    write(path, good)
    with pytest.raises(CheckpointError, match="lucid.load") as info:
        lucid.load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        lucid.load(tmp_path / "nope")


def test_the_module_has_no_pickle() -> None:
    source = Path(serialization.__file__).read_text()
    assert "import pickle" not in source and "allow_pickle" not in source

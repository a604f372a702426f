"""lucid.save / lucid.load: exact round trips (paths and binary file objects, mx and NumPy
arrays), atomic writes, no pickle, bad and truncated files refused, errors naming the file."""

from __future__ import annotations

import io
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


def _via_path(tree, tmp_path: Path):
    lucid.save(tree, tmp_path / "ckpt")
    return lucid.load(tmp_path / "ckpt")


def _via_str(tree, tmp_path: Path):
    lucid.save(tree, str(tmp_path / "ckpt"))
    return lucid.load(str(tmp_path / "ckpt"))


def _via_open_file(tree, tmp_path: Path):
    with open(tmp_path / "ckpt", "wb") as f:
        lucid.save(tree, f)
    with open(tmp_path / "ckpt", "rb") as f:
        return lucid.load(f)


def _via_bytesio(tree, tmp_path: Path):
    buffer = io.BytesIO()
    lucid.save(tree, buffer)
    buffer.seek(0)
    return lucid.load(buffer)


def _via_bytesio_then_path(tree, tmp_path: Path):  # the same bytes either way
    buffer = io.BytesIO()
    lucid.save(tree, buffer)
    (tmp_path / "ckpt").write_bytes(buffer.getvalue())
    return lucid.load(tmp_path / "ckpt")


ROUTES = [
    pytest.param(_via_path, id="path"),
    pytest.param(_via_str, id="str"),
    pytest.param(_via_open_file, id="open_file"),
    pytest.param(_via_bytesio, id="bytesio"),
    pytest.param(_via_bytesio_then_path, id="bytesio_to_path"),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("tree", TREES)
def test_round_trip(tree, route, tmp_path: Path) -> None:
    _assert_tree_equal(tree, route(tree, tmp_path))


NUMPY_ARRAYS = {
    "float64": np.array([1 / 3, 1e-300, -np.pi, np.nan, np.inf]),  # MLX would narrow these
    "float32": np.arange(6, dtype=np.float32).reshape(2, 3),
    "float16": np.array([65504.0, -0.5], np.float16),
    "complex128": np.array([1 + 2j, -1e-200j]),
    "complex64": np.array([3 - 4j], np.complex64),
    "int64": np.array([2**62, -(2**63)]),
    "uint64": np.array([2**64 - 1], np.uint64),
    "int8": np.array([-128, 127], np.int8),
    "uint16": np.array([65535], np.uint16),
    "bool": np.array([[True, False]]),
    "0-d": np.array(2.5),
    "empty": np.zeros((0, 4), np.int32),
    "big_endian": np.array([1.5, -2.0], dtype=">f8"),
    "strided_view": np.arange(12.0).reshape(3, 4)[::-1, ::2],
    "fortran_order": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", list(NUMPY_ARRAYS))
def test_numpy_arrays_come_back_as_the_same_ndarray(name, route, tmp_path: Path) -> None:
    a = NUMPY_ARRAYS[name]
    back = route({"x": a, "with": [mx.ones(2), a]}, tmp_path)
    for got in (back["x"], back["with"][1]):
        assert type(got) is np.ndarray
        assert got.dtype == a.dtype.newbyteorder("=") and got.shape == a.shape
        np.testing.assert_array_equal(got, a)
        assert got.tobytes() == a.astype(got.dtype).tobytes()  # bit for bit (NaN included)
        assert got.flags.writeable and got.flags.c_contiguous
    assert isinstance(back["with"][0], mx.array)


def test_save_writes_at_the_file_position_and_load_reads_from_it() -> None:
    buffer = io.BytesIO(b"prefix")
    buffer.seek(0, io.SEEK_END)
    lucid.save({"v": mx.array([1.0, 2.0])}, buffer)
    buffer.seek(len(b"prefix"))
    _assert_tree_equal(lucid.load(buffer), {"v": mx.array([1.0, 2.0])})
    assert buffer.getvalue().startswith(b"prefix")


def _with_open(path: Path, mode: str, use):
    with open(path, mode) as f:
        return use(f)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: _with_open(p, "w", lambda f: lucid.save({}, f)), "binary mode \\(wb\\)"),
        (lambda p: _with_open(p, "r", lucid.load), "text file; open it in binary mode \\(rb\\)"),
        (lambda p: lucid.save({}, 3), "expected a path or a binary file object; got int"),
        (lambda p: lucid.load(None), "expected a path or a binary file object; got NoneType"),
    ],
    ids=["save-text", "load-text", "save-int", "load-none"],
)
def test_wrong_kinds_of_file_raise_type_error(call, match, tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    lucid.save({"v": 1}, path)
    with pytest.raises(TypeError, match=match):
        call(path)


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


def test_save_errors_name_the_path_not_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no" / "such" / "folder" / "ckpt"
    with pytest.raises(FileNotFoundError) as info:
        lucid.save({"v": 1}, missing)
    assert str(missing) in str(info.value) and ".lucid-" not in str(info.value)

    def refuse(file, arrays, metadata=None):
        raise RuntimeError(f"[save_safetensors] cannot open {file}")

    monkeypatch.setattr(serialization.mx, "save_safetensors", refuse)
    with pytest.raises(RuntimeError) as info:
        lucid.save({"v": mx.ones(1)}, tmp_path / "ckpt")
    assert str(tmp_path / "ckpt") in str(info.value) and ".lucid-" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


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
    *[
        pytest.param(
            lambda p, good, node=node, arrays=arrays: _write_safetensors(
                p, arrays, _lucid_meta(node)
            ),
            id=f"ndarray_{name}",
        )
        for name, node, arrays in [
            (
                "object_dtype",
                {"__ndarray__": "a0", "dtype": "object", "shape": [1]},
                {"a0": mx.zeros(8, dtype=mx.uint8)},
            ),
            (
                "pickle_dtype",
                {"__ndarray__": "a0", "dtype": "O", "shape": [1]},
                {"a0": mx.zeros(8, dtype=mx.uint8)},
            ),
            (
                "dtype_not_str",
                {"__ndarray__": "a0", "dtype": ["f8"], "shape": [1]},
                {"a0": mx.zeros(8, dtype=mx.uint8)},
            ),
            (
                "shape_disagrees",
                {"__ndarray__": "a0", "dtype": "float64", "shape": [2]},
                {"a0": mx.zeros(8, dtype=mx.uint8)},
            ),
            (
                "negative_shape",
                {"__ndarray__": "a0", "dtype": "float64", "shape": [-1]},
                {"a0": mx.zeros(8, dtype=mx.uint8)},
            ),
            (
                "float_shape",
                {"__ndarray__": "a0", "dtype": "float64", "shape": [1.0]},
                {"a0": mx.zeros(8, dtype=mx.uint8)},
            ),
            (
                "not_bytes",
                {"__ndarray__": "a0", "dtype": "float32", "shape": [2]},
                {"a0": mx.zeros(2, dtype=mx.float32)},
            ),
            (
                "2d_bytes",
                {"__ndarray__": "a0", "dtype": "uint8", "shape": [2, 2]},
                {"a0": mx.zeros((2, 2), dtype=mx.uint8)},
            ),
            ("missing_array", {"__ndarray__": "a9", "dtype": "uint8", "shape": [1]}, {}),
            (
                "extra_key",
                {"__ndarray__": "a0", "dtype": "uint8", "shape": [1], "code": "x"},
                {"a0": mx.zeros(1, dtype=mx.uint8)},
            ),
        ]
    ],  # fmt: skip
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


class _Named(io.BytesIO):
    name = "in-memory checkpoint"  # what an error calls a file object that has a name


SOURCES = [  # (how the bad bytes reach lucid.load, how the error must name them)
    pytest.param(lambda p: p, lambda p: str(p), id="path"),
    pytest.param(lambda p: str(p), lambda p: str(p), id="str"),
    pytest.param(lambda p: open(p, "rb"), lambda p: str(p), id="open_file"),  # noqa: SIM115
    pytest.param(lambda p: io.BytesIO(p.read_bytes()), lambda p: "<BytesIO>", id="bytesio"),
    pytest.param(lambda p: _Named(p.read_bytes()), lambda p: "in-memory checkpoint", id="named"),
]


def _assert_refused(source, shown, path: Path, words: str = "") -> CheckpointError:
    """``lucid.load`` refuses the file with a CheckpointError (a ValueError) naming it."""
    f = source(path)
    try:
        with pytest.raises(CheckpointError, match=words or "lucid.load") as info:
            lucid.load(f)
    finally:
        if hasattr(f, "close"):
            f.close()
    message = str(info.value)
    assert message.startswith(f"lucid.load: {shown(path)}: "), message
    assert ".lucid-" not in message and isinstance(info.value, ValueError)
    return info.value


@pytest.mark.parametrize(("source", "shown"), SOURCES)
@pytest.mark.parametrize("write", BAD_FILES)
def test_bad_file_raises_checkpoint_error(write, source, shown, tmp_path: Path) -> None:
    path = tmp_path / "bad"
    good = _good(tmp_path / "good")
    write(path, good)
    _assert_refused(source, shown, path)


def _cuts(good: bytes) -> dict[str, int]:
    header_end = 8 + struct.unpack("<Q", good[:8])[0]
    return {
        "empty": 0,
        "inside_length": 5,
        "after_length": 8,
        "inside_header": header_end // 2,
        "after_header": header_end,
        "inside_data": (header_end + len(good)) // 2,
        "last_byte": len(good) - 1,
    }


@pytest.mark.parametrize(("source", "shown"), SOURCES)
@pytest.mark.parametrize("cut", list(_cuts(b"\x10" + b"\0" * 7)))
def test_a_cut_file_says_it_is_truncated(cut, source, shown, tmp_path: Path) -> None:
    good = _good(tmp_path / "good")
    path = tmp_path / "cut"
    path.write_bytes(good[: _cuts(good)[cut]])
    error = _assert_refused(source, shown, path)
    assert "truncated" in str(error) or (cut == "empty" and "empty" in str(error)), str(error)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        lucid.load(tmp_path / "nope")


def test_the_module_has_no_pickle() -> None:
    source = Path(serialization.__file__).read_text()
    assert "import pickle" not in source and "allow_pickle" not in source

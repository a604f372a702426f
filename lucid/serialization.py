"""lucid.save / lucid.load: state dicts on disk, with no pickle.

A checkpoint is one safetensors file. Its arrays are the tensors; the structure around
them (nested dicts with str or int keys, lists, numbers, strings, bools, None) is JSON
in the file's metadata, where each array appears as ``{"__array__": name}``. A NumPy
array is stored as its raw little-endian bytes (a uint8 array, since safetensors in MLX
has no float64) under ``{"__ndarray__": name, "dtype": "float64", "shape": [2, 3]}``,
and comes back as the same ``np.ndarray``, bit for bit. Loading never runs code from the
file: the header is checked before MLX reads the data, the JSON is decoded into plain
containers only, and a NumPy dtype must be one of a fixed list of numeric ones (never
``object``, which would need pickle).

The target is a path or a binary file object (``io.BytesIO``, ``open(..., "rb")``/
``"wb"``). Writes to a path are atomic: the file is written under a temporary name in
the target folder, flushed to disk, then renamed over the target, so a failure mid-write
leaves any previous checkpoint intact. Every error names what the caller passed (the
path, or the file object's ``name``), never the temporary file.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import IO, Any

import mlx.core as mx
import numpy as np

from .tensor import Tensor

__all__ = ["save", "load"]

_FORMAT = "lucid.checkpoint.v1"
# safetensors dtype names and their item sizes, as MLX writes and reads them
_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
_MAX_HEADER = 100 * 1024 * 1024
# the NumPy dtypes a checkpoint may hold (stored little-endian); nothing that needs pickle
_NUMPY_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
    + ["float16", "float32", "float64", "complex64", "complex128"]
)

File = str | os.PathLike | IO[bytes]


class CheckpointError(ValueError):
    """The file is not a readable lucid checkpoint."""


def save(obj: Any, f: File) -> None:
    """Write ``obj`` (a state dict, or any tree of dicts, lists, tuples, scalars, Tensors,
    mx.arrays and NumPy arrays) to ``f``: a path (written atomically) or a binary
    file object, written at its current position."""
    arrays: dict[str, mx.array] = {}
    skeleton = _encode(obj, arrays, "obj")
    meta = json.dumps({"format": _FORMAT, "tree": skeleton}, allow_nan=False)
    if not isinstance(f, (str, os.PathLike)):
        _binary_file(f, "save", "write")
        buffer = io.BytesIO()
        mx.save_safetensors(buffer, arrays, metadata={"lucid": meta})
        f.write(buffer.getvalue())
        return
    path = Path(f)
    tmp = ""
    try:
        # a short temporary name (a long target name must not overflow NAME_MAX), made in
        # the target's folder so that the rename is atomic
        fd, tmp = tempfile.mkstemp(prefix=".lucid-", suffix=".safetensors", dir=path.parent)
        os.close(fd)
        mx.save_safetensors(tmp, arrays, metadata={"lucid": meta})
        with open(tmp, "rb+") as out:
            os.fchmod(out.fileno(), _file_mode(path))  # mkstemp's 0600 is not a user's file
            os.fsync(out.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)  # the rename itself survives a power cut
    except BaseException as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        renamed = _naming(e, tmp, path)
        if renamed is e:
            raise
        raise renamed from None


def _naming(e: BaseException, tmp: str, path: Path) -> BaseException:
    """``e`` with the temporary file (or its folder's would-be name) replaced by ``path``."""
    if not isinstance(e, Exception):
        return e
    if isinstance(e, OSError) and e.strerror is not None:
        return type(e)(e.errno, e.strerror, str(path))
    text = str(e)
    if tmp and tmp in text:
        try:
            return type(e)(text.replace(tmp, str(path)))
        except TypeError:  # an exception type with its own constructor
            return e
    return e


def _binary_file(f: Any, verb: str, method: str) -> None:
    if not callable(getattr(f, method, None)):
        raise TypeError(
            f"lucid.{verb}: expected a path or a binary file object; got {type(f).__name__}"
        )
    if isinstance(f, io.TextIOBase):
        raise TypeError(
            f"lucid.{verb}: {_name(f)} is a text file; open it in binary mode "
            f"({'rb' if verb == 'load' else 'wb'})"
        )


def _name(f: Any) -> str:
    """How an error names a file object: its ``name`` (an open file's path) or its type."""
    name = getattr(f, "name", None)
    return name if isinstance(name, str) else f"<{type(f).__name__}>"


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would give: the old file's, or 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def load(f: File) -> Any:
    """Read what :func:`save` wrote, from a path or a binary file object (read from its
    position to the end). Raises :class:`CheckpointError` (a ``ValueError``) naming the
    file and the problem when it is truncated, corrupt or not lucid's."""
    if isinstance(f, (str, os.PathLike)):
        path = Path(f)
        name = str(path)
        if path.exists() and not path.is_file():  # a folder, or a FIFO that would block
            raise CheckpointError(f"lucid.load: {name}: not a regular file")
        with open(path, "rb") as file:
            _check_header(file, path.stat().st_size, name)
        source: Any = str(path)
    else:
        _binary_file(f, "load", "read")
        name = _name(f)
        blob = f.read()
        if not isinstance(blob, bytes):
            raise TypeError(f"lucid.load: {name} gave {type(blob).__name__}, not bytes")
        _check_header(io.BytesIO(blob), len(blob), name)
        source = io.BytesIO(blob)
    try:
        arrays, metadata = mx.load(source, format="safetensors", return_metadata=True)
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"lucid.load: {name}: unreadable safetensors data ({e})") from None
    try:
        meta = json.loads(metadata["lucid"])
        if (
            not isinstance(meta, dict)
            or meta.get("format") != _FORMAT
            or set(meta) != {"format", "tree"}
        ):
            raise CheckpointError("not a lucid checkpoint")
        used: set[str] = set()
        obj = _decode(meta["tree"], arrays, used)
        if used != set(arrays):
            raise CheckpointError(f"arrays {sorted(set(arrays) - used)} are not referenced")
    except CheckpointError as e:
        raise CheckpointError(f"lucid.load: {name}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"lucid.load: {name}: malformed metadata ({e!r})") from None
    except RecursionError:  # json.loads or _decode on a crafted, deeply nested tree
        raise CheckpointError(f"lucid.load: {name}: metadata is nested too deeply") from None
    return obj


# ---------------------------------------------------------------------------- tree codec


def _encode(obj: Any, arrays: dict[str, mx.array], where: str) -> Any:
    if isinstance(obj, Tensor):
        obj = obj.data
    if isinstance(obj, np.generic):  # e.g. a NumPy float as a hyperparameter
        obj = obj.item()
    if isinstance(obj, mx.array):
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {"__array__": name}
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in _NUMPY_DTYPES:
            raise TypeError(
                f"lucid.save: {where} is a NumPy array of dtype {obj.dtype}; only bool, "
                "integer, float and complex arrays can be saved"
            )
        name = f"a{len(arrays)}"
        little = obj.astype(obj.dtype.newbyteorder("<"), copy=False)
        arrays[name] = mx.array(np.ascontiguousarray(little).reshape(-1).view(np.uint8))
        return {"__ndarray__": name, "dtype": obj.dtype.name, "shape": list(obj.shape)}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"lucid.save: {where} has key {k!r}; keys must be str or int")
            items.append([k, _encode(v, arrays, f"{where}[{k!r}]")])
        return {"__dict__": items}
    if isinstance(obj, (list, tuple)):
        enc = [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
        return {"__tuple__": enc} if isinstance(obj, tuple) else enc
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"lucid.save: {where} is {obj}; only finite floats can be saved")
        return obj
    raise TypeError(
        f"lucid.save: {where} is a {type(obj).__name__}; expected dicts, lists, tuples, "
        "numbers, strings, None, Tensors, mx.arrays or NumPy arrays"
    )


def _decode(node: Any, arrays: dict[str, mx.array], used: set[str]) -> Any:
    if isinstance(node, list):
        return [_decode(v, arrays, used) for v in node]
    if isinstance(node, dict):
        if set(node) == {"__array__"}:
            name = node["__array__"]
            if not isinstance(name, str) or name not in arrays:
                raise CheckpointError(f"array {name!r} is missing from the file")
            used.add(name)
            return arrays[name]
        if set(node) == {"__ndarray__", "dtype", "shape"}:
            return _decode_ndarray(node, arrays, used)
        if set(node) == {"__tuple__"} and isinstance(node["__tuple__"], list):
            return tuple(_decode(v, arrays, used) for v in node["__tuple__"])
        if set(node) == {"__dict__"} and isinstance(node["__dict__"], list):
            out = {}
            for item in node["__dict__"]:
                ok_key = isinstance(item, list) and len(item) == 2 and type(item[0]) in (str, int)
                if not ok_key:
                    raise CheckpointError(f"malformed dict item {item!r:.80}")
                out[item[0]] = _decode(item[1], arrays, used)
            return out
        raise CheckpointError(f"unexpected object {node!r:.80}")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise CheckpointError(f"unexpected value {node!r:.80}")


def _decode_ndarray(node: dict, arrays: dict[str, mx.array], used: set[str]) -> np.ndarray:
    """The NumPy array that ``{"__ndarray__": name, "dtype": ..., "shape": ...}`` stands for."""
    name, dtype, shape = node["__ndarray__"], node["dtype"], node["shape"]
    if not isinstance(name, str) or name not in arrays:
        raise CheckpointError(f"array {name!r} is missing from the file")
    if not isinstance(dtype, str) or dtype not in _NUMPY_DTYPES:
        raise CheckpointError(f"NumPy array {name!r} has dtype {dtype!r:.40}, not a numeric one")
    ok_shape = isinstance(shape, list) and all(type(d) is int and 0 <= d < 2**63 for d in shape)
    raw = arrays[name]
    kind = np.dtype(dtype)
    if (
        not ok_shape
        or raw.dtype != mx.uint8
        or raw.ndim != 1
        or (raw.size != math.prod(shape) * kind.itemsize)
    ):
        raise CheckpointError(f"NumPy array {name!r}: bytes disagree with dtype and shape")
    used.add(name)
    flat = np.array(raw).view(kind.newbyteorder("<"))  # np.array copies: writable, its own
    return flat.astype(kind, copy=False).reshape(shape)


def _check_header(f: IO[bytes], size: int, name: str) -> None:
    """Validate the safetensors header against the file's ``size`` before MLX reads it;
    a file that ends early says it is truncated."""
    try:
        head = f.read(8)
        if len(head) < 8:
            what = "the file is empty: " if size == 0 else "truncated: "
            raise CheckpointError(f"{what}{size} bytes is too short for a checkpoint")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER:
            raise CheckpointError(
                f"header length {n} is implausible (over {_MAX_HEADER} bytes): not a checkpoint"
            )
        if n > size - 8:
            raise CheckpointError(
                f"truncated: the header is {n} bytes, but only {size - 8} follow its length"
            )
        header = json.loads(f.read(n).decode("utf-8"))
    except CheckpointError as e:
        raise CheckpointError(f"lucid.load: {name}: {e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"lucid.load: {name}: header is not JSON ({e})") from None
    except RecursionError:  # json.loads on a crafted, deeply nested header
        raise CheckpointError(f"lucid.load: {name}: header is nested too deeply") from None
    data_size = size - 8 - n
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise CheckpointError(f"lucid.load: {name}: no lucid metadata in the header")
    if not isinstance(header["__metadata__"].get("lucid"), str):
        raise CheckpointError(f"lucid.load: {name}: not a lucid checkpoint")
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (
                dtype in _ITEMSIZE
                and isinstance(shape, list)
                and all(isinstance(d, int) and 0 <= d < 2**31 for d in shape)  # MLX: int32
                and all(isinstance(x, int) for x in (start, end))
                and 0 <= start <= end
                and end - start == math.prod(shape) * _ITEMSIZE[dtype]
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"lucid.load: {name}: tensor {key!r} has a bad header entry")
        if end > data_size:
            raise CheckpointError(
                f"lucid.load: {name}: truncated: tensor {key!r} ends at byte {end} of the "
                f"data, which has only {data_size}"
            )

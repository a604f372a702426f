"""lucid.save / lucid.load: state dicts on disk, with no pickle.

A checkpoint is one safetensors file. Its arrays are the tensors; the structure around
them (nested dicts with str or int keys, lists, numbers, strings, bools, None) is JSON
in the file's metadata, where each array appears as ``{"__array__": name}``. Loading
never runs code from the file: the header is checked before MLX reads the data, and
the JSON is decoded into plain containers only.

Writes are atomic: the file is written under a temporary name in the target folder,
flushed to disk, then renamed over the target, so a failure mid-write leaves any
previous checkpoint intact.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

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


class CheckpointError(ValueError):
    """The file is not a readable lucid checkpoint."""


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` (a state dict, or any tree of dicts, lists, scalars and arrays)."""
    arrays: dict[str, mx.array] = {}
    skeleton = _encode(obj, arrays, "obj")
    meta = json.dumps({"format": _FORMAT, "tree": skeleton}, allow_nan=False)
    path = Path(path)
    # a short temporary name (a long target name must not overflow NAME_MAX), made in the
    # target's folder so that the rename is atomic
    fd, tmp = tempfile.mkstemp(prefix=".lucid-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        mx.save_safetensors(tmp, arrays, metadata={"lucid": meta})
        with open(tmp, "rb+") as f:
            os.fchmod(f.fileno(), _file_mode(path))  # mkstemp's 0600 is not a user's file
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)  # the rename itself survives a power cut
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def load(path: str | os.PathLike) -> Any:
    """Read what :func:`save` wrote. Raises :class:`CheckpointError` (a ``ValueError``)
    naming the file and the problem when it is truncated, corrupt or not lucid's."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, or a FIFO that would block
        raise CheckpointError(f"lucid.load: {path}: not a regular file")
    _check_header(path)
    try:
        arrays, metadata = mx.load(str(path), format="safetensors", return_metadata=True)
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"lucid.load: {path}: unreadable safetensors data ({e})") from None
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
        raise CheckpointError(f"lucid.load: {path}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"lucid.load: {path}: malformed metadata ({e!r})") from None
    except RecursionError:  # json.loads or _decode on a crafted, deeply nested tree
        raise CheckpointError(f"lucid.load: {path}: metadata is nested too deeply") from None
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
        "numbers, strings, None, Tensors or mx.arrays"
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


def _check_header(path: Path) -> None:
    """Validate the safetensors header against the file size before MLX reads it."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{size} bytes is too short for a checkpoint")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_HEADER):
                raise CheckpointError(f"header length {n} exceeds the file ({size} bytes)")
            header = json.loads(f.read(n).decode("utf-8"))
    except CheckpointError as e:
        raise CheckpointError(f"lucid.load: {path}: {e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"lucid.load: {path}: header is not JSON ({e})") from None
    except RecursionError:  # json.loads on a crafted, deeply nested header
        raise CheckpointError(f"lucid.load: {path}: header is nested too deeply") from None
    data_size = size - 8 - n
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise CheckpointError(f"lucid.load: {path}: no lucid metadata in the header")
    if not isinstance(header["__metadata__"].get("lucid"), str):
        raise CheckpointError(f"lucid.load: {path}: not a lucid checkpoint")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (
                dtype in _ITEMSIZE
                and isinstance(shape, list)
                and all(isinstance(d, int) and 0 <= d < 2**31 for d in shape)  # MLX: int32
                and all(isinstance(x, int) for x in (start, end))
                and 0 <= start <= end <= data_size
                and end - start == math.prod(shape) * _ITEMSIZE[dtype]
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"lucid.load: {path}: tensor {name!r} has a bad header entry")

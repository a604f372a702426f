"""Index validation: every gather or scatter that takes indices from a user goes through here.

MLX does not bounds-check: an out-of-range gather reads whatever lies past the array, and
an out-of-range scatter writes there (measured: garbage values, or the interpreter aborting
with ``double free or corruption``). So lucid checks every user-supplied index before MLX
sees it, in one of two ways, chosen by where the indices live:

- **On the host** (Python ints and lists, NumPy arrays): checked there, before they are
  converted, with a ``min``/``max`` over the array. A bad index raises ``IndexError`` at
  the call. No synchronisation.
- **In MLX** (``mx.array``, a Tensor's ``.data``): the values may still be pending, and
  MLX has no public "is this evaluated" query, so reading them would force an evaluation
  in the middle of the forward. Instead they are *clamped* into range, so that the gather,
  its backward scatter and any later optimizer scatter only ever touch valid memory, and a
  lazy validity flag (``mx.all(low <= i < high)``) joins a registry of pending checks.
  :func:`check_pending` evaluates the flags and raises for the first bad one. It runs at
  the start of ``Optimizer.step()`` (before anything changes), and in ``Tensor.item()``,
  ``.numpy()``, ``.tolist()`` and ``float()``, where the flags are evaluated in the same
  ``mx.eval`` as the value. The registry holds at most :data:`LIMIT` flags; the next
  lookup checks them all (one small evaluation), so a long loop that never steps or reads
  a value does not grow it.

A third way costs nothing: an array whose range is already known (:func:`note_range`; a
:class:`~lucid.utils.data.TensorDataset` batch, whose columns' ranges were taken once)
needs no check at all.

Until the error is raised, results computed from clamped indices are wrong (memory is
safe, values are not); the error is raised once, and the pending checks are dropped with it.

Under :func:`lucid.compile` the flags made while a function is traced are *captured*
(:func:`capturing`) instead of registered: they become outputs of the compiled call,
which registers them (:func:`defer`) with a function that undoes the call. A bad one
then raises where any lazy check does, after the undo: the call leaves nothing behind.

Which case synchronises: only the lazy one, and only when nothing else reads a value first.
If the loss is read (``loss.item()``) before ``step()``, the flags ride in that evaluation.
If not, ``step()`` makes one extra ``mx.eval`` of the flags before its own.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

__all__ = [
    "LIMIT",
    "Pending",
    "capturing",
    "check",
    "checked_indices",
    "check_pending",
    "defer",
    "known_range",
    "note_range",
    "pending",
]

LIMIT = 64  # pending flags kept before the next lookup checks them all

# What it costs (benchmarks/bounds_cost.py: variants interleaved in one process; 2-core
# Linux x86-64, MLX 0.32.4 CPU, load average ~1.2, shared), 512 indices into 200k rows:
#   host check (NumPy min/max)                     5.4 us
#   lazy: clamp + flag graph, no evaluation        9.7 us
#   lazy + check_pending (the extra mx.eval)      95.6 us  (any mx.eval of a tiny op: 75 us)
# A 200k x 64 sparse-embedding Adagrad step, 512 ids, loss read: host 0.930 ms, lazy
# 0.950 ms. An MLP 64-128-10 cross-entropy step (batch 128): loss read, host targets
# 1.845 ms, lazy 1.867 ms, DataLoader batch (known range) 1.901 ms; loss not read, 1.721,
# 1.654 and 1.687 ms: the differences are within the machine's noise (a few %), except
# the extra evaluation (~0.1 ms) a step pays when lazy indices are pending and unread.


@dataclass(frozen=True)
class _Range:
    """The valid values of one index argument: ``[low, size)`` and, if set, ``ignore``."""

    who: str  # the op or layer, e.g. "embedding()"
    what: str  # what is indexed, e.g. "an embedding with 10 rows"
    size: int
    negative: bool  # [-size, size), negatives counted from the end
    ignore: int | None  # one more accepted value, passed through (ignore_index)
    noun: str  # what one value is called: "index", "target"

    @property
    def low(self) -> int:
        return -self.size if self.negative else 0

    def message(self, value: int, where: str = "") -> str:
        valid = f"{self.low} to {self.size - 1}" if self.size else "none"
        if self.ignore is not None:
            valid += f", or ignore_index {self.ignore}"
        text = f"{self.who}: {self.noun} {value} is out of range for {self.what}"
        return f"{text} (valid: {valid}){where}"


@dataclass(frozen=True)
class Pending:
    """One lazy check: ``ok`` (a lazy bool scalar) says whether every value of ``values``
    (the raw indices, flat, kept for the message) lies in ``range``."""

    ok: mx.array
    values: mx.array
    range: _Range
    #: what puts things back when the check fails (``lucid.compile`` undoes its call)
    undo: Callable[[], None] | None = None


_Pending = Pending
_lock = threading.Lock()
_pending: list[_Pending] = []
_captured: list[list[_Pending]] = []  # innermost last: the traces that capture checks
# arrays whose values are known to lie in [low, high] without reading them (a DataLoader
# batch gathered from a column whose range was taken once): id -> (weak ref, low, high)
_known: dict[int, tuple[weakref.ref, int, int]] = {}


def note_range(array: mx.array, low: int, high: int) -> None:
    """Record that every value of ``array`` lies in ``[low, high]``, so that indexing with
    this very array object needs no check (nor clamp, nor flag). Used by
    :class:`lucid.utils.data.TensorDataset` for the integer columns of its batches."""
    key = id(array)
    _known[key] = (weakref.ref(array, lambda _: _known.pop(key, None)), int(low), int(high))


def known_range(array: mx.array) -> tuple[int, int] | None:
    """``(low, high)`` if :func:`note_range` vouched for this very array object, else None."""
    return _known_range(array)


def _known_range(array: mx.array) -> tuple[int, int] | None:
    entry = _known.get(id(array))
    if entry is None or entry[0]() is not array:
        return None
    return entry[1], entry[2]


def pending() -> int:
    """How many lazy index checks wait for :func:`check_pending`."""
    return len(_pending)


def checked_indices(
    index: Any,
    size: int,
    who: str,
    what: str,
    *,
    negative: bool = True,
    ignore: int | None = None,
    noun: str = "index",
) -> mx.array:
    """``index`` as an integer ``mx.array`` with every value in ``[0, size)`` (or ``ignore``).

    ``index``: a Python int or (nested) list, a NumPy array or an ``mx.array`` (callers
    unwrap Tensors). With ``negative``, values in ``[-size, 0)`` count from the end and are
    mapped to ``value + size``; values equal to ``ignore`` are returned unchanged. A host
    index out of range raises ``IndexError`` now; an ``mx.array`` is clamped and checked
    lazily (see the module docstring), unless :func:`note_range` vouches for it. Raises
    ``TypeError`` for non-integer indices. The message reads
    "{who}: {noun} 12 is out of range for {what} (valid: -10 to 9)".
    """
    spec = _Range(who, what, int(size), negative, ignore, noun)
    if isinstance(index, mx.array):
        return _lazy(index, spec)
    return _host(index, spec)


def _host(index: Any, spec: _Range) -> mx.array:
    a = np.asarray(index)
    if a.dtype.kind == "f" and a.size == 0:  # np.asarray([]) is float64
        a = a.astype(np.int32)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{spec.who}: indices must be integers; got dtype {a.dtype}")
    if a.size:
        inside = (a >= spec.low) & (a < spec.size)
        if spec.ignore is not None:
            inside |= a == spec.ignore
        if not inside.all():
            raise IndexError(spec.message(int(a.reshape(-1)[np.argmin(inside.reshape(-1))])))
        if spec.negative and a.min() < 0:
            shifted = np.where(a < 0, a + spec.size, a)
            a = shifted if spec.ignore is None else np.where(a == spec.ignore, a, shifted)
    if a.dtype != np.int32 and (a.size == 0 or a.min() >= -(2**31) and a.max() < 2**31):
        a = a.astype(np.int32)  # what MLX and lucid use for indices; int64 only when needed
    return mx.array(a)


def _lazy(index: mx.array, spec: _Range) -> mx.array:
    if not mx.issubdtype(index.dtype, mx.integer):
        raise TypeError(f"{spec.who}: indices must be integers; got dtype {index.dtype}")
    known = _known_range(index)
    if known is not None and spec.low <= known[0] and known[1] < spec.size:
        if spec.negative and known[0] < 0:
            return mx.where(index < 0, index + spec.size, index)
        return index
    if index.size and spec.size == 0 and spec.ignore is None:
        # nothing to clamp into: every index is out of range, whatever its value
        raise IndexError(f"{spec.who}: {spec.what} has no valid index; got {index.size}")
    if index.dtype in (mx.uint32, mx.uint64, mx.int64):
        index = index.astype(mx.int64)  # room for `i + size` and signed compares
    elif index.dtype != mx.int32:
        index = index.astype(mx.int32)
    inside = (index >= spec.low) & (index < spec.size)
    keep = None if spec.ignore is None else index == spec.ignore
    if keep is not None:
        inside = inside | keep
    _register(_Pending(mx.all(inside), index.reshape(-1), spec))
    safe = mx.where(index < 0, index + spec.size, index) if spec.negative else index
    safe = mx.clip(safe, 0, max(spec.size - 1, 0))
    return safe if keep is None else mx.where(keep, index, safe)


@contextlib.contextmanager
def capturing() -> Iterator[list[Pending]]:
    """Collect the lazy checks made inside the block into the yielded list instead of the
    registry (``lucid.compile`` returns them from its compiled call: inside a trace they
    cannot be evaluated)."""
    mine: list[Pending] = []
    _captured.append(mine)
    try:
        yield mine
    finally:
        _captured.remove(mine)


def _register(check: _Pending) -> None:
    if _captured:
        _captured[-1].append(check)
        return
    with _lock:
        _pending.append(check)
        full = len(_pending) > LIMIT
    if full:
        check_pending(at=f"a later lookup: more than {LIMIT} lazy index checks were pending")


def defer(checks: list[Pending]) -> None:
    """Register ``checks`` (made elsewhere, e.g. the outputs of a compiled call) as
    pending; :func:`check_pending` evaluates them with the others."""
    with _lock:
        _pending.extend(checks)
        full = len(_pending) > LIMIT
    if full:
        check_pending(at=f"a later lookup: more than {LIMIT} lazy index checks were pending")


def check_pending(*arrays: mx.array, at: str = "check_pending()") -> None:
    """Evaluate the pending index checks (together with ``arrays``, in one ``mx.eval``) and
    raise ``IndexError`` for the first that failed; ``at`` names the caller in the message.
    Without pending checks, only ``arrays`` are evaluated (nothing at all when there are
    none). The checks are dropped either way, so each error is raised once."""
    if not _pending:  # the common case: no lazy index since the last check
        if arrays:
            mx.eval(*arrays)
        return
    with _lock:
        checks = list(_pending)
        _pending.clear()
    check(checks, *arrays, at=at)


def check(checks: list[Pending], *arrays: mx.array, at: str) -> None:
    """Evaluate ``checks`` (with ``arrays``, in one ``mx.eval``) and raise ``IndexError``
    for the first that failed, naming its first bad value; ``at`` names the caller."""
    mx.eval(*arrays, *(c.ok for c in checks))
    for c in checks:
        if not c.ok.item():
            undone = set()
            for u in (d.undo for d in checks if d.undo is not None and not d.ok.item()):
                if id(u) not in undone:
                    undone.add(id(u))
                    u()
            inside = (c.values >= c.range.low) & (c.values < c.range.size)
            if c.range.ignore is not None:
                inside = inside | (c.values == c.range.ignore)
            value = c.values[mx.argmin(inside.astype(mx.int32))].item()  # the first bad one
            raise IndexError(
                c.range.message(value, f"; the values were an mx.array, checked lazily at {at}")
            )

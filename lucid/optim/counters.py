"""Step counters: the ``"step"`` entry of every parameter's state.

A counter is an interned float32 scalar array, one per value, shared by every parameter at
that step (float32, as torch stores it). Advancing 2000 counters then costs a dict lookup
each instead of a kernel each (measured on set C, 2000 parameters: 15.6 ms for compiled
``step + 1`` per parameter, 0.2 ms for the lookups). The host always knows each count, so
per-step hyperparameters (a decayed learning rate, a bias correction) are computed on the
host in float64, as torch computes them. mx.arrays are values: nothing here modifies one
in place, and what leaves the optimizer (``optimizer.state``, ``state_dict()``) is a fresh
array, since ``+=`` on an mx.array writes into that object.
"""

from __future__ import annotations

import mlx.core as mx

__all__ = ["step_array", "step_value", "is_interned", "MAX_INTERNED"]

_STEP_ARRAYS: dict[int, mx.array] = {}
_STEP_OF_ID: dict[int, int] = {}
#: bounded, so that a long run does not grow the table
MAX_INTERNED = 1024


def step_array(t: int) -> mx.array:
    """The interned float32 scalar for step count ``t``."""
    arr = _STEP_ARRAYS.get(t)
    if arr is None:
        if len(_STEP_ARRAYS) >= MAX_INTERNED:
            oldest = _STEP_ARRAYS.pop(next(iter(_STEP_ARRAYS)))
            _STEP_OF_ID.pop(id(oldest), None)  # an evicted array still reads via .item()
        arr = _STEP_ARRAYS[t] = mx.array(float(t), dtype=mx.float32)
        _STEP_OF_ID[id(arr)] = t
    return arr


def is_interned(arr: mx.array) -> bool:
    t = _STEP_OF_ID.get(id(arr))
    return t is not None and _STEP_ARRAYS.get(t) is arr


def step_value(arr: mx.array) -> int:
    """The Python int behind a step counter (interned, or any scalar array)."""
    return _STEP_OF_ID[id(arr)] if is_interned(arr) else int(arr.item())

"""Argument checks shared by layers, losses and functions; each error names the argument,
the value it got and what it expected."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

REDUCTIONS = ("mean", "sum", "none")


def positive_int(who: str, name: str, value: Any) -> int:
    """Any integral number but a bool (``np.int64(2)`` too), returned as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{who}: {name} must be a positive int; got {value!r}")
    return int(value)


def flag(who: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{who}: {name} must be a bool; got {value!r}")
    return value


def probability(who: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{who}: {name} must be a number in [0, 1]; got {value!r}")
    return float(value)


def non_negative(who: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{who}: {name} must be a number >= 0; got {value!r}")
    return float(value)


def reduction(who: str, value: Any) -> str:
    if value not in REDUCTIONS:
        raise ValueError(f"{who}: reduction must be one of {REDUCTIONS}; got {value!r}")
    return value


def one_of(who: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{who}: {name} must be one of {choices}; got {value!r}")
    return value


def shape(who: str, name: str, value: int | Sequence[int]) -> tuple[int, ...]:
    dims = (value,) if isinstance(value, int) else tuple(value)
    ok = all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)
    if not dims or not ok:
        raise ValueError(
            f"{who}: {name} must be a positive int or a non-empty sequence of positive ints; "
            f"got {value!r}"
        )
    return dims

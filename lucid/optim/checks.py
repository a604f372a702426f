"""Hyperparameter checks: what each optimizer argument may be.

An optimizer declares one check per hyperparameter (``checks = {"lr": NON_NEGATIVE, ...}``);
the base class runs them at construction, in ``add_param_group``, at every ``step()`` (so
``group["lr"] = -1`` is caught before anything changes) and in ``load_state_dict``. A
value of the wrong type raises ``TypeError``, a value out of range ``ValueError``; both
name the optimizer, the argument, the value and what was expected.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

__all__ = [
    "Check",
    "number",
    "NON_NEGATIVE",
    "POSITIVE",
    "UNIT",
    "FLAG",
    "BETAS",
    "LEARNING_RATE",
    "choice",
    "positive_int",
    "pair",
    "optional",
    "run",
]

#: a check raises TypeError or ValueError with "must be ...; got ..."; the caller
#: prefixes the optimizer and the argument's name
Check = Callable[[Any], None]


def _is_real(value: Any) -> bool:
    if type(value) is float or type(value) is int:  # the common case, without the ABC check
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def number(low: float = 0.0, high: float = math.inf, *, low_open: bool = False,
           high_open: bool = False) -> Check:  # fmt: skip
    """A finite real number in the interval, e.g. ``number(0, 1, high_open=True)`` is [0, 1)."""
    if high == math.inf:
        where = f"> {low}" if low_open else f">= {low}"
    else:
        where = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def check(value: Any) -> None:
        if not _is_real(value):
            raise TypeError(f"must be a real number {where}; got {value!r}")
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        if high != math.inf:
            ok = ok and (value < high if high_open else value <= high)
        if not ok:
            raise ValueError(f"must be a finite number {where}; got {value!r}")

    return check


NON_NEGATIVE = number(0.0)
POSITIVE = number(0.0, low_open=True)
UNIT = number(0.0, 1.0, high_open=True)  # a decay rate such as a beta: [0, 1)


def _learning_rate(value: Any) -> None:
    """A number >= 0, or a schedule: a callable ``step -> lr`` (see ``lucid.optim.schedules``)."""
    if callable(value) and not _is_real(value):
        return
    try:
        NON_NEGATIVE(value)
    except TypeError:
        raise TypeError(
            f"must be a real number >= 0 or a schedule (a callable step -> lr); got {value!r}"
        ) from None


LEARNING_RATE: Check = _learning_rate


def FLAG(value: Any) -> None:  # noqa: N802  (a constant-like check, used as FLAG)
    if not isinstance(value, bool):
        raise TypeError(f"must be a bool; got {value!r}")


def pair(first: Check, second: Check, relation: Callable[[Any, Any], bool] | None = None,
         describe: str = "") -> Check:  # fmt: skip
    """A tuple or list of two values, each checked, optionally related (``describe`` says how)."""

    def check(value: Any) -> None:
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"must be a pair (a tuple of two values); got {value!r}")
        for i, (item, item_check) in enumerate(zip(value, (first, second), strict=True)):
            try:
                item_check(item)
            except (TypeError, ValueError) as e:
                raise type(e)(f"[{i}] {e}") from None
        if relation is not None and not relation(*value):
            raise ValueError(f"must satisfy {describe}; got {tuple(value)!r}")

    return check


BETAS = pair(UNIT, UNIT)


def choice(*allowed: Any) -> Check:
    def check(value: Any) -> None:
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise ValueError(f"must be one of {allowed!r}; got {value!r}")

    return check


def positive_int(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"must be an int >= 1; got {value!r}")
    if value < 1:
        raise ValueError(f"must be an int >= 1; got {value!r}")


def optional(inner: Check) -> Check:
    def check(value: Any) -> None:
        if value is not None:
            inner(value)

    return check


def run(owner: str, checks: dict[str, Check], values: dict[str, Any], where: str = "") -> None:
    """Run ``checks`` on ``values``; the error names ``where``, ``owner`` and the argument."""
    prefix = f"{where}: " if where else ""
    for name, check in checks.items():
        if name not in values:
            continue
        try:
            check(values[name])
        except (TypeError, ValueError) as e:
            raise type(e)(f"{prefix}{owner}: {name} {e}") from None

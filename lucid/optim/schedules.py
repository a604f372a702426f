"""Schedule functions in MLX's style: pure ``step -> lr`` callables for an optimizer's ``lr``.

``Adagrad(params, lr=cosine_decay(0.1, 1000))`` needs no scheduler object: the
optimizer calls the schedule on the host with the parameter's step count before the
update (0 at its first update, as MLX calls its schedules), and the value enters the
compiled step as an array, so it never retraces. The signatures are those of
``mlx.optimizers`` (``exponential_decay``, ``step_decay``, ``cosine_decay``,
``join_schedules``, ``linear_schedule``); :func:`linear_warmup` is lucid's shorthand for
the usual join of a linear ramp and another schedule.

Each schedule computes in float64 on the host and returns a Python float (MLX's compute
in float32 arrays). ``step`` must be an int >= 0 (an integral NumPy or 0-d MLX scalar is
accepted too).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "Schedule",
    "exponential_decay",
    "step_decay",
    "cosine_decay",
    "linear_schedule",
    "join_schedules",
    "linear_warmup",
]

#: a learning-rate schedule: the step count (from 0) to the learning rate
Schedule = Callable[[int], float]


def _finite(owner: str, name: str, value: Any) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise ValueError(f"{owner}: {name} must be a finite number; got {value!r}")
    return float(value)


def _count(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be an int >= 1; got {value!r}")
    return int(value)


def _step(owner: str, step: Any) -> int:
    """``step`` as a Python int >= 0 (integral NumPy and 0-d MLX scalars included)."""
    value = step
    if not isinstance(step, numbers.Integral) and hasattr(step, "item"):
        value = step.item()  # a NumPy scalar or a 0-d mx.array
        if isinstance(value, float) and value.is_integer():
            value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{owner}: step must be an int >= 0; got {step!r}")
    return int(value)


def exponential_decay(init: float, decay_rate: float) -> Schedule:
    r"""``init * decay_rate ** step``."""
    init = _finite("exponential_decay", "init", init)
    rate = _finite("exponential_decay", "decay_rate", decay_rate)

    def schedule(step: int) -> float:
        return init * rate ** _step("exponential_decay", step)

    return schedule


def step_decay(init: float, decay_rate: float, step_size: int) -> Schedule:
    r"""``init * decay_rate ** (step // step_size)``: one factor every ``step_size`` steps."""
    init = _finite("step_decay", "init", init)
    rate = _finite("step_decay", "decay_rate", decay_rate)
    size = _count("step_decay", "step_size", step_size)

    def schedule(step: int) -> float:
        return init * rate ** (_step("step_decay", step) // size)

    return schedule


def cosine_decay(init: float, decay_steps: int, end: float = 0.0) -> Schedule:
    r"""Half a cosine from ``init`` to ``end`` over ``decay_steps``, then ``end``:

    .. math:: \text{end} + \tfrac12 (\text{init} - \text{end})
        \left(1 + \cos\left(\pi \min(t, T) / T\right)\right)
    """
    init = _finite("cosine_decay", "init", init)
    total = _count("cosine_decay", "decay_steps", decay_steps)
    end = _finite("cosine_decay", "end", end)

    def schedule(step: int) -> float:
        s = min(_step("cosine_decay", step), total)
        return end + 0.5 * (1.0 + math.cos(math.pi * s / total)) * (init - end)

    return schedule


def linear_schedule(init: float, end: float, steps: int) -> Schedule:
    r"""From ``init`` to ``end`` linearly over ``steps``, then ``end``:
    ``init + (end - init) * min(step, steps) / steps``."""
    init = _finite("linear_schedule", "init", init)
    end = _finite("linear_schedule", "end", end)
    total = _count("linear_schedule", "steps", steps)

    def schedule(step: int) -> float:
        return init + (end - init) * min(_step("linear_schedule", step), total) / total

    return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    r"""``schedules[i]`` from ``boundaries[i-1]`` on, called with the steps since that
    boundary (``schedules[0]`` with the step itself). ``boundaries`` has one entry fewer
    than ``schedules`` and increases."""
    owner = "join_schedules"
    if not isinstance(schedules, (list, tuple)) or not schedules:
        raise ValueError(f"{owner}: schedules must be a non-empty list; got {schedules!r:.80}")
    for i, fn in enumerate(schedules):
        if not callable(fn):
            raise ValueError(f"{owner}: schedules[{i}] must be a schedule; got {fn!r:.80}")
    if not isinstance(boundaries, (list, tuple)) or len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"{owner}: boundaries must list {len(schedules) - 1} steps (one fewer than "
            f"schedules); got {boundaries!r:.80}"
        )
    for i, b in enumerate(boundaries):
        _count(owner, f"boundaries[{i}]", b)
    if any(a >= b for a, b in zip(boundaries[:-1], boundaries[1:], strict=True)):
        raise ValueError(f"{owner}: boundaries must increase; got {list(boundaries)}")
    fns, starts = list(schedules), [0, *boundaries]

    def schedule(step: int) -> float:
        t = _step(owner, step)
        i = sum(t >= b for b in starts) - 1
        return fns[i](t - starts[i])

    return schedule


def linear_warmup(schedule: Schedule | float, warmup_steps: int, init: float = 0.0) -> Schedule:
    r"""A linear ramp from ``init`` to ``schedule(0)`` over ``warmup_steps``, then
    ``schedule(step - warmup_steps)``; ``schedule`` may be a constant peak rate. Equal to
    ``join_schedules([linear_schedule(init, schedule(0), warmup_steps), schedule],
    [warmup_steps])``, e.g. ``linear_warmup(cosine_decay(1e-3, 10_000), 500)``."""
    steps = _count("linear_warmup", "warmup_steps", warmup_steps)
    if callable(schedule):
        after = schedule
        peak = schedule(0)
        peak = peak.item() if hasattr(peak, "item") else peak
    else:
        peak = _finite("linear_warmup", "schedule", schedule)

        def after(step: int) -> float:
            return peak

    ramp = linear_schedule(init, peak, steps)
    return join_schedules([ramp, after], [steps])

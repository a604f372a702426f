"""lucid.optim.schedules against float64 NumPy transcriptions of their formulas and
against mlx.optimizers' schedule functions of the same name (float32: rtol 1e-6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.optimizers as mlx_optim
import numpy as np
import pytest

from lucid.optim import schedules

T = np.arange(0, 300)  # steps, past every schedule's end

# name: (lucid schedule, float64 closed form of the steps, MLX's schedule or None)
CASES: dict[str, tuple[Callable[[int], float], Callable[[np.ndarray], np.ndarray], Any]] = {
    "exponential_decay": (
        schedules.exponential_decay(0.1, 0.99),
        lambda t: 0.1 * 0.99**t,
        mlx_optim.exponential_decay(0.1, 0.99),
    ),
    "step_decay": (
        schedules.step_decay(0.1, 0.5, 25),
        lambda t: 0.1 * 0.5 ** np.floor(t / 25),
        mlx_optim.step_decay(0.1, 0.5, 25),
    ),
    "cosine_decay": (
        schedules.cosine_decay(0.1, 200),
        lambda t: 0.05 * (1 + np.cos(np.pi * np.minimum(t, 200) / 200)),
        mlx_optim.cosine_decay(0.1, 200),
    ),
    "cosine_decay-end": (
        schedules.cosine_decay(0.1, 100, end=0.01),
        lambda t: 0.01 + 0.045 * (1 + np.cos(np.pi * np.minimum(t, 100) / 100)),
        mlx_optim.cosine_decay(0.1, 100, 0.01),
    ),
    "linear_schedule-up": (
        schedules.linear_schedule(0.0, 0.1, 50),
        lambda t: 0.1 * np.minimum(t, 50) / 50,
        mlx_optim.linear_schedule(0.0, 0.1, 50),
    ),
    "linear_schedule-down": (
        schedules.linear_schedule(0.1, 0.001, 120),
        lambda t: 0.1 + (0.001 - 0.1) * np.minimum(t, 120) / 120,
        mlx_optim.linear_schedule(0.1, 0.001, 120),
    ),
    "join_schedules": (
        schedules.join_schedules(
            [schedules.linear_schedule(0.0, 0.1, 10), schedules.cosine_decay(0.1, 200)], [10]
        ),
        lambda t: np.where(
            t < 10, 0.01 * t, 0.05 * (1 + np.cos(np.pi * np.minimum(t - 10, 200) / 200))
        ),
        mlx_optim.join_schedules(
            [mlx_optim.linear_schedule(0.0, 0.1, 10), mlx_optim.cosine_decay(0.1, 200)], [10]
        ),
    ),
    "join_schedules-three": (
        schedules.join_schedules(
            [
                schedules.linear_schedule(0.0, 0.1, 20),
                schedules.exponential_decay(0.1, 0.98),
                schedules.step_decay(0.01, 0.5, 30),
            ],
            [20, 150],
        ),
        lambda t: np.select(
            [t < 20, t < 150],
            [0.1 * t / 20, 0.1 * 0.98 ** (t - 20)],
            0.01 * 0.5 ** np.floor((t - 150) / 30),
        ),
        mlx_optim.join_schedules(
            [
                mlx_optim.linear_schedule(0.0, 0.1, 20),
                mlx_optim.exponential_decay(0.1, 0.98),
                mlx_optim.step_decay(0.01, 0.5, 30),
            ],
            [20, 150],
        ),
    ),
    "linear_warmup-cosine": (
        schedules.linear_warmup(schedules.cosine_decay(0.1, 200), 30),
        lambda t: np.where(
            t < 30, 0.1 * t / 30, 0.05 * (1 + np.cos(np.pi * np.minimum(t - 30, 200) / 200))
        ),
        mlx_optim.join_schedules(
            [mlx_optim.linear_schedule(0.0, 0.1, 30), mlx_optim.cosine_decay(0.1, 200)], [30]
        ),
    ),
    "linear_warmup-constant-init": (
        schedules.linear_warmup(0.1, 40, init=0.01),
        lambda t: np.where(t < 40, 0.01 + 0.09 * t / 40, 0.1),
        None,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_equals_closed_form_in_float64(case: str) -> None:
    ours, closed, _ = CASES[case]
    got = np.array([ours(int(t)) for t in T])
    assert all(isinstance(ours(int(t)), float) for t in T[:3])
    np.testing.assert_allclose(got, closed(T.astype(np.float64)), rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][2] is not None])
def test_equals_mlx(case: str) -> None:
    ours, _, theirs = CASES[case]
    got = np.array([ours(int(t)) for t in T])
    want = np.array([np.asarray(theirs(mx.array(int(t)))).item() for t in T])
    # MLX rounds a decay rate r to float32 (relative error d <= 6e-8) and then raises it
    # to the step: r**t carries t * d, hence a tolerance that grows with the step; near 0
    # (a cosine's end) float32's cos leaves ~init * 1e-7 absolute
    rtol = 1e-6 + 6e-8 * T
    assert np.all(np.abs(got - want) <= rtol * np.abs(want) + 2e-8), np.abs(got - want).max()


@pytest.mark.parametrize("step", [np.int64(7), mx.array(7), mx.array(7.0)])
def test_integral_scalars_are_steps(step: Any) -> None:
    fn = schedules.cosine_decay(0.1, 100)
    assert fn(step) == fn(7)


BAD = {
    "cosine_decay decay_steps": (lambda: schedules.cosine_decay(0.1, 0), "decay_steps"),
    "cosine_decay init": (lambda: schedules.cosine_decay(float("nan"), 10), "init"),
    "step_decay step_size": (lambda: schedules.step_decay(0.1, 0.5, 0), "step_size"),
    "linear_schedule steps": (lambda: schedules.linear_schedule(0.0, 0.1, 0), "steps"),
    "exponential_decay rate": (lambda: schedules.exponential_decay(0.1, "0.9"), "decay_rate"),
    "join empty": (lambda: schedules.join_schedules([], []), "schedules"),
    "join boundaries count": (
        lambda: schedules.join_schedules([schedules.cosine_decay(0.1, 5)], [3]),
        "boundaries",
    ),
    "join boundaries order": (
        lambda: schedules.join_schedules([schedules.cosine_decay(0.1, 5)] * 3, [8, 4]),
        "increase",
    ),
    "warmup steps": (lambda: schedules.linear_warmup(0.1, 0), "warmup_steps"),
    "negative step": (lambda: schedules.cosine_decay(0.1, 10)(-1), "step"),
    "fractional step": (lambda: schedules.cosine_decay(0.1, 10)(1.5), "step"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_arguments_raise_value_error(case: str) -> None:
    call, words = BAD[case]
    with pytest.raises(ValueError, match=words):
        call()

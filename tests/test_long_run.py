"""Long runs: 10,000 Adagrad steps with the learning rate changing every step.

Over the run, sampled every 1,000 steps after a warm-up:

- MLX's active memory stays flat (a spread under 16 KiB: the run allocates and frees
  about 1 KiB per step, so a leak of even 2 bytes per step would show);
- the lazy graph never grows: after each step, the operations still pending behind the
  parameters and their state are the same few, and the number of live lucid Tensors is
  constant;
- nothing is traced again (``trace_count`` stays at its warm-up value);
- a step does not get slower: the median step time of the last 1,000 steps is within
  3x of the first 1,000's (a ratio within one run, not an absolute timing).
"""

from __future__ import annotations

import gc
import io
import statistics
import time
from collections.abc import Callable

import mlx.core as mx
import numpy as np
import pytest

import lucid
from lucid import nn
from lucid.optim import Adagrad

STEPS, EVERY, WARMUP = 10_000, 1_000, 200
MEMORY_SPREAD = 16 * 1024
SLOWDOWN = 3.0


def _pending_ops(arrays: list[mx.array]) -> int:
    """The operations not yet evaluated behind ``arrays`` (0 when all are evaluated)."""
    dot = io.StringIO()
    mx.export_to_dot(dot, *arrays)
    return dot.getvalue().count("shape=rectangle")


def _live_tensors() -> int:
    return sum(issubclass(type(o), lucid.Tensor) for o in gc.get_objects())  # no __class__ lookups


def _forward_backward() -> tuple[Adagrad, Callable[[int], None]]:
    """A tiny MLP trained on a fixed batch: each step is zero_grad, loss, backward, step."""
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = Adagrad(model.parameters(), lr=0.1, lr_decay=1e-4, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    x = lucid.tensor(rng.standard_normal((16, 4)).astype(np.float32))
    y = lucid.tensor(rng.standard_normal((16, 1)).astype(np.float32))

    def step(i: int) -> None:
        opt.param_groups[0]["lr"] = 0.1 / (1 + 1e-4 * i)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()

    return opt, step


def _direct_grads() -> tuple[Adagrad, Callable[[int], None]]:
    """Two groups, float32 and float16, gradients set by hand; one parameter never has one."""
    rng = np.random.default_rng(1)

    def param(shape: tuple[int, ...], dtype: mx.Dtype) -> nn.Parameter:
        return nn.Parameter(mx.array(rng.standard_normal(shape).astype(np.float32)).astype(dtype))

    a, b = param((8, 4), mx.float32), param((4,), mx.float32)
    c, frozen = param((3, 5), mx.float16), param((2,), mx.float32)
    opt = Adagrad([{"params": [a, b]}, {"params": [c, frozen], "maximize": True}], lr=0.05)
    grads = {
        p: lucid.Tensor(mx.array(rng.standard_normal(p.shape)).astype(p.dtype)) for p in (a, b, c)
    }
    mx.eval([g.data for g in grads.values()])

    def step(i: int) -> None:
        for k, group in enumerate(opt.param_groups):
            group["lr"] = 0.05 / (1 + 1e-3 * i + k)
        for p, g in grads.items():
            p.grad = g
        opt.step()

    return opt, step


@pytest.mark.parametrize("setup", [_forward_backward, _direct_grads])
def test_ten_thousand_steps_stay_flat(setup: Callable) -> None:
    opt, step = setup()
    for i in range(WARMUP):
        step(i)
    traces = opt.trace_count
    assert traces >= 1

    times, memory, tensors, pending = [], [], [], []
    for i in range(STEPS):
        start = time.perf_counter()
        step(WARMUP + i)
        times.append(time.perf_counter() - start)
        if (i + 1) % EVERY == 0:
            arrays = [p.data for p in opt.state] + [
                v for s in opt.state.values() for v in s.values()
            ]
            pending.append(_pending_ops(arrays))
            gc.collect()
            memory.append(mx.get_active_memory())
            tensors.append(_live_tensors())

    assert opt.trace_count == traces, "the step was traced again while only lr changed"
    assert max(memory) - min(memory) < MEMORY_SPREAD, f"active memory drifts: {memory}"
    assert len(set(tensors)) == 1, f"live lucid Tensors grow: {tensors}"
    # not always 0: a never-stepped parameter keeps its lazy initial state (mx.full), and
    # state may be views (split, reshape) of a flat buffer; but the same few every time
    assert len(set(pending)) == 1, f"pending operations grow: {pending}"
    assert pending[0] <= 4 * len(arrays), f"{pending[0]} pending operations"
    first, last = statistics.median(times[:EVERY]), statistics.median(times[-EVERY:])
    assert last < SLOWDOWN * first, f"median step time grew from {first:.2e} s to {last:.2e} s"
    stepped = [int(s["step"].item()) for s in opt.state.values()]
    assert set(stepped) <= {0, STEPS + WARMUP} and max(stepped) == STEPS + WARMUP
    assert all(bool(mx.all(mx.isfinite(p.data))) for p in opt.state)

"""Shared helpers for the benchmarks: settings, timing, MLX memory, machine facts, tables.

Every timed call must be synchronous when it returns: MLX work is forced with ``mx.eval``
inside the implementation's step, and PyTorch and NumPy run eagerly on the CPU.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

__all__ = [
    "BYTES_PER_ELEMENT",
    "Settings",
    "Section",
    "Table",
    "time_calls",
    "interleaved_blocks",
    "median_ms",
    "mlx_step_overhead",
    "machine_info",
    "lr_at",
    "fmt_ms",
    "fmt_bytes",
]

#: Adagrad moves 20 bytes per float32 element: it reads θ, g and G and writes θ and G.
BYTES_PER_ELEMENT = 20

LR = 0.01
EPS = 1e-10


def lr_at(i: int) -> float:
    """The learning rate of step ``i`` (from 0): a slow decay, so that a step function
    that bakes ``lr`` into its trace would have to retrace on every step."""
    return LR / (1.0 + 0.01 * i)


@dataclass(frozen=True)
class Settings:
    """Sizes and step counts of one run; :meth:`quick` shrinks everything for tests."""

    quick: bool = False
    warmup: int = 3
    steps: int = 20
    rounds: int = 4  # timed steps are split into this many round-robin blocks
    # A: one flat tensor
    a_elements: int = 16_777_216
    # B: model-shaped (embedding, matrices, vectors)
    b_embedding: tuple[int, int] = (5000, 256)
    b_matrices: int = 45
    b_matrix: tuple[int, int] = (256, 768)
    b_vectors: int = 54
    b_vector: int = 768
    # C: many small tensors
    c_tensors: int = 2000
    c_elements: int = 1024
    # the end-to-end MLP
    mlp_sizes: tuple[int, ...] = (784, 1024, 1024, 10)
    mlp_batch: int = 128
    mlp_steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        # warm-up step 0 is timed as the first-step latency, the last one probes memory
        if self.warmup < 2 or self.steps < 1:
            raise ValueError(f"Settings: need warmup >= 2 and steps >= 1; got {self}")

    @classmethod
    def quick_settings(cls) -> Settings:
        return cls(
            quick=True,
            warmup=2,
            steps=3,
            a_elements=4096,
            b_embedding=(50, 16),
            b_matrices=4,
            b_matrix=(16, 48),
            b_vectors=5,
            b_vector=48,
            c_tensors=20,
            c_elements=64,
            mlp_sizes=(64, 32, 32, 10),
            mlp_batch=16,
            mlp_steps=3,
            rounds=2,
        )


@dataclass
class Table:
    """A Markdown table: a header and rows of already-formatted cells."""

    header: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def markdown(self) -> str:
        cells = [self.header, *self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.header))]

        def line(row: list[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

        rule = "| " + " | ".join("-" * w for w in widths) + " |"
        return "\n".join([line(self.header), rule, *(line(r) for r in self.rows)])


@dataclass
class Section:
    """What a section hands back: a title, tables, free-text notes, machine-readable data
    (for the tests) and whether every cross-check passed."""

    key: str
    title: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    parity_ok: bool = True

    def markdown(self) -> str:
        parts = [f"## {self.title}"]
        parts.extend(t.markdown() for t in self.tables)
        if self.notes:
            parts.append("\n".join(f"- {n}" for n in self.notes))
        return "\n\n".join(parts)


def interleaved_blocks(s: Settings, steps: int | None = None) -> list[tuple[int, int]]:
    """``(first step index, count)`` of each round-robin block of the timed steps, which
    follow the ``s.warmup`` warm-up steps."""
    steps = s.steps if steps is None else steps
    rounds = max(1, min(s.rounds, steps))
    counts = [steps // rounds + (r < steps % rounds) for r in range(rounds)]
    firsts = [s.warmup + sum(counts[:r]) for r in range(rounds)]
    return list(zip(firsts, counts, strict=True))


def time_calls(call: Callable[[int], object], start: int, n: int) -> list[float]:
    """Wall time in seconds of ``call(i)`` for ``i`` in ``start .. start + n - 1``."""
    times = []
    for i in range(start, start + n):
        t0 = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - t0)
    return times


def median_ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


def mlx_step_overhead(call: Callable[[], object]) -> int:
    """Bytes of MLX memory that ``call`` holds at its peak beyond what was live before it.

    Everything pending is evaluated first, so the baseline is the steady state: the
    parameters, gradients and optimizer state, and nothing else of the step's making.
    """
    mx.synchronize()
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    call()
    return max(0, mx.get_peak_memory() - before)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(torch_threads: int) -> dict[str, str]:
    import torch

    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores (os.cpu_count)": str(os.cpu_count()),
        "mlx": f"{mx.__version__} (default device: {mx.default_device()})",
        "torch": f"{torch.__version__} (threads: {torch_threads})",
        "numpy": np.__version__,
        "python": platform.python_version(),
        "load average at start (1 min)": f"{os.getloadavg()[0]:.2f}",
    }


def fmt_ms(ms: float) -> str:
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")

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
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

__all__ = [
    "BYTES_PER_ELEMENT",
    "Settings",
    "Section",
    "Table",
    "time_calls",
    "interleaved_blocks",
    "Factory",
    "measure",
    "compare",
    "gb_per_s",
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
    # the sweep: one tensor of 4**k elements for k in sweep_log4 (plus 2**25), and
    # sweep_total elements split into each of sweep_counts tensors
    sweep_log4: tuple[int, ...] = (5, 6, 7, 8, 9, 10, 11, 12)
    sweep_top: int = 1 << 25
    sweep_total: int = 4_194_304
    sweep_counts: tuple[int, ...] = (1, 10, 100, 1_000, 10_000)
    # timed steps per point: as many as fit in the budget (all implementations together),
    # at least min_steps; a point of small tensors takes more steps for a stable median
    budget_s: float = 3.0
    min_steps: int = 5
    max_steps: int = 200
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
            sweep_log4=(3, 4),
            sweep_top=1 << 9,
            sweep_total=4096,
            sweep_counts=(1, 16),
            budget_s=0.05,
            min_steps=2,
            max_steps=4,
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
    (for the tests), whether every cross-check passed, and figures: file name -> a
    function that writes it to a given path (run.py decides where, next to the report)."""

    key: str
    title: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    parity_ok: bool = True
    figures: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    #: Markdown links to the figures once written (filled in by run.py)
    figure_links: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"## {self.title}", *self.figure_links]
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


def gb_per_s(elements: int, ms: float, bytes_per_element: int = BYTES_PER_ELEMENT) -> float:
    """Effective bandwidth of a step that moves ``bytes_per_element`` per element."""
    return bytes_per_element * elements / (ms * 1e-3) / 1e9


def compare(
    got: list[np.ndarray], want: list[np.ndarray], rtol: float, atol: float
) -> tuple[bool, float]:
    """Whether ``|got - want| <= atol + rtol |want|`` everywhere, and the worst element's
    distance as a multiple of its tolerance (1.0 = just at the tolerance)."""
    worst = 0.0
    for a, b in zip(got, want, strict=True):
        b = np.asarray(b, dtype=np.float64)
        err = np.abs(np.asarray(a, dtype=np.float64) - b) / (atol + rtol * np.abs(b))
        worst = max(worst, float(np.max(err)) if err.size else 0.0)
    return worst <= 1.0, worst


#: builds an implementation from NumPy start values and fixed gradients; it offers
#: ``name``, ``uses_mlx``, ``step(lr)`` (synchronous) and ``params()`` (NumPy arrays)
Factory = Callable[[list[np.ndarray], list[np.ndarray]], Any]

#: ``want`` for :func:`measure`: fixed arrays, or a function of the live implementations
Want = list[np.ndarray] | Callable[[dict[str, Any]], list[np.ndarray]]


def _warm_up(impl: Any, s: Settings, lr: Callable[[int], float]) -> dict:
    """Steps ``0 .. warmup-1``: the first is timed as the first-step latency, the last
    (compiled, steady state) is the memory probe; the ones between give a first estimate
    of the steady step time."""
    t0 = time.perf_counter()
    impl.step(lr(0))
    first_ms = 1e3 * (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(1, s.warmup - 1):
        impl.step(lr(i))
    last = s.warmup - 1
    if impl.uses_mlx:
        extra = mlx_step_overhead(lambda: impl.step(lr(last)))
    else:
        extra = None
        impl.step(lr(last))
    warm_s = (time.perf_counter() - t0) / (s.warmup - 1)
    traces = getattr(impl, "trace_count", None)
    return {
        "first_ms": first_ms,
        "warm_s": warm_s,
        "extra_bytes": extra,
        "traces": (traces, traces),
        "times": [],
    }


def measure(
    factories: list[tuple[str, Factory]],
    start: list[np.ndarray],
    grads: list[np.ndarray],
    s: Settings,
    *,
    want: Want,
    check_after: str = "end",
    lr: Callable[[int], float] = lr_at,
    steps: int | None = None,
    budget_s: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> dict[str, dict]:
    """Warm up and time every implementation on the same start values, gradients and
    learning-rate schedule, then check its parameters against ``want``.

    Every implementation stays alive and the timed steps go round-robin in blocks, so a
    burst of load from other processes on a shared machine hits all of them alike. The
    number of timed steps is ``steps`` (default ``s.steps``), or with ``budget_s`` as
    many as fit in that many seconds for all implementations together, clamped to
    ``s.min_steps .. s.max_steps``. ``check_after`` is ``"warmup"`` (compare after the
    ``s.warmup`` warm-up steps) or ``"end"`` (after warm-up and timed steps).

    Returns, per name in ``factories`` order: ``ms`` (median of the timed steps),
    ``first_ms``, ``extra_bytes`` (MLX peak beyond the steady state; None for others),
    ``traces`` (``trace_count`` before and after the timed steps, if it has one),
    ``steps``, ``parity`` and ``worst`` (see :func:`compare`); or only ``error``, when the
    implementation could not be built or failed (e.g. a torch build without a fused
    CPU kernel).
    """
    if check_after not in ("warmup", "end"):
        raise ValueError(f"measure: check_after must be 'warmup' or 'end', got {check_after!r}")
    results: dict[str, dict] = {}
    impls: dict[str, Any] = {}

    def fail(name: str, e: Exception) -> None:
        results[name] = {"error": f"{type(e).__name__}: {e}"}
        impls.pop(name, None)

    def check() -> None:
        target = want(impls) if callable(want) else want
        for name, impl in impls.items():
            results[name]["parity"], results[name]["worst"] = compare(
                impl.params(), target, rtol, atol
            )

    for name, factory in factories:
        try:
            impl = factory(start, grads)
            results[name] = _warm_up(impl, s, lr)
            impls[name] = impl
        except Exception as e:
            fail(name, e)
    if check_after == "warmup":
        check()
    if steps is None:
        steps = s.steps
        if budget_s is not None:
            per_step = sum(r["warm_s"] for r in results.values() if "warm_s" in r)
            steps = int(budget_s / per_step) if per_step > 0 else s.max_steps
            steps = max(s.min_steps, min(s.max_steps, steps))
    for first, count in interleaved_blocks(s, steps):
        for name, impl in list(impls.items()):
            try:
                step = impl.step
                results[name]["times"] += time_calls(lambda i, f=step: f(lr(i)), first, count)
            except Exception as e:
                fail(name, e)
    for name, impl in impls.items():
        r = results[name]
        r["ms"] = median_ms(r["times"])
        r["steps"] = steps
        r["traces"] = (r["traces"][0], getattr(impl, "trace_count", None))
    if check_after == "end":
        check()
    impls.clear()
    mx.clear_cache()
    return results


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

"""Sections A, B and C: one Adagrad step, lucid against its peers, on three parameter sets.

Every implementation starts from the same parameters, sees the same fixed gradients and
the same learning-rate schedule (``lr`` changes on every step, so a step that baked
``lr`` into its trace would retrace), and runs the same number of steps. Afterwards its
parameters are compared with the in-place NumPy implementation's.
"""

from __future__ import annotations

import time

import mlx.core as mx
import numpy as np

import lucid
from benchmarks.common import (
    BYTES_PER_ELEMENT,
    EPS,
    LR,
    Section,
    Settings,
    Table,
    fmt_bytes,
    fmt_ms,
    interleaved_blocks,
    lr_at,
    median_ms,
    mlx_step_overhead,
    time_calls,
)
from benchmarks.peers import ADAGRAD_PEERS, NumpyAdagrad

__all__ = ["LucidAdagrad", "section_a", "section_b", "section_c", "shapes_for"]

RTOL, ATOL = 1e-5, 1e-6  # float32, a few dozen steps, different operation order


class LucidAdagrad:
    """``lucid.optim.Adagrad`` over one ``lucid.nn.Parameter`` per tensor; the gradient
    Tensors wrap fixed, already evaluated arrays. ``opt.step()`` evaluates its results."""

    name = "lucid.optim.Adagrad"
    uses_mlx = True

    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        self._p = [lucid.nn.Parameter(mx.array(a)) for a in params]
        self._g = [mx.array(g) for g in grads]
        mx.eval([p.data for p in self._p], self._g)
        self.opt = lucid.optim.Adagrad(self._p, lr=LR, eps=EPS)

    def step(self, lr: float) -> None:
        self.opt.param_groups[0]["lr"] = lr
        for p, g in zip(self._p, self._g, strict=True):
            p.grad = lucid.Tensor(g)
        self.opt.step()

    def params(self) -> list[np.ndarray]:
        return [np.array(p.data) for p in self._p]

    @property
    def trace_count(self) -> int | None:
        return getattr(self.opt, "trace_count", None)


def shapes_for(key: str, s: Settings) -> list[tuple[int, ...]]:
    if key == "A":
        return [(s.a_elements,)]
    if key == "B":
        return (
            [s.b_embedding]
            + [s.b_matrix] * s.b_matrices
            + [(s.b_vector,)] * s.b_vectors
        )  # fmt: skip
    if key == "C":
        return [(s.c_elements,)] * s.c_tensors
    raise ValueError(f"unknown parameter set {key!r}")


def _warm_up(impl, s: Settings) -> dict:
    """Steps ``0 .. warmup-1``: the first is timed as the first-step latency, the last
    (compiled, steady state) is the memory probe."""
    t0 = time.perf_counter()
    impl.step(lr_at(0))
    first_ms = 1e3 * (time.perf_counter() - t0)
    for i in range(1, s.warmup - 1):
        impl.step(lr_at(i))
    last = s.warmup - 1
    extra = None
    if impl.uses_mlx:
        extra = mlx_step_overhead(lambda: impl.step(lr_at(last)))
    else:
        impl.step(lr_at(last))
    traces = getattr(impl, "trace_count", None)
    return {"first_ms": first_ms, "extra_bytes": extra, "traces": (traces, traces), "times": []}


def _label(factory) -> str:
    if hasattr(factory, "name"):
        return factory.name
    mode = getattr(factory, "keywords", {}).get("mode")
    return f"torch Adagrad {mode}" if mode else repr(factory)


def _close(got: list[np.ndarray], want: list[np.ndarray]) -> tuple[bool, float]:
    worst = 0.0
    for a, b in zip(got, want, strict=True):
        worst = max(worst, float(np.max(np.abs(a - b) / (ATOL + RTOL * np.abs(b)))))
    return worst <= 1.0, worst


def _section(key: str, title: str, s: Settings) -> Section:
    shapes = shapes_for(key, s)
    n = sum(int(np.prod(sh)) for sh in shapes)
    rng = np.random.default_rng(s.seed)
    start = [rng.standard_normal(sh, dtype=np.float32) for sh in shapes]
    grads = [rng.standard_normal(sh, dtype=np.float32) for sh in shapes]
    steps = s.steps

    reference = NumpyAdagrad(start, grads)
    for i in range(s.warmup + steps):
        reference.step(lr_at(i))
    want = reference.params()
    del reference

    # Every implementation stays alive and the timed steps go round-robin in blocks, so
    # a burst of load from other processes on a shared machine hits all of them alike.
    results: dict[str, dict] = {}
    impls: dict[str, object] = {}
    for factory in [LucidAdagrad, *ADAGRAD_PEERS]:
        try:  # e.g. a torch build without a CPU fused kernel
            impl = factory(start, grads)
            results[impl.name] = _warm_up(impl, s)
            impls[impl.name] = impl
        except Exception as e:
            results[_label(factory)] = {"error": f"{type(e).__name__}: {e}"}
    for first, count in interleaved_blocks(s):
        for name, impl in list(impls.items()):
            try:
                step = impl.step
                results[name]["times"] += time_calls(lambda i, f=step: f(lr_at(i)), first, count)
            except Exception as e:
                results[name] = {"error": f"{type(e).__name__}: {e}"}
                del impls[name]
    for name, impl in impls.items():
        r = results[name]
        r["ms"] = median_ms(r["times"])
        r["traces"] = (r["traces"][0], getattr(impl, "trace_count", None))
        r["parity"], r["worst"] = _close(impl.params(), want)
    del impls
    mx.clear_cache()

    lucid_r = results[LucidAdagrad.name]
    table = Table(
        [
            "implementation",
            "ms/step (median)",
            "GB/s",
            "lucid speed-up",
            "first step ms",
            "peak extra MLX mem",
            "parity vs numpy",
        ]
    )
    for name, r in results.items():
        if "error" in r:
            table.rows.append([name, "n/a", "n/a", "n/a", "n/a", "n/a", r["error"][:80]])
            continue
        gbs = BYTES_PER_ELEMENT * n / (r["ms"] * 1e-3) / 1e9
        ratio = "—" if r is lucid_r else f"{r['ms'] / lucid_r['ms']:.2f}x"
        mem = "—" if r["extra_bytes"] is None else fmt_bytes(r["extra_bytes"])
        parity = "ok" if r["parity"] else f"FAIL ({r['worst']:.1f}x tolerance)"
        table.rows.append(
            [name, fmt_ms(r["ms"]), f"{gbs:.2f}", ratio, fmt_ms(r["first_ms"]), mem, parity]
        )

    tensor_bytes = 4 * n
    extra = lucid_r["extra_bytes"]
    before, after = lucid_r["traces"]
    retraced = None if before is None else after != before
    parity_ok = all(r.get("parity", True) for r in results.values())
    notes = [
        f"{len(shapes)} tensors, {n:,} float32 elements; {BYTES_PER_ELEMENT} bytes/element "
        f"moved per step ({fmt_bytes(BYTES_PER_ELEMENT * n)}).",
        f"Median of {steps} steps after {s.warmup} warm-up steps, the implementations taking "
        f"turns in blocks of about {steps // s.rounds} steps; lr = "
        f"{LR}/(1 + 0.01 i) changes on every step for every implementation; eps = {EPS}.",
        f"lucid peak extra memory per step: {fmt_bytes(extra)} = "
        f"{extra / (3 * tensor_bytes):.2f} x (params+grads+state), "
        f"{extra / (2 * tensor_bytes):.2f} x (params+state).",
        f"lucid first step (trace + compile, fresh optimizer): {fmt_ms(lucid_r['first_ms'])} ms "
        f"vs {fmt_ms(lucid_r['ms'])} ms steady.",
        "lucid retrace in steady state while lr changes: "
        + ("n/a (no trace_count)" if retraced is None else "YES" if retraced else "no")
        + f" (trace_count {before} -> {after}).",
        "parity ok" if parity_ok else "PARITY FAILED (see table)",
    ]
    return Section(
        key=key,
        title=title,
        tables=[table],
        notes=notes,
        parity_ok=parity_ok,
        data={"elements": n, "results": results, "retraced": retraced},
    )


def section_a(s: Settings) -> Section:
    return _section("A", f"A: Adagrad step, one tensor of {s.a_elements:,} float32", s)


def section_b(s: Settings) -> Section:
    return _section("B", "B: Adagrad step, model-shaped set (embedding, matrices, vectors)", s)


def section_c(s: Settings) -> Section:
    title = f"C: Adagrad step, {s.c_tensors:,} tensors of {s.c_elements:,} elements"
    return _section("C", title, s)

"""Sections A, B and C: one Adagrad step, lucid against its peers, on three parameter sets.

Every implementation starts from the same parameters, sees the same fixed gradients and
the same learning-rate schedule (``lr`` changes on every step, so a step that baked
``lr`` into its trace would retrace), and runs the same number of steps. Afterwards its
parameters are compared with the in-place NumPy implementation's.
"""

from __future__ import annotations

from collections.abc import Callable

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
    gb_per_s,
    lr_at,
    measure,
)
from benchmarks.peers import ADAGRAD_PEERS, NumpyAdagrad

__all__ = ["LucidOptimizer", "LucidAdagrad", "section_a", "section_b", "section_c", "shapes_for"]

RTOL, ATOL = 1e-5, 1e-6  # float32, a few dozen steps, different operation order


class LucidOptimizer:
    """A ``lucid.optim`` optimizer, built by ``make(parameters)``, over one
    ``lucid.nn.Parameter`` per tensor; the gradient Tensors wrap fixed, already evaluated
    arrays and are assigned before every step, as a backward pass would. ``opt.step()``
    evaluates its results."""

    uses_mlx = True

    def __init__(
        self,
        params: list[np.ndarray],
        grads: list[np.ndarray],
        make: Callable[[list[lucid.nn.Parameter]], lucid.optim.Optimizer],
    ) -> None:
        self._p = [lucid.nn.Parameter(mx.array(a)) for a in params]
        self._g = [mx.array(g) for g in grads]
        mx.eval([p.data for p in self._p], self._g)
        self.opt = make(self._p)

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


class LucidAdagrad(LucidOptimizer):
    """``lucid.optim.Adagrad`` with the benchmarks' ``lr`` and ``eps``."""

    name = "lucid.optim.Adagrad"

    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        super().__init__(params, grads, lambda ps: lucid.optim.Adagrad(ps, lr=LR, eps=EPS))


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

    factories = [(LucidAdagrad.name, LucidAdagrad), *ADAGRAD_PEERS]
    results = measure(factories, start, grads, s, want=want, steps=steps, rtol=RTOL, atol=ATOL)

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
        gbs = gb_per_s(n, r["ms"])
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

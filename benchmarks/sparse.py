"""Section sparse: Adagrad on a large embedding table of which a batch touches few rows.

A 1,000,000 x 64 float32 table; each step looks up 1,024 indices (with repeats: they are
drawn from a pool of 512 rows per step) and applies the same upstream gradient in every
implementation:

- lucid sparse: ``nn.Embedding(sparse=True)``, a :class:`lucid.SparseGrad`, Adagrad's
  row-sparse step (coalesce, then scatter into ``G`` and ``θ``);
- lucid dense: ``nn.Embedding()``; the gradient is a table-sized array and Adagrad
  updates every element;
- torch sparse: ``torch.nn.Embedding(sparse=True)`` and ``torch.optim.Adagrad`` (its
  sparse branch coalesces and updates the touched rows).

Only ``optimizer.step()`` is timed; the gradient is computed and evaluated before. The
table after the timed steps is compared between lucid sparse and torch sparse. A last
table times whole training iterations (lookup, a linear layer, backward, step) on 200k x 64
and 1M x 64 tables with 512 lookups, in two loop shapes: the loss read every step, and
never read. (The step settles the pending lookup first, so that its scatters write in
place either way: see ``lucid/optim/sparse_step.py``.)
"""

from __future__ import annotations

import functools
import time
import warnings

import mlx.core as mx
import numpy as np
import torch

import lucid
from benchmarks.common import (
    EPS,
    LR,
    Section,
    Settings,
    Table,
    fmt_bytes,
    fmt_ms,
    lr_at,
    median_ms,
    mlx_step_overhead,
)

__all__ = ["section_sparse"]

# torch warns on every sparse step that it skips its invariant checks; nothing to act on
warnings.filterwarnings("ignore", message="Sparse invariant checks")

FULL = (1_000_000, 64, 1024)  # rows, columns, indices per step
QUICK = (20_000, 16, 64)


def _batches(rows: int, dim: int, k: int, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pool = rng.integers(0, rows, k // 2)
        out.append(
            (rng.choice(pool, k).astype(np.int64), rng.normal(size=(k, dim)).astype(np.float32))
        )
    return out


class _Lucid:
    def __init__(self, table: np.ndarray, sparse: bool) -> None:
        self.emb = lucid.nn.Embedding(*table.shape, sparse=sparse)
        self.emb.weight.data = mx.array(table)
        self.opt = lucid.optim.Adagrad(self.emb.parameters(), lr=LR, eps=EPS)
        mx.eval(self.emb.weight.data, [s["sum"] for s in self.opt.state.values()])

    def backward(self, idx: np.ndarray, upstream: np.ndarray) -> None:
        self.opt.zero_grad()
        out = self.emb(idx)
        (out * lucid.tensor(upstream)).sum().backward()
        g = self.emb.weight.grad
        if isinstance(g, lucid.SparseGrad):
            mx.eval(g.indices, g.values, g._rows, out.data)
        else:
            mx.eval(g.data, out.data)

    def step(self, i: int) -> None:
        self.opt.param_groups[0]["lr"] = lr_at(i)
        self.opt.step()


class _Torch:
    def __init__(self, table: np.ndarray) -> None:
        self.emb = torch.nn.Embedding(*table.shape, sparse=True)
        with torch.no_grad():
            self.emb.weight.copy_(torch.from_numpy(table))
        self.opt = torch.optim.Adagrad(self.emb.parameters(), lr=LR, eps=EPS)

    def backward(self, idx: np.ndarray, upstream: np.ndarray) -> None:
        self.opt.zero_grad()
        (self.emb(torch.from_numpy(idx)) * torch.from_numpy(upstream)).sum().backward()

    def step(self, i: int) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr_at(i)
        self.opt.step()


def _time_steps(impl, batches, start: int) -> list[float]:
    times = []
    for i, (idx, up) in enumerate(batches, start):
        impl.backward(idx, up)
        t0 = time.perf_counter()
        impl.step(i)
        times.append(time.perf_counter() - t0)
    return times


LOOP_SIZES = [(200_000, 64), (1_000_000, 64)]
LOOP_QUICK = [(20_000, 16)]
LOOP_LOOKUPS = 512


def _train_iterations(rows: int, dim: int, n: int, read_loss: bool, seed: int) -> float:
    """Median ms of a whole iteration: lookup, ``Linear(dim, 1)``, backward, step, with the
    loss read (``loss.item()``) every step or never."""
    lucid.manual_seed(seed)
    emb, lin = lucid.nn.Embedding(rows, dim, sparse=True), lucid.nn.Linear(dim, 1)
    opt = lucid.optim.Adagrad([*emb.parameters(), *lin.parameters()], lr=LR, eps=EPS)
    mx.eval(emb.weight.data, [s["sum"] for s in opt.state.values()])
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(n):
        idx = rng.integers(0, rows, LOOP_LOOKUPS)
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = lin(emb(idx)).sum()  # the graph that made MLX copy the table
        loss.backward()
        if read_loss:
            loss.item()
        opt.step()
        times.append(time.perf_counter() - t0)
    return median_ms(times[2:])


def section_sparse(s: Settings) -> Section:
    rows, dim, k = QUICK if s.quick else FULL
    table = np.random.default_rng(s.seed).normal(size=(rows, dim)).astype(np.float32)
    warm = _batches(rows, dim, k, s.warmup, s.seed + 1)
    timed = _batches(rows, dim, k, s.steps, s.seed + 2)

    # medians and minimums: torch's threaded step is bursty when another process shares
    # the 2 cores (0.4 ms steps between 20-27 ms ones, measured), MLX's much less so
    results: dict[str, float] = {}
    best: dict[str, float] = {}
    torch_sparse = _Torch(table)
    _time_steps(torch_sparse, warm, 0)
    times = _time_steps(torch_sparse, timed, s.warmup)
    results["torch sparse"], best["torch sparse"] = median_ms(times), 1e3 * min(times)
    torch_table = torch_sparse.emb.weight.detach().numpy().copy()
    del torch_sparse

    lucid_sparse = _Lucid(table, True)
    _time_steps(lucid_sparse, warm, 0)
    times = _time_steps(lucid_sparse, timed, s.warmup)
    results["lucid sparse (SparseGrad)"] = median_ms(times)
    best["lucid sparse (SparseGrad)"] = 1e3 * min(times)
    diff = float(np.abs(np.array(lucid_sparse.emb.weight.data) - torch_table).max())
    sparse_steps = lucid_sparse.opt.trace_count

    # peak memory of one sparse step beyond what was live before it
    idx, up = warm[0]
    lucid_sparse.backward(idx, up)
    peak = mlx_step_overhead(functools.partial(lucid_sparse.step, 0))
    del lucid_sparse

    dense = _Lucid(table, False)
    _time_steps(dense, warm[:2], 0)
    times = _time_steps(dense, timed[: max(3, s.steps // 4)], s.warmup)
    results["lucid dense"], best["lucid dense"] = median_ms(times), 1e3 * min(times)
    del dense

    del table
    loops = []
    for r, d in LOOP_QUICK if s.quick else LOOP_SIZES:
        n = 6 if s.quick else 22
        read = _train_iterations(r, d, n, True, s.seed)
        unread = _train_iterations(r, d, n, False, s.seed)
        loops.append((r, d, read, unread))

    ours = results["lucid sparse (SparseGrad)"]
    ours_best = best["lucid sparse (SparseGrad)"]
    rows_table = [
        [name, fmt_ms(ms), f"{ms / ours:.2f}", fmt_ms(best[name]), f"{best[name] / ours_best:.2f}"]
        for name, ms in sorted(results.items(), key=lambda item: item[1])
    ]
    step_bytes = 2 * rows * dim * 4  # θ and G
    notes = [
        f"{rows:,} x {dim} float32 table, {k} indices per step drawn from {k // 2} rows "
        f"(repeats summed before the update); lr changes every step; median of {s.steps} "
        "steps (lucid dense: fewer).",
        f"lucid sparse vs torch sparse after {s.warmup + s.steps} identical steps: max |Δθ| "
        f"= {diff:.2e}; traces of lucid's sparse step: {sparse_steps}.",
        f"Peak extra MLX memory of one lucid sparse step: {fmt_bytes(peak)} (the table and "
        f"its state: {fmt_bytes(step_bytes)}; {k} rows x {dim} x 4 B = {fmt_bytes(k * dim * 4)}).",
        "Whole training iterations (next table): lookup of "
        f"{LOOP_LOOKUPS} rows, Linear(D, 1), backward, step; median of the last 20. With "
        "the loss never read, the forward lookup is still pending when the step runs; the "
        "step evaluates the looked-up rows first (a second, small eval), so the scatters "
        "write in place and the loop costs what the loop that reads the loss costs.",
    ]
    loop_table = Table(
        ["table", "loss read every step ms", "loss never read ms", "never / read"],
        [[f"{r:,} x {d}", fmt_ms(a), fmt_ms(b), f"{b / a:.2f}"] for r, d, a, b in loops],
    )
    return Section(
        key="sparse",
        title="sparse: Adagrad step on a 1,000,000 x 64 embedding, 1,024 rows per step"
        if not s.quick
        else "sparse (quick sizes)",
        tables=[
            Table(
                ["implementation", "median ms", "/ lucid sparse", "best ms", "/ lucid sparse"],
                rows_table,
            ),
            loop_table,
        ],
        notes=notes,
        data={
            "results": results,
            "best": best,
            "max_abs_diff_vs_torch": diff,
            "peak_bytes": peak,
            "traces": sparse_steps,
            "train_ms": {f"{r}x{d}": {"read": a, "never_read": b} for r, d, a, b in loops},
        },
        parity_ok=diff < 1e-4 and sparse_steps == 1,
    )

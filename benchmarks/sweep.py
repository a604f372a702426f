"""Section sweep: one Adagrad step across sizes and tensor counts, against the copy bandwidth.

Two sweeps; each point is measured as sections A, B and C measure (``common.measure``:
the same start values, gradients and ``lr`` schedule for every implementation, timed
steps taken in turns):

- sizes: one float32 tensor of 4**k elements (2**10 ... 2**24), and one of 2**25;
- counts: 4,194,304 elements split into 1, 10, 100, 1,000 and 10,000 tensors (their
  sizes differ by at most one element).

At a point every implementation runs the same number of timed steps: as many as fit in
``Settings.budget_s`` for all of them together, at least ``min_steps`` and at most
``max_steps``, so small points get more steps and the whole sweep a bounded time. Then
each one's parameters are compared with those of the in-place NumPy implementation,
which ran the same steps.

Effective GB/s counts 20 bytes per element (Adagrad reads θ, g and G and writes θ and G).
The ceilings are copies of one large float32 array, counting the bytes read and written
(8 per element), each timed over alternating sources so that every repetition copies:

- MLX into a reused buffer: ``mx.slice_update`` over the whole of a destination that
  nothing else holds, so MLX writes it in place (what an in-place step can reach);
- MLX into a new buffer: ``mx.array(x)``, an ``AsType`` copy; above MLX's buffer cache
  each new output page-faults on Linux, as a step that allocates its outputs does;
- NumPy: ``np.copyto`` into a preallocated array (one thread; host memory);
- torch: ``Tensor.copy_`` into a preallocated CPU tensor (torch's threads; host memory).

The plot, ``sweep.png`` beside the report, draws GB/s against size and against tensor
count, one line per implementation, with the ceilings as horizontal lines.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import torch

from benchmarks.common import (
    BYTES_PER_ELEMENT,
    Section,
    Settings,
    Table,
    fmt_bytes,
    fmt_ms,
    gb_per_s,
    measure,
    median_ms,
    time_calls,
)
from benchmarks.optimizer_step import ATOL, RTOL, LucidAdagrad
from benchmarks.peers import ADAGRAD_PEERS, NumpyAdagrad

__all__ = ["section_sweep", "size_points", "split", "copy_bandwidths", "IMPLEMENTATIONS"]

IMPLEMENTATIONS = [(LucidAdagrad.name, LucidAdagrad), *ADAGRAD_PEERS]
REFERENCE = NumpyAdagrad.name
MLX_COMPILED = "mlx.optimizers.Adagrad compiled"

#: column titles
SHORT = {
    LucidAdagrad.name: "lucid",
    MLX_COMPILED: "MLX compiled",
    "mlx.optimizers.Adagrad": "MLX eager",
    "torch Adagrad for-loop": "torch for-loop",
    "torch Adagrad foreach": "torch foreach",
    "torch Adagrad fused": "torch fused",
    NumpyAdagrad.name: "NumPy",
}

COPY_BYTES_PER_ELEMENT = 8  # read one float32, write one


def size_points(s: Settings) -> list[int]:
    """The element counts of the size sweep, ascending."""
    return sorted({4**k for k in s.sweep_log4} | {s.sweep_top})


def split(total: int, count: int) -> list[int]:
    """``total`` elements as ``count`` tensor sizes that differ by at most one."""
    q, r = divmod(total, count)
    return [q + (i < r) for i in range(count)]


def _point(sizes: list[int], start: np.ndarray, grads: np.ndarray, s: Settings) -> dict:
    """Every implementation on tensors of ``sizes``, cut as views from ``start`` and
    ``grads`` (each implementation copies the start values; gradients are only read)."""
    cuts = np.cumsum([0, *sizes])
    pieces = list(zip(cuts[:-1], cuts[1:], strict=True))

    def reference(impls: dict) -> list[np.ndarray]:
        if REFERENCE not in impls:
            raise RuntimeError(f"sweep: the reference implementation {REFERENCE!r} failed")
        return impls[REFERENCE].params()

    results = measure(
        IMPLEMENTATIONS,
        [start[a:b] for a, b in pieces],
        [grads[a:b] for a, b in pieces],
        s,
        want=reference,
        budget_s=s.budget_s,
        rtol=RTOL,
        atol=ATOL,
    )
    return {"elements": int(cuts[-1]), "tensors": len(sizes), "results": results}


def copy_bandwidths(n: int, reps: int) -> dict[str, dict]:
    """GB/s of copying ``n`` float32 elements (8 bytes each: read + write), median of
    ``reps`` copies after one warm-up, per method; with the MLX methods' peak extra memory
    and a check that the destination holds the last source."""
    key = mx.random.key(0)
    sources = [mx.random.normal((n,), key=k) for k in mx.random.split(key, 2)]
    mx.eval(sources)
    out: dict[str, dict] = {}

    def record(label: str, times: list[float], ok: bool, extra: int | None) -> None:
        ms = median_ms(times)
        out[label] = {"gbs": gb_per_s(n, ms, COPY_BYTES_PER_ELEMENT), "ms": ms, "ok": ok}
        out[label]["extra_bytes"] = extra

    box = [mx.zeros((n,), dtype=mx.float32)]
    mx.eval(box)
    at = mx.array([0])

    def into_reused(i: int) -> None:
        # the list holds the only reference: at eval time the old destination is held by
        # the graph alone, so MLX donates its buffer to the output
        box[0] = mx.slice_update(box[0], sources[i % 2], at, (0,))
        mx.eval(box[0])

    into_reused(0)
    times = time_calls(into_reused, 1, reps)
    mx.synchronize()
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    into_reused(reps + 1)
    extra = max(0, mx.get_peak_memory() - before)
    ok = bool(mx.array_equal(box[0], sources[(reps + 1) % 2]).item())
    record("MLX copy into a reused buffer (slice_update)", times, ok, extra)
    del box[0]

    last: list[mx.array] = []

    def into_new(i: int) -> None:
        last[:] = [mx.array(sources[i % 2])]
        mx.eval(last[0])

    into_new(0)
    times = time_calls(into_new, 1, reps)
    ok = bool(mx.array_equal(last[0], sources[reps % 2]).item())
    record("MLX copy into a new buffer (mx.array)", times, ok, None)
    last.clear()
    sources.clear()
    mx.clear_cache()

    rng = np.random.default_rng(0)
    host = [rng.standard_normal(n, dtype=np.float32) for _ in range(2)]
    dst = np.empty_like(host[0])
    np.copyto(dst, host[0])
    times = time_calls(lambda i: np.copyto(dst, host[i % 2]), 1, reps)
    record("NumPy np.copyto", times, bool(np.array_equal(dst, host[reps % 2])), None)

    src_t = [torch.from_numpy(h) for h in host]
    dst_t = torch.from_numpy(dst)
    dst_t.copy_(src_t[0])
    times = time_calls(lambda i: dst_t.copy_(src_t[i % 2]), 1, reps)
    label = f"torch copy_ ({torch.get_num_threads()} threads)"
    record(label, times, bool(np.array_equal(dst, host[reps % 2])), None)
    return out


def _cell(p: dict, name: str, fmt) -> str:
    r = p["results"].get(name, {"error": "missing"})
    return "n/a" if "error" in r else fmt(p, r)


def _ratio(p: dict) -> float | None:
    """MLX compiled ms / lucid ms at a point: above 1, lucid is faster."""
    lucid_r = p["results"].get(LucidAdagrad.name, {})
    mlx_r = p["results"].get(MLX_COMPILED, {})
    return mlx_r["ms"] / lucid_r["ms"] if "ms" in lucid_r and "ms" in mlx_r else None


def _parity(p: dict) -> str:
    bad = []
    for name, r in p["results"].items():
        if "error" in r:
            bad.append(f"{SHORT.get(name, name)}: {r['error'][:60]}")
        elif not r["parity"]:
            bad.append(f"{SHORT.get(name, name)} {r['worst']:.1f}x tolerance")
    return "ok" if not bad else "FAIL: " + "; ".join(bad)


def _tables(points: list[dict], axis: str, label) -> list[Table]:
    names = [name for name, _ in IMPLEMENTATIONS]
    shorts = [SHORT.get(n, n) for n in names]
    gbs = Table([axis, "steps", *shorts])
    ms = Table([axis, *shorts, "MLX compiled / lucid", "parity vs NumPy"])
    for p in points:
        steps = next((r["steps"] for r in p["results"].values() if "steps" in r), 0)
        gbs.rows.append(
            [label(p), str(steps)]
            + [_cell(p, n, lambda p, r: f"{gb_per_s(p['elements'], r['ms']):.2f}") for n in names]
        )
        ratio = _ratio(p)
        ms.rows.append(
            [label(p)]
            + [_cell(p, n, lambda p, r: fmt_ms(r["ms"])) for n in names]
            + ["n/a" if ratio is None else f"{ratio:.2f}x", _parity(p)]
        )
    return [gbs, ms]


def _plot(data: dict, path: Path) -> None:
    """Two panels, GB/s against elements and against tensor count, saved as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(13, 5.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = [
        (axes[0], data["sizes"], "elements", "one float32 tensor: elements (log)"),
        (axes[1], data["counts"], "tensors", f"{data['total']:,} elements in N tensors (log)"),
    ]
    styles = ["-", "--", ":", "-."]
    for ax, points, x_key, x_label in panels:
        for name, _ in IMPLEMENTATIONS:
            xy = [
                (p[x_key], gb_per_s(p["elements"], p["results"][name]["ms"]))
                for p in points
                if "error" not in p["results"].get(name, {"error": 1})
            ]
            if xy:
                xs, ys = zip(*xy, strict=True)
                width = 2.6 if name == LucidAdagrad.name else 1.4
                ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=width, label=SHORT[name])
        for (label, c), style in zip(data["ceilings"].items(), styles, strict=False):
            ax.axhline(c["gbs"], color="0.35", linestyle=style, linewidth=1.1, label=label)
        ax.set_xscale("log", base=2 if x_key == "elements" else 10)
        ax.set_yscale("log")
        ax.set_xlabel(x_label)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel(f"effective GB/s ({BYTES_PER_ELEMENT} B per element; ceilings: 8 B)")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    copied = fmt_bytes(4 * data["copy_elements"])
    fig.suptitle(f"Adagrad step, effective bandwidth ({data['device']}); lines: copies of {copied}")
    fig.savefig(path, dpi=110)


def section_sweep(s: Settings) -> Section:
    total = s.sweep_total
    sizes = size_points(s)
    rng = np.random.default_rng(s.seed)
    biggest = max(sizes[-1], total)
    start = rng.standard_normal(biggest, dtype=np.float32)
    grads = rng.standard_normal(biggest, dtype=np.float32)

    size_sweep = [_point([n], start, grads, s) for n in sizes]
    count_sweep = [_point(split(total, c), start, grads, s) for c in s.sweep_counts]
    del start, grads
    copy_n = sizes[-1]
    ceilings = copy_bandwidths(copy_n, max(3, s.min_steps))
    data = {
        "sizes": size_sweep,
        "counts": count_sweep,
        "total": total,
        "ceilings": ceilings,
        "copy_elements": copy_n,
        "device": f"MLX on {mx.default_device()}",
    }

    tables = _tables(size_sweep, "elements", lambda p: f"{p['elements']:,}")
    tables += _tables(count_sweep, "tensors", lambda p: f"{p['tensors']:,}")
    copy = Table(["ceiling", "GB/s", "ms per copy", "checked", "peak extra MLX mem"])
    for label, c in ceilings.items():
        mem = "—" if c["extra_bytes"] is None else fmt_bytes(c["extra_bytes"])
        copy.rows.append(
            [label, f"{c['gbs']:.2f}", fmt_ms(c["ms"]), "ok" if c["ok"] else "WRONG", mem]
        )
    tables.append(copy)

    points = size_sweep + count_sweep
    parity_ok = all(_parity(p) == "ok" for p in points) and all(c["ok"] for c in ceilings.values())
    ratios = [(r, p) for p in points if (r := _ratio(p)) is not None]
    notes = [
        "Tables, in order: GB/s then ms/step over sizes (one tensor), GB/s then ms/step over "
        f"tensor counts ({total:,} elements in all), and the copy ceilings.",
        f"GB/s counts {BYTES_PER_ELEMENT} bytes per element and step; the ceilings copy "
        f"{copy_n:,} float32 elements ({fmt_bytes(4 * copy_n)}) and count 8 bytes per element.",
        f"Timed steps per point: as many as fit in {s.budget_s:g} s for all implementations "
        f"together, {s.min_steps} to {s.max_steps} (column `steps`), after {s.warmup} warm-up "
        "steps; median; lr changes on every step.",
        "The copy lines are measured out of cache; a step whose tensors fit in the caches "
        "can pass them. A copy by ordinary stores (as MLX's) also reads each destination line "
        "before writing it (write-allocate on x86), which an in-place update, having read "
        "it already, does not pay: the lines are references, not bounds.",
    ]
    if ratios:
        worst, where = min(ratios, key=lambda rp: rp[0])
        if where["tensors"] == 1:
            at = f"one tensor of {where['elements']:,} elements"
        else:
            at = f"{where['tensors']:,} tensors, {where['elements']:,} elements in all"
        notes.append(
            f"MLX compiled / lucid: lowest {worst:.2f}x ({at}); lucid is at least as fast at "
            f"{sum(r >= 1 for r, _ in ratios)} of {len(ratios)} points."
        )
    reused = ceilings["MLX copy into a reused buffer (slice_update)"]["gbs"]
    big = size_sweep[-1]["results"].get(LucidAdagrad.name, {})
    if "ms" in big:
        lucid_gbs = gb_per_s(size_sweep[-1]["elements"], big["ms"])
        notes.append(
            f"lucid on {size_sweep[-1]['elements']:,} elements: {lucid_gbs:.2f} GB/s = "
            f"{100 * lucid_gbs / reused:.0f}% of MLX's in-place copy bandwidth."
        )
    notes.append("parity ok" if parity_ok else "PARITY FAILED (see the tables)")
    return Section(
        key="sweep",
        title="sweep: Adagrad step over sizes and tensor counts, against the copy bandwidth",
        tables=tables,
        notes=notes,
        data=data,
        parity_ok=parity_ok,
        figures={"sweep.png": lambda path: _plot(data, path)},
    )

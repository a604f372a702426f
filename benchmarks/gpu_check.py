"""The GPU check of issue 16: the Adagrad step's bandwidth against the copy bandwidth, and
the kernels a step launches on many small tensors. ``benchmarks/gpu.sh`` runs it on a
CUDA machine; it also runs on the CPU (tiny with ``--quick``), where there are no
kernels to count.

Bandwidth, on ``--elements`` float32 elements (default 2**24, 16.8M): lucid's Adagrad step
and compiled ``mlx.optimizers.Adagrad``, timed as section A times them (median of
``--steps``, parity with NumPy afterwards), in effective GB/s (20 bytes per element),
against MLX's copy into a reused buffer on the same device (8 bytes per element; see
``sweep.copy_bandwidths``). The target is >= 80% of that copy.

Kernels per step, on 4,194,304 elements (``Settings.sweep_total``) split into each of
``--tensors`` tensors (the sweep's count points), for lucid and compiled MLX. Counted by:

- ``cupti``: PyTorch's profiler (Kineto over CUPTI), in this process, around the counted
  steps only; CUPTI's activity records cover every CUDA context of the process, so MLX's
  kernels are in them. Checked first on one MLX kernel: if it sees none, the method fails.
- ``ncu``: Nsight Compute runs this script as a child (``--workload``) twice, with 0 and
  with N counted steps, and the difference of its kernel rows, / N, is kernels per step.
- ``auto`` (default): ``cupti``, else ``ncu``, else none (reported as such).

Nsight Systems is not used: it was not on the H200 image's PATH, and its bundled copy
could not make a report there (device KINDS.md, 2026-11-04). MLX itself counts no
launches. MLX's CUDA backend records kernels into CUDA graphs of at most
``MLX_MAX_OPS_PER_BUFFER`` (default 20) nodes, so the report gives both kernels (graph
nodes run) and host-side launch calls (graph launches plus direct kernel launches).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `lucid` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx.core as mx
import numpy as np

from benchmarks.common import Settings, gb_per_s, lr_at, measure
from benchmarks.optimizer_step import ATOL, RTOL, LucidAdagrad
from benchmarks.peers import ADAGRAD_PEERS, NumpyAdagrad
from benchmarks.sweep import MLX_COMPILED, copy_bandwidths, split

TARGET = 0.80  # of the copy bandwidth
REUSED = "MLX copy into a reused buffer (slice_update)"
WORKLOADS: dict[str, Callable] = {
    "lucid": LucidAdagrad,
    "mlx-compiled": dict(ADAGRAD_PEERS)[MLX_COMPILED],
}


def device_info() -> dict[str, str]:
    info = {"mlx": mx.__version__, "default device": str(mx.default_device())}
    for backend in ("cuda", "metal"):
        mod = getattr(mx, backend, None)
        if mod is not None and hasattr(mod, "is_available"):
            info[f"mx.{backend}.is_available()"] = str(mod.is_available())
    return info


def verify_cuda() -> list[str]:
    """What stops MLX's CUDA build from running here (empty: nothing): mlx-cuda-13's
    requirements (installed with --no-deps) and a CUDA device that computes."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    problems = []
    try:
        requirements = md.requires("mlx-cuda-13") or []
    except md.PackageNotFoundError:
        return ["mlx-cuda-13 is not installed"]
    for text in requirements:
        req = Requirement(text)
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            problems.append(f"{req}: not installed")
            continue
        ok = req.specifier.contains(have, prereleases=True)
        print(f"  {req}: {have}" + ("" if ok else "  <- does not match"))
        if not ok:
            problems.append(f"{req}: have {have}")
    if not getattr(mx, "cuda", None) or not mx.cuda.is_available():
        problems.append(f"MLX {mx.__version__} sees no CUDA device ({mx.default_device()})")
        return problems
    x = mx.arange(1 << 20, dtype=mx.float32)
    if not mx.array_equal(x * 2 + 1, 2 * x + 1).item():
        problems.append("MLX computed x * 2 + 1 wrong on the GPU")
    return problems


def bandwidth(n: int, s: Settings) -> dict:
    """lucid and compiled MLX Adagrad on one tensor of ``n`` elements, and the copies."""
    rng = np.random.default_rng(s.seed)
    start = [rng.standard_normal(n, dtype=np.float32)]
    grads = [rng.standard_normal(n, dtype=np.float32)]
    reference = NumpyAdagrad(start, grads)
    for i in range(s.warmup + s.steps):
        reference.step(lr_at(i))
    factories = [(LucidAdagrad.name, LucidAdagrad), (MLX_COMPILED, WORKLOADS["mlx-compiled"])]
    results = measure(factories, start, grads, s, want=reference.params(), rtol=RTOL, atol=ATOL)
    del reference
    copies = copy_bandwidths(n, max(3, s.steps))
    ceiling = copies[REUSED]["gbs"]
    out = {"elements": n, "copies": copies, "ceiling_gbs": ceiling, "steps": {}}
    for name, r in results.items():
        if "error" in r:
            out["steps"][name] = {"error": r["error"]}
            continue
        gbs = gb_per_s(n, r["ms"])
        out["steps"][name] = {
            "ms": r["ms"],
            "gbs": gbs,
            "of_ceiling": gbs / ceiling,
            "parity": r["parity"],
            "worst": r["worst"],
        }
    return out


# ------------------------------------------------------------------------ kernel counting


def _workload(name: str, tensors: int, s: Settings):
    """An implementation on ``s.sweep_total`` elements in ``tensors`` tensors, warmed up."""
    sizes = split(s.sweep_total, tensors)
    rng = np.random.default_rng(s.seed)
    start = [rng.standard_normal(k, dtype=np.float32) for k in sizes]
    grads = [rng.standard_normal(k, dtype=np.float32) for k in sizes]
    impl = WORKLOADS[name](start, grads)
    for i in range(s.warmup):
        impl.step(lr_at(i))
    mx.synchronize()
    return impl


def _run_steps(impl, first: int, steps: int) -> None:
    for i in range(first, first + steps):
        impl.step(lr_at(i))
    mx.synchronize()


def _count_trace(events: list[dict]) -> dict:
    kernels = [e for e in events if e.get("cat") == "kernel"]
    calls = [
        e
        for e in events
        if e.get("cat") in ("cuda_runtime", "cuda_driver") and "aunch" in e.get("name", "")
    ]
    return {
        "kernels": len(kernels),
        "launch calls": len(calls),
        "graph launches": sum("Graph" in e["name"] for e in calls),
        "top kernels": collections.Counter(e.get("name", "?") for e in kernels).most_common(5),
    }


def cupti_counter() -> Callable[[Callable[[], None]], dict] | str:
    """A function counting the kernels that ``fn()`` runs, or why there is none."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except ImportError as e:
        return f"torch.profiler not importable ({e})"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"

    def count(fn: Callable[[], None]) -> dict:
        with tempfile.TemporaryDirectory() as d:
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                mx.synchronize()
            path = Path(d) / "trace.json"
            prof.export_chrome_trace(str(path))
            return _count_trace(json.loads(path.read_text()).get("traceEvents", []))

    x = mx.arange(1 << 20, dtype=mx.float32)
    mx.eval(x)
    seen = count(lambda: mx.eval(x * 2 + 1))
    if seen["kernels"] < 1:
        return "CUPTI through torch.profiler saw none of MLX's kernels"
    return count


def _find_ncu() -> str | None:
    found = shutil.which("ncu")
    if found:
        return found
    for pattern in ("/usr/local/cuda/bin/ncu", "/opt/nvidia/nsight-compute/*/ncu"):
        for path in sorted(Path("/").glob(pattern.lstrip("/"))):
            return str(path)
    return None


def ncu_command(ncu: str, log: Path, workload: str, tensors: int, steps: int, quick: bool):
    """The Nsight Compute command that profiles one child run of this script."""
    child = [sys.executable, str(Path(__file__).resolve()), "--workload", workload]
    child += ["--tensors", str(tensors), "--steps", str(steps)] + (["--quick"] if quick else [])
    metric = ["--metrics", "gpu__time_duration.sum", "--clock-control", "none"]
    return [ncu, "--csv", "--log-file", str(log), *metric, "--target-processes", "all", *child]


def count_ncu_rows(text: str) -> int:
    """Kernel rows of ncu's CSV (one row per kernel and metric; one metric asked)."""
    rows = [line for line in text.splitlines() if line.startswith('"')]
    return max(0, len(rows) - 1) if rows and "Kernel Name" in rows[0] else 0


def ncu_count(ncu: str, workload: str, tensors: int, steps: int, quick: bool) -> dict:
    counts = []
    with tempfile.TemporaryDirectory() as d:
        for k in (0, steps):
            log = Path(d) / f"ncu-{k}.csv"
            cmd = ncu_command(ncu, log, workload, tensors, k, quick)
            subprocess.run(cmd, check=True, capture_output=True, timeout=300)
            counts.append(count_ncu_rows(log.read_text()))
    return {"kernels": counts[1] - counts[0], "launch calls": None, "graph launches": None}


def launches(tensor_counts: list[int], steps: int, method: str, s: Settings) -> dict:
    """Kernels per step for each workload and tensor count, and how they were counted."""
    why = []
    counter = None
    if method in ("auto", "cupti"):
        got = cupti_counter()
        if callable(got):
            counter, used = got, "cupti (torch.profiler)"
        else:
            why.append(f"cupti: {got}")
    ncu = _find_ncu() if counter is None and method in ("auto", "ncu") else None
    if counter is None and ncu is not None:
        used = f"ncu ({ncu})"
    if counter is None and ncu is None:
        if method in ("auto", "ncu"):
            why.append("ncu: not found")
        return {"method": None, "why": why, "counts": {}}
    counts: dict[str, dict] = {}
    for name in WORKLOADS:
        for tensors in tensor_counts:
            key = f"{name}, {tensors} tensors"
            try:
                if counter is not None:
                    impl = _workload(name, tensors, s)
                    c = counter(partial(_run_steps, impl, s.warmup, steps))
                    del impl
                else:
                    c = ncu_count(ncu, name, tensors, steps, s.quick)
            except Exception as e:
                counts[key] = {"error": f"{type(e).__name__}: {e}"}
                continue
            c["per step"] = c["kernels"] / steps
            counts[key] = c
            mx.clear_cache()
    return {"method": used, "why": why, "counts": counts}


# ---------------------------------------------------------------------------------- report


def markdown(info: dict, bw: dict, kl: dict, total: int) -> str:
    lines = ["# GPU check (issue 16)", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", f"## Adagrad step on {bw['elements']:,} float32 elements", ""]
    lines += ["| what | ms | GB/s | of the reused-buffer copy | parity |", "|---|---|---|---|---|"]
    for label, c in bw["copies"].items():
        share = c["gbs"] / bw["ceiling_gbs"]
        check = "ok" if c["ok"] else "WRONG"
        lines.append(f"| {label} | {c['ms']:.3f} | {c['gbs']:.1f} | {share:.0%} | {check} |")
    for name, r in bw["steps"].items():
        if "error" in r:
            lines.append(f"| {name} | n/a | n/a | n/a | {r['error'][:80]} |")
            continue
        parity = "ok" if r["parity"] else f"FAIL ({r['worst']:.1f}x tolerance)"
        row = f"| {name} | {r['ms']:.3f} | {r['gbs']:.1f} | {r['of_ceiling']:.0%} | {parity} |"
        lines.append(row)
    lucid_r = bw["steps"].get(LucidAdagrad.name, {})
    if "of_ceiling" in lucid_r:
        verdict = "MET" if lucid_r["of_ceiling"] >= TARGET else "NOT MET"
        lines += [
            "",
            f"Target >= {TARGET:.0%} of the copy: {verdict} ({lucid_r['of_ceiling']:.0%}).",
        ]
    lines += ["", f"## Kernels per step on {total:,} elements in N tensors", ""]
    if kl["method"] is None:
        lines.append("Not counted: " + "; ".join(kl["why"] or ["--launches none"]) + ".")
    else:
        lines.append(
            f"Counted with {kl['method']}." + (f" ({'; '.join(kl['why'])})" if kl["why"] else "")
        )
        lines += [
            "",
            "| workload | kernels per step | launch calls | graph launches | top kernels |",
        ]
        lines.append("|---|---|---|---|---|")
        for key, c in kl["counts"].items():
            if "error" in c:
                lines.append(f"| {key} | n/a | n/a | n/a | {c['error'][:80]} |")
                continue
            top = ", ".join(f"{n[:40]} x{k}" for n, k in c.get("top kernels", []))
            lines.append(
                f"| {key} | {c['per step']:.1f} | {c['launch calls']} | {c['graph launches']} "
                f"| {top} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--elements", type=int, help="one tensor's size for the bandwidth (default: set A's)"
    )
    parser.add_argument("--tensors", default="1,1000,10000", help="comma-separated counts")
    parser.add_argument("--steps", type=int, default=10, help="timed and counted steps")
    parser.add_argument("--launches", choices=["auto", "cupti", "ncu", "none"], default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the tests)")
    parser.add_argument("--out", type=Path, help="Markdown report")
    parser.add_argument("--json", type=Path, help="raw results")
    parser.add_argument(
        "--verify", action="store_true", help="only check that MLX's CUDA build runs here"
    )
    parser.add_argument("--workload", choices=list(WORKLOADS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.verify:
        problems = verify_cuda()
        if problems:
            raise SystemExit("gpu_check --verify: " + "; ".join(problems))
        print(f"MLX {mx.__version__} on {mx.default_device()}: ok")
        return {}
    s = Settings.quick_settings() if args.quick else Settings()
    s = replace(s, steps=max(1, args.steps)) if args.workload is None else s
    elements = s.a_elements if args.elements is None else args.elements
    try:
        tensors = [int(t) for t in args.tensors.split(",") if t.strip()]
    except ValueError:
        tensors = []
    if not tensors or not all(1 <= t <= s.sweep_total for t in tensors):
        parser.error(f"--tensors {args.tensors!r}: need counts from 1 to {s.sweep_total:,}")
    if elements < 1:
        parser.error(f"--elements {elements}: need >= 1")

    if args.workload is not None:  # the child that ncu profiles: warm up, then N steps
        impl = _workload(args.workload, tensors[0], s)
        _run_steps(impl, s.warmup, args.steps)
        return {}

    t0 = time.perf_counter()
    info = device_info()
    bw = bandwidth(elements, s)
    kl = launches(tensors, args.steps, args.launches, s)
    info["seconds"] = f"{time.perf_counter() - t0:.1f}"
    text = markdown(info, bw, kl, s.sweep_total)
    print(text, flush=True)
    if args.out is not None:
        args.out.write_text(text)
    if args.json is not None:
        raw = {"info": info, "bandwidth": bw, "launches": kl}
        args.json.write_text(json.dumps(raw, default=str, indent=1))
    return {"info": info, "bandwidth": bw, "launches": kl}


if __name__ == "__main__":
    main()

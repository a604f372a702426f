"""Section distributed: the gradient all-reduce of set B across 2 processes.

Two ranks on 127.0.0.1 (MLX's ring backend, started here with a hostfile on two free
ports) each hold a set-B-shaped gradient (rank r's is ``(r + 1) * g``) and average it:

- ``lucid DDP``: the reduction that :class:`lucid.nn.parallel.DistributedDataParallel`
  runs after backward (flat buckets of 25 MiB, one all-sum each, then views);
- ``mlx.nn.average_gradients``: MLX's helper, with its defaults (32 MiB groups).

The implementations take turns, one call each; each timed call starts after a barrier,
so both ranks enter together, and ends when its ``mx.eval`` returns on rank 0. GB/s is
the gradient's bytes over that time (the "algorithm bandwidth"; a ring all-reduce sends
and receives 2 (N-1)/N times that per rank). Both results are checked against ``1.5 g``
(the mean of ``g`` and ``2 g``). ``--sweep`` (run as a script) adds DDP's bucket sizes,
the measurement behind its default.

Run alone: ``python benchmarks/run.py --section distributed``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `lucid` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx.core as mx
import numpy as np

from benchmarks.common import Section, Settings, Table, fmt_bytes, fmt_ms
from benchmarks.optimizer_step import shapes_for

__all__ = ["section_distributed"]

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_TIMEOUT = 300  # seconds for both workers together
#: DDP bucket caps of the --sweep, in MiB (0.001: one all-sum per tensor in practice)
SWEEP_MB = (0.001, 1.0, 4.0, 25.0, 1024.0)


# ----------------------------------------------------------------------------- the worker


def _worker(quick: bool, sweep: bool, out: Path) -> None:
    import mlx.nn

    import lucid.distributed as dist
    from lucid import nn
    from lucid.nn.parallel import DistributedDataParallel

    dist.init(timeout=120)
    rank = dist.get_rank()
    s = Settings.quick_settings() if quick else Settings()
    shapes = shapes_for("B", s)
    rng = np.random.default_rng(s.seed)
    base = [mx.array(rng.standard_normal(sh, dtype=np.float32)) for sh in shapes]
    grads = [g * (rank + 1) for g in base]
    mx.eval(grads)
    model = nn.Module()
    for i, sh in enumerate(shapes):
        model.register_parameter(f"p{i}", nn.Parameter(mx.zeros(sh)))
    params = list(model.parameters())

    def lucid_ddp(cap_mb: float):
        ddp = DistributedDataParallel(model, bucket_cap_mb=cap_mb)
        return lambda: [g for _, g in ddp._reduce(list(zip(params, grads, strict=True)))]

    def mlx_average():
        tree = {f"p{i}": g for i, g in enumerate(grads)}
        return list(mlx.nn.average_gradients(tree).values())

    impls = {"lucid DDP": lucid_ddp(25.0), "mlx.nn.average_gradients": mlx_average}
    if sweep:
        impls.update({f"lucid DDP, {mb:g} MiB buckets": lucid_ddp(mb) for mb in SWEEP_MB})
    want = [np.array(g) * 1.5 for g in base]
    results = {}
    for name, call in impls.items():
        got = call()
        mx.eval(got)
        ok = all(
            np.allclose(np.array(a), b, rtol=1e-6, atol=0) for a, b in zip(got, want, strict=True)
        )
        results[name] = {"times": [], "parity": ok}
    for _ in range(s.warmup):
        for call in impls.values():
            mx.eval(call())
    # one call of each in turn (in blocks, the first block of a round was measured up to
    # 2x faster than an identical configuration later in it, on a loaded machine)
    for _ in range(s.steps):
        for name, call in impls.items():
            dist.barrier()
            t0 = time.perf_counter()
            mx.eval(call())
            results[name]["times"].append(time.perf_counter() - t0)
    if rank == 0:
        elements = sum(int(np.prod(sh)) for sh in shapes)
        out.write_text(
            json.dumps({"elements": elements, "tensors": len(shapes), "results": results})
        )


# ----------------------------------------------------------------------------- the section


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def run_local_ranks(argv: list[str], timeout: float,
                    ranks: int = 2) -> list[tuple[int, str, str, float]]:  # fmt: skip
    """Start ``argv`` as ranks ``0..ranks-1`` of an MLX ring on 127.0.0.1 (free ports, a
    hostfile), each in a process group of its own, and wait at most ``timeout`` seconds
    in all; every group is killed afterwards, pass or fail (a timeout raises
    ``subprocess.TimeoutExpired``). ``(returncode, stdout, stderr, seconds)`` per rank."""
    with tempfile.TemporaryDirectory(prefix="lucid-ranks-") as tmp:
        hostfile = Path(tmp) / "hosts.json"
        hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in _free_ports(ranks)]))
        env = {**os.environ, "MLX_HOSTFILE": str(hostfile), "PYTHONPATH": str(ROOT)}
        start = time.monotonic()
        procs = [
            subprocess.Popen(argv, env={**env, "MLX_RANK": str(rank)}, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for rank in range(ranks)
        ]  # fmt: skip
        results = []
        try:
            for p in procs:
                out, err = p.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))
                results.append((p.returncode, out, err, time.monotonic() - start))
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):  # nothing left in its group
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        return results


def launch(quick: bool, sweep: bool = False) -> dict:
    """Run the two workers; rank 0's results."""
    with tempfile.TemporaryDirectory(prefix="lucid-bench-dist-") as tmp:
        out = Path(tmp) / "out.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--out", str(out)]
        argv += ["--quick"] * quick + ["--sweep"] * sweep
        results = run_local_ranks(argv, LAUNCH_TIMEOUT)
        failed = [(r, code) for r, (code, *_) in enumerate(results) if code]
        if failed:
            logs = "\n".join(o + e for _, o, e, _ in results)
            raise RuntimeError(f"distributed workers failed {failed}:\n" + logs[-2000:])
        return json.loads(out.read_text())


def table(raw: dict) -> tuple[Table, bool]:
    nbytes = 4 * raw["elements"]
    lucid_ms = 1e3 * statistics.median(raw["results"]["lucid DDP"]["times"])
    rows, ok = [], True
    for name, r in raw["results"].items():
        ms = 1e3 * statistics.median(r["times"])
        speed = "—" if name == "lucid DDP" else f"{ms / lucid_ms:.2f}x"
        rows.append(
            [
                name,
                fmt_ms(ms),
                f"{nbytes / (ms * 1e-3) / 1e9:.2f}",
                speed,
                "ok" if r["parity"] else "FAIL",
            ]
        )
        ok &= r["parity"]
    header = ["implementation", "ms/all-reduce (median)", "GB/s", "lucid speed-up", "parity"]
    return Table(header, rows), ok


def section_distributed(s: Settings) -> Section:
    raw = launch(s.quick)
    tab, ok = table(raw)
    n = len(raw["results"]["lucid DDP"]["times"])
    notes = [
        f"{raw['tensors']} tensors, {raw['elements']:,} float32 ({fmt_bytes(4 * raw['elements'])}) "
        "per rank; 2 processes on 127.0.0.1, MLX ring backend.",
        f"Median of {n} calls after {s.warmup} warm-up calls, each after a barrier; GB/s = "
        "gradient bytes / time (a ring moves 2 (N-1)/N times that per rank).",
    ]
    if not ok:
        notes.append("PARITY FAILED: a mean differs from 1.5 g")
    title = "distributed: all-reduce of set B's gradient, 2 processes"
    sec = Section(key="distributed", title=title, tables=[tab], notes=notes, parity_ok=ok)
    sec.data.update(raw)
    return sec


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help="run as one rank (needs MLX_RANK)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="also DDP's bucket sizes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        _worker(args.quick, args.sweep, args.out)
    else:
        tab, _ = table(launch(args.quick, args.sweep))
        print(tab.markdown())

"""Section mlp: one end-to-end training step (forward, backward, Adagrad) of an MLP.

lucid (``nn.Sequential`` of ``Linear``/``ReLU``, ``nn.CrossEntropyLoss``,
``optim.Adagrad``), MLX (``mlx.nn`` with the whole step compiled) and PyTorch on the CPU
start from the same weights and train on the same fixed batch; their loss curves are
compared afterwards.
"""

from __future__ import annotations

import time

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
    interleaved_blocks,
    median_ms,
    mlx_step_overhead,
    time_calls,
)
from benchmarks.peers import MlxMLP, TorchMLP

__all__ = ["LucidMLP", "section_mlp"]

# Loose on purpose: Adagrad's first step moves every weight by ±lr whatever the size of
# its gradient, so a gradient near zero whose sign differs by rounding (matmuls summed in
# another order) becomes an lr-sized difference. The curves agree to about 1%, not to
# float32 precision. The absolute part covers the fitted end, where the loss nears zero.
LOSS_RTOL, LOSS_ATOL = 2e-2, 1e-4


class LucidMLP:
    """The lucid training step as a user writes it."""

    name = "lucid (nn + optim.Adagrad)"
    uses_mlx = True

    def __init__(self, weights: list[tuple[np.ndarray, np.ndarray]]) -> None:
        layers: list[lucid.nn.Module] = []
        for i, (w, b) in enumerate(weights):
            lin = lucid.nn.Linear(w.shape[1], w.shape[0])
            lin.weight.data, lin.bias.data = mx.array(w), mx.array(b)
            layers.append(lin)
            if i < len(weights) - 1:
                layers.append(lucid.nn.ReLU())
        self.model = lucid.nn.Sequential(*layers)
        mx.eval([p.data for p in self.model.parameters()])
        self._loss = lucid.nn.CrossEntropyLoss()
        self._opt = lucid.optim.Adagrad(self.model.parameters(), lr=LR, eps=EPS)

    def step(self, x: lucid.Tensor, y: lucid.Tensor) -> float:
        self._opt.zero_grad()
        loss = self._loss(self.model(x), y)
        loss.backward()
        self._opt.step()
        return loss.item()


def _weights(sizes: tuple[int, ...], rng: np.random.Generator) -> list[tuple[np.ndarray, ...]]:
    """PyTorch-default-like uniform init, drawn once and shared by every framework."""
    out = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        k = 1 / np.sqrt(fan_in)
        w = rng.uniform(-k, k, (fan_out, fan_in)).astype(np.float32)
        b = rng.uniform(-k, k, (fan_out,)).astype(np.float32)
        out.append((w, b))
    return out


def _matmul_note(m: int, k: int, n: int, repeats: int = 5) -> str:
    """Time the first layer's matmul alone: on Linux, MLX's CPU matmul is the bottleneck
    of the whole step, and this line makes that visible."""
    rng = np.random.default_rng(1)
    a_np = rng.standard_normal((m, k), dtype=np.float32)
    b_np = rng.standard_normal((k, n), dtype=np.float32)
    a, b = mx.array(a_np), mx.array(b_np)
    at, bt = torch.from_numpy(a_np), torch.from_numpy(b_np)
    mx.eval(a @ b)
    t_mx = median_ms(time_calls(lambda _: mx.eval(a @ b), 0, repeats))
    t_torch = median_ms(time_calls(lambda _: at @ bt, 0, repeats))
    t_np = median_ms(time_calls(lambda _: a_np @ b_np, 0, repeats))
    return (
        f"One ({m}x{k}) @ ({k}x{n}) float32 matmul alone, median of {repeats}: "
        f"mlx {fmt_ms(t_mx)} ms, torch {fmt_ms(t_torch)} ms, numpy {fmt_ms(t_np)} ms."
    )


def section_mlp(s: Settings) -> Section:
    sizes, batch = s.mlp_sizes, s.mlp_batch
    rng = np.random.default_rng(s.seed)
    weights = _weights(sizes, rng)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch).astype(np.int32)
    inputs = {
        LucidMLP: (lucid.tensor(x), lucid.tensor(y)),
        MlxMLP: (mx.array(x), mx.array(y)),
        TorchMLP: (torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))),
    }
    n_params = sum(w.size + b.size for w, b in weights)

    # all three stay alive and the timed steps go round-robin in blocks (see
    # optimizer_step.py): load from other processes then hits each of them alike
    results: dict[str, dict] = {}
    steppers = {}
    for cls, (xb, yb) in inputs.items():
        impl = cls(weights)
        losses: list[float] = []

        def step(_: int, impl=impl, xb=xb, yb=yb, losses=losses) -> None:
            losses.append(impl.step(xb, yb))

        t0 = time.perf_counter()
        step(0)
        first_ms = 1e3 * (time.perf_counter() - t0)
        for i in range(1, s.warmup - 1):
            step(i)
        # the last warm-up step doubles as the memory probe where MLX does the work
        extra = None
        if impl.uses_mlx:
            extra = mlx_step_overhead(lambda step=step: step(0))
        else:
            step(0)
        results[impl.name] = {
            "first_ms": first_ms,
            "extra_bytes": extra,
            "losses": losses,
            "times": [],
        }
        steppers[impl.name] = step
    for first, count in interleaved_blocks(s, s.mlp_steps):
        for name, step in steppers.items():
            results[name]["times"] += time_calls(step, first, count)
    for r in results.values():
        r["ms"] = median_ms(r["times"])
    del steppers, step, impl
    mx.clear_cache()

    lucid_r = results[LucidMLP.name]
    ref = np.array(lucid_r["losses"])
    table = Table(
        [
            "implementation",
            "ms/step (median)",
            "samples/s",
            "lucid speed-up",
            "first step ms",
            "peak extra MLX mem",
            "loss parity vs lucid",
        ]
    )
    parity_ok = True
    for name, r in results.items():
        diff = np.abs(np.array(r["losses"]) - ref)
        worst = float(np.max(diff / (LOSS_ATOL + LOSS_RTOL * np.abs(ref))))
        ok = worst <= 1.0
        parity_ok &= ok
        r["loss_rel_diff"] = worst
        table.rows.append(
            [
                name,
                fmt_ms(r["ms"]),
                f"{batch / (r['ms'] * 1e-3):,.0f}",
                "—" if r is lucid_r else f"{r['ms'] / lucid_r['ms']:.2f}x",
                fmt_ms(r["first_ms"]),
                "—" if r["extra_bytes"] is None else fmt_bytes(r["extra_bytes"]),
                "—" if r is lucid_r else ("ok" if ok else "FAIL") + f" ({worst:.2g} x tolerance)",
            ]
        )
    steps = len(ref)
    notes = [
        f"MLP {'-'.join(map(str, sizes))} ({n_params:,} parameters), batch {batch}, "
        f"cross-entropy, Adagrad lr={LR} eps={EPS}; one fixed batch.",
        f"Median of {s.mlp_steps} steps after {s.warmup} warm-up steps, the implementations "
        f"taking turns in blocks of about {s.mlp_steps // s.rounds} steps; each step includes "
        "reading the loss back as a Python float.",
        f"Loss curves over {steps} steps: {ref[0]:.4f} -> {ref[-1]:.4f} (lucid).",
        _matmul_note(batch, sizes[0], sizes[1]),
        "parity ok" if parity_ok else "PARITY FAILED (loss curves differ, see table)",
    ]
    return Section(
        key="mlp",
        title="mlp: end-to-end training step (forward, backward, Adagrad)",
        tables=[table],
        notes=notes,
        parity_ok=parity_ok,
        data={"results": results},
    )

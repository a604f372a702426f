"""Section family: SGD with momentum, Adam and AdamW on sets A, B and C.

Each rule runs in five implementations with equal hyperparameters, torch's defaults:

- lucid: ``lucid.optim.SGD(momentum=0.9)``, ``lucid.optim.Adam``, ``lucid.optim.AdamW``
  (only ``lr`` and ``momentum`` are passed, so the defaults are lucid's own: a default that
  differs from torch's shows as a parity failure);
- ``mlx.optimizers.SGD/Adam/AdamW``, compiled as MLX's docs show. MLX's defaults differ
  from torch's in one place, set here: ``bias_correction=True`` (MLX's default is False;
  torch corrects). MLX's Adam has no weight decay and torch's Adam defaults to none; both
  AdamWs decay by 0.01, decoupled; eps is 1e-8 and betas (0.9, 0.999) in all of them;
- torch's for-loop, foreach and fused code paths on the CPU.

``lr`` is torch's default, 1e-3, decayed as 1e-3 / (1 + 0.01 i) so that it changes on
every step. The timed steps are measured as in sections A, B and C (``common.measure``);
their number per set and rule is as many as fit in twice ``Settings.budget_s`` for all five
together, ``min_steps`` to ``max_steps``. After the warm-up steps, every implementation's
parameters are compared with a float64 NumPy transcription of torch's documented update
run for the same steps from the same start.

GB/s counts the bytes a step must move per element: SGD with momentum reads θ, g and the
momentum buffer and writes θ and the buffer (20 bytes); Adam and AdamW read θ, g, m and v
and write θ, m and v (28 bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import mlx.optimizers
import numpy as np
import torch

import lucid
from benchmarks.common import (
    Factory,
    Section,
    Settings,
    Table,
    fmt_ms,
    gb_per_s,
    measure,
)
from benchmarks.optimizer_step import LucidOptimizer, shapes_for
from benchmarks.peers import MlxOptimizer, TorchOptimizer

__all__ = ["RULES", "Rule", "factories", "measure_rule", "section_family"]

LR = 1e-3  # torch's default for all three
MOMENTUM = 0.9
BETAS = (0.9, 0.999)
EPS = 1e-8
ADAMW_DECAY = 1e-2
SETS = ("A", "B", "C")
# float32 against float64 after the warm-up steps (2 or 3). Each step rounds θ at float32
# (~6e-8 relative): rtol 1e-6. The absolute part is for parameters near 0, which carry
# the update's own error: MLX computes Adam's 1 - β2^t in float32 (0.999f = 0.99900001,
# 1.3e-5 relative; 6e-6 in the update, 6e-9 per step at lr = 1e-3), measured at 2e-8
# after 3 steps; torch's error there is 1e-9. A wrong formula is off by ~lr = 1e-3.
RTOL, ATOL = 1e-6, 1e-7


def lr_at(i: int) -> float:
    return LR / (1.0 + 0.01 * i)


# ----------------------------------------------------------------------------- references


def _sgd64(params: list[np.ndarray], grads: list[np.ndarray], steps: int) -> list[np.ndarray]:
    """torch's SGD, momentum μ, no dampening: b ← g at the first step, then b ← μ b + g;
    θ ← θ - lr b."""
    out = []
    for p, g in zip(params, grads, strict=True):
        theta, g = p.astype(np.float64), g.astype(np.float64)
        buf = None
        for t in range(steps):
            buf = g.copy() if buf is None else MOMENTUM * buf + g
            theta -= lr_at(t) * buf
        out.append(theta)
    return out


def _adam64(
    params: list[np.ndarray], grads: list[np.ndarray], steps: int, decay: float
) -> list[np.ndarray]:
    """torch's Adam (``decay`` = 0) and AdamW (decoupled ``decay``), amsgrad off:
    θ ← θ (1 - lr λ); m ← β1 m + (1-β1) g; v ← β2 v + (1-β2) g²;
    θ ← θ - lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps)."""
    b1, b2 = BETAS
    out = []
    for p, g in zip(params, grads, strict=True):
        theta, g = p.astype(np.float64), g.astype(np.float64)
        m, v = np.zeros_like(theta), np.zeros_like(theta)
        for t in range(1, steps + 1):
            lr = lr_at(t - 1)
            theta *= 1.0 - lr * decay
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            theta -= lr / (1 - b1**t) * m / (np.sqrt(v) / np.sqrt(1 - b2**t) + EPS)
        out.append(theta)
    return out


# --------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """One rule in every implementation: ``lucid`` is the class name in ``lucid.optim``
    and its keyword arguments, ``mlx`` and ``torch`` build their optimizers, ``reference``
    is the float64 transcription ``(params, grads, steps) -> params``."""

    title: str
    lucid: tuple[str, dict]
    mlx: Callable[[], mlx.optimizers.Optimizer]
    torch: Callable[..., torch.optim.Optimizer]
    reference: Callable[[list[np.ndarray], list[np.ndarray], int], list[np.ndarray]]
    bytes_per_element: int


RULES: dict[str, Rule] = {
    "SGD": Rule(
        title="SGD, momentum 0.9",
        lucid=("SGD", {"lr": LR, "momentum": MOMENTUM}),
        mlx=lambda: mlx.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM),
        torch=lambda ps, **flags: torch.optim.SGD(ps, lr=LR, momentum=MOMENTUM, **flags),
        reference=_sgd64,
        bytes_per_element=20,
    ),
    "Adam": Rule(
        title="Adam",
        lucid=("Adam", {"lr": LR}),
        mlx=lambda: mlx.optimizers.Adam(
            learning_rate=LR, betas=list(BETAS), eps=EPS, bias_correction=True
        ),
        torch=lambda ps, **flags: torch.optim.Adam(ps, lr=LR, betas=BETAS, eps=EPS, **flags),
        reference=partial(_adam64, decay=0.0),
        bytes_per_element=28,
    ),
    "AdamW": Rule(
        title="AdamW",
        lucid=("AdamW", {"lr": LR}),
        mlx=lambda: mlx.optimizers.AdamW(
            learning_rate=LR,
            betas=list(BETAS),
            eps=EPS,
            weight_decay=ADAMW_DECAY,
            bias_correction=True,
        ),
        torch=lambda ps, **flags: torch.optim.AdamW(
            ps, lr=LR, betas=BETAS, eps=EPS, weight_decay=ADAMW_DECAY, **flags
        ),
        reference=partial(_adam64, decay=ADAMW_DECAY),
        bytes_per_element=28,
    ),
}


def factories(key: str, with_lucid: bool = True) -> list[tuple[str, Factory]]:
    """The implementations of rule ``key``, ``(name, factory)`` in table order."""
    rule = RULES[key]
    out: list[tuple[str, Factory]] = []
    if with_lucid:
        cls_name, kwargs = rule.lucid
        cls = getattr(lucid.optim, cls_name)
        out.append(
            (f"lucid.optim.{cls_name}", partial(LucidOptimizer, make=partial(cls, **kwargs)))
        )
    mlx_name = f"mlx.optimizers.{type(rule.mlx()).__name__} compiled"
    out.append((mlx_name, partial(MlxOptimizer, make=rule.mlx, compiled=True)))
    for mode in TorchOptimizer.FLAGS:
        out.append((f"torch {mode}", partial(TorchOptimizer, make=rule.torch, mode=mode)))
    return out


def measure_rule(key: str, shapes: list[tuple[int, ...]], s: Settings, with_lucid: bool = True):
    """Every implementation of rule ``key`` on ``shapes``; ``common.measure``'s results."""
    rule = RULES[key]
    impls = factories(key, with_lucid)
    rng = np.random.default_rng(s.seed)
    start = [rng.standard_normal(sh, dtype=np.float32) for sh in shapes]
    grads = [rng.standard_normal(sh, dtype=np.float32) for sh in shapes]
    want = rule.reference(start, grads, s.warmup)
    return measure(
        impls,
        start,
        grads,
        s,
        want=want,
        check_after="warmup",
        lr=lr_at,
        budget_s=2 * s.budget_s,
        rtol=RTOL,
        atol=ATOL,
    )


def _table(key: str, by_set: dict[str, dict], elements: dict[str, int]) -> Table:
    rule = RULES[key]
    names = list(next(iter(by_set.values())))
    lucid_name = names[0]
    header = ["implementation"]
    for k in SETS:
        header += [f"{k} ms", f"{k} GB/s", f"{k} lucid speed-up"]
    table = Table([*header, "parity vs float64"])
    for name in names:
        row, bad = [name], []
        for k in SETS:
            r, base = by_set[k][name], by_set[k][lucid_name]
            if "error" in r:
                row += ["n/a"] * 3
                bad.append(f"{k}: {r['error'][:60]}")
                continue
            gbs = gb_per_s(elements[k], r["ms"], rule.bytes_per_element)
            same = name == lucid_name or "ms" not in base
            ratio = "—" if same else f"{r['ms'] / base['ms']:.2f}x"
            row += [fmt_ms(r["ms"]), f"{gbs:.2f}", ratio]
            if not r["parity"]:
                bad.append(f"{k} {r['worst']:.1f}x tolerance")
        table.rows.append([*row, "ok" if not bad else "FAIL: " + "; ".join(bad)])
    return table


def section_family(s: Settings) -> Section:
    shapes = {k: shapes_for(k, s) for k in SETS}
    elements = {k: sum(int(np.prod(sh)) for sh in shapes[k]) for k in SETS}
    results = {key: {k: measure_rule(key, shapes[k], s) for k in SETS} for key in RULES}

    tables = [_table(key, results[key], elements) for key in RULES]
    summary = Table(["rule", *(f"{k}: MLX compiled / lucid" for k in SETS)])
    ratios = []
    for key, by_set in results.items():
        row = [RULES[key].title]
        for k in SETS:
            names = list(by_set[k])
            lucid_r, mlx_r = by_set[k][names[0]], by_set[k][names[1]]
            if "ms" in lucid_r and "ms" in mlx_r:
                ratios.append(mlx_r["ms"] / lucid_r["ms"])
                row.append(f"{ratios[-1]:.2f}x")
            else:
                row.append("n/a")
        summary.rows.append(row)
    tables.append(summary)
    every = [r for by_set in results.values() for res in by_set.values() for r in res.values()]
    parity_ok = all("error" not in r and r["parity"] for r in every)
    steps = sorted({r["steps"] for r in every if "steps" in r}) or [0]
    notes = [
        "Tables: " + ", ".join(RULES[k].title for k in RULES) + "; then MLX compiled / lucid "
        "for each rule and set (above 1: lucid is faster).",
        f"Sets as in sections A, B and C: A {elements['A']:,} elements in 1 tensor, "
        f"B {elements['B']:,} in {len(shapes['B'])}, C {elements['C']:,} in {len(shapes['C'])}.",
        f"lr = {LR}/(1 + 0.01 i), changing on every step; betas {BETAS}, eps {EPS}, AdamW "
        f"weight decay {ADAMW_DECAY}; MLX with bias_correction=True. Median of "
        f"{steps[0]}-{steps[-1]} timed steps after {s.warmup} warm-up steps.",
        f"Parity: after the {s.warmup} warm-up steps, against a float64 NumPy transcription "
        f"of torch's update (rtol {RTOL}, atol {ATOL}).",
        f"lucid at least as fast as MLX compiled on {sum(r >= 1 for r in ratios)} of "
        f"{len(ratios)} (rule, set) pairs.",
        "parity ok" if parity_ok else "PARITY FAILED (see the tables)",
    ]
    return Section(
        key="family",
        title="family: SGD with momentum, Adam and AdamW on sets A, B and C",
        tables=tables,
        notes=notes,
        data={"results": results, "elements": elements},
        parity_ok=parity_ok,
    )

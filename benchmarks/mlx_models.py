"""Section mlx_models: the optimizer update of an ``mlx.nn`` model with many small arrays.

The model is a stack of blocks, each a LayerNorm and a Linear layer (4 parameter
arrays: the norm's scale and shift, the layer's matrix and bias), the shape of a deep
narrow network where MLX's per-array cost dominates. Three implementations step the
same model from the same start, with the same fixed gradient tree (as
``mlx.nn.value_and_grad`` returns it) and Adagrad with the benchmarks' ``lr`` schedule
and eps (``common.lr_at``, ``common.EPS``):

- ``lucid.optim.Adagrad(model.trainable_parameters())`` and ``opt.update(model, grads)``;
- ``mlx.optimizers.Adagrad`` and ``opt.update(model, grads)``, compiled as MLX's docs show
  (model and optimizer state as the compiled function's inputs and outputs);
- the same, eager.

Each step ends with the model's new parameters evaluated. Timed as in the other sections
(``common.measure``: warm-up steps, then round-robin blocks, median). After the warm-up
steps every implementation's parameters are compared with a float64 NumPy transcription of
the update, ``G += g^2; θ -= lr g / (sqrt(G) + eps)``.
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

import lucid
from benchmarks.common import (
    EPS,
    LR,
    Factory,
    Section,
    Settings,
    Table,
    fmt_ms,
    lr_at,
    measure,
)

__all__ = ["Blocks", "model_size", "IMPLEMENTATIONS", "section_mlx_models"]

# float32 against float64 after the warm-up steps (2 or 3): each step rounds θ and G at
# float32 (~6e-8 relative), the parameters near 0 carry the update's own error (~lr 1e-7).
RTOL, ATOL = 1e-6, 1e-7


class Blocks(nn.Module):
    """``blocks`` times LayerNorm(width) then Linear(width, width)."""

    def __init__(self, blocks: int, width: int) -> None:
        super().__init__()
        self.layers = [
            m for _ in range(blocks) for m in (nn.LayerNorm(width), nn.Linear(width, width))
        ]

    def __call__(self, x: mx.array) -> mx.array:
        for layer in self.layers:
            x = layer(x)
        return x


def model_size(s: Settings) -> tuple[int, int]:
    """``(blocks, width)``: 64 blocks of width 64 (256 arrays, 270,336 elements), or 4
    of width 16 in quick mode."""
    return (4, 16) if s.quick else (64, 64)


class _OnModel:
    """A ``Blocks`` model holding the start values; the gradient tree fixed."""

    uses_mlx = True

    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray], size: tuple[int, int]):
        self.model = Blocks(*size)
        paths = [k for k, _ in tree_flatten(self.model.trainable_parameters())]
        self.model.update(
            tree_unflatten([(k, mx.array(a)) for k, a in zip(paths, params, strict=True)])
        )
        self.grads = tree_unflatten([(k, mx.array(g)) for k, g in zip(paths, grads, strict=True)])
        mx.eval(self.model.parameters(), self.grads)

    def params(self) -> list[np.ndarray]:
        return [np.array(a) for _, a in tree_flatten(self.model.trainable_parameters())]


class LucidOnModel(_OnModel):
    """``lucid.optim.Adagrad`` over the model's tree; ``opt.update`` evaluates."""

    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray], size: tuple[int, int]):
        super().__init__(params, grads, size)
        self.opt = lucid.optim.Adagrad(self.model.trainable_parameters(), lr=LR, eps=EPS)

    def step(self, lr: float) -> None:
        self.opt.param_groups[0]["lr"] = lr
        self.opt.update(self.model, self.grads)

    @property
    def trace_count(self) -> int:
        return self.opt.trace_count


class MlxOnModel(_OnModel):
    """``mlx.optimizers.Adagrad``, its update compiled or eager."""

    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray], size: tuple[int, int],
                 compiled: bool):  # fmt: skip
        super().__init__(params, grads, size)
        self.opt = mlx.optimizers.Adagrad(learning_rate=LR, eps=EPS)
        self.opt.init(self.model.trainable_parameters())
        self.state = [self.model.state, self.opt.state]

        def update(grads: dict) -> None:
            self.opt.update(self.model, grads)

        if compiled:
            update = partial(mx.compile, inputs=self.state, outputs=self.state)(update)
        self._update = update

    def step(self, lr: float) -> None:
        self.opt.learning_rate = lr  # an array in the state: no retrace
        self._update(self.grads)
        mx.eval(self.state)


#: ``(name, factory of (params, grads, size))`` in table order; lucid first
IMPLEMENTATIONS = [
    ("lucid.optim.Adagrad", LucidOnModel),
    ("mlx.optimizers.Adagrad compiled", partial(MlxOnModel, compiled=True)),
    ("mlx.optimizers.Adagrad", partial(MlxOnModel, compiled=False)),
]


def _adagrad64(params: list[np.ndarray], grads: list[np.ndarray], steps: int) -> list[np.ndarray]:
    out = []
    for p, g in zip(params, grads, strict=True):
        theta, g = p.astype(np.float64), g.astype(np.float64)
        G = np.zeros_like(theta)
        for t in range(steps):
            G += g * g
            theta -= lr_at(t) * g / (np.sqrt(G) + EPS)
        out.append(theta)
    return out


def section_mlx_models(s: Settings) -> Section:
    size = model_size(s)
    template = Blocks(*size)
    shapes = [tuple(a.shape) for _, a in tree_flatten(template.trainable_parameters())]
    elements = sum(int(np.prod(sh)) for sh in shapes)
    rng = np.random.default_rng(s.seed)
    start = [rng.standard_normal(sh, dtype=np.float32) for sh in shapes]
    grads = [rng.standard_normal(sh, dtype=np.float32) for sh in shapes]
    factories: list[tuple[str, Factory]] = [(n, partial(f, size=size)) for n, f in IMPLEMENTATIONS]
    results = measure(
        factories,
        start,
        grads,
        s,
        want=_adagrad64(start, grads, s.warmup),
        check_after="warmup",
        budget_s=s.budget_s,
        rtol=RTOL,
        atol=ATOL,
    )

    names = [n for n, _ in IMPLEMENTATIONS]
    lucid_r = results[names[0]]
    table = Table(["implementation", "ms/step", "lucid speed-up", "first step ms", "parity"])
    for name in names:
        r = results[name]
        if "error" in r:
            table.rows.append([name, "n/a", "n/a", "n/a", f"FAIL: {r['error'][:80]}"])
            continue
        same = name == names[0] or "ms" not in lucid_r
        ratio = "—" if same else f"{r['ms'] / lucid_r['ms']:.2f}x"
        parity = "ok" if r["parity"] else f"FAIL: {r['worst']:.1f}x tolerance"
        table.rows.append([name, fmt_ms(r["ms"]), ratio, fmt_ms(r["first_ms"]), parity])
    parity_ok = all("error" not in r and r["parity"] for r in results.values())
    traces = lucid_r.get("traces", (None, None))
    retraced = traces[0] != traces[1]
    compiled = results[names[1]]
    ratio = compiled["ms"] / lucid_r["ms"] if "ms" in compiled and "ms" in lucid_r else None
    notes = [
        f"Model: {size[0]} blocks of LayerNorm({size[1]}) + Linear({size[1]}, {size[1]}), "
        f"{len(shapes)} parameter arrays, {elements:,} elements; Adagrad, lr = {LR}/(1 + "
        f"0.01 i), eps {EPS}; fixed gradients. Median of {lucid_r.get('steps', 0)} timed steps "
        f"after {s.warmup} warm-up steps.",
        "MLX compiled / lucid: " + (f"{ratio:.2f}x (above 1: lucid is faster)" if ratio else "n/a"),
        f"lucid traced its step {traces[1]} time(s), "
        + (
            "and again during the timed steps (RETRACED)"
            if retraced
            else "none during the timed steps"
        ),
        f"Parity: after the {s.warmup} warm-up steps, against float64 NumPy (rtol {RTOL}, "
        f"atol {ATOL}).",
        "parity ok" if parity_ok else "PARITY FAILED (see the table)",
    ]
    return Section(
        key="mlx_models",
        title="mlx_models: the optimizer update of an mlx.nn model with many small arrays",
        tables=[table],
        notes=notes,
        data={
            "results": results,
            "arrays": len(shapes),
            "elements": elements,
            "ratio": ratio,
            "retraced": retraced,
        },  # fmt: skip
        parity_ok=parity_ok and not retraced,
    )

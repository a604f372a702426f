"""Section compile: one whole training step as one compiled call (``lucid.compile``).

Four implementations of the same step (zero_grad, forward, cross-entropy, backward,
Adagrad, read the loss), from the same weights, on the same fixed batch, with ``lr``
changing every step (``lr_at``):

- lucid eager: the step as a PyTorch user writes it, op by op;
- lucid compiled: the same function under ``lucid.compile(fn, state=[model, optimizer])``;
- MLX-native compiled: ``mlx.nn`` and ``mlx.optimizers.Adagrad``, the whole step under
  ``mx.compile`` with ``inputs=outputs=[model.state, optimizer.state, mx.random.state]``,
  as MLX's docs show;
- torch on the CPU (``torch.optim.Adagrad``, default code path).

Two models: the small-op model of issue 14, Linear(32, 32), 8 x [LayerNorm(32),
Linear(32, 32), GELU], Linear(32, 10) at batch 16, where dispatching ~100 small ops per
step through Python dominates; and the digits MLP of ``examples/train_digits.py``,
64-128-10 with ReLU at batch 32.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import mlx.core as mx
import mlx.nn
import mlx.optimizers
import numpy as np
import torch

import lucid
from benchmarks.common import (
    EPS,
    Section,
    Settings,
    Table,
    fmt_ms,
    interleaved_blocks,
    lr_at,
    median_ms,
    time_calls,
)
from benchmarks.peers import mlx_compiled_step

__all__ = ["section_compile", "MODELS"]

# lucid compiled runs the same rule on the same arrays as lucid eager, but fused into
# other kernels: a few ulps per step. The peers sum in other orders and Adagrad's first
# step moves each weight by ±lr whatever its gradient's size (see training_step.py), so
# they are compared loosely.
COMPILED_RTOL, PEER_RTOL, ATOL = 1e-4, 2e-2, 1e-4

# (kind, size): "linear" (fan_in, fan_out), "norm" width, "gelu", "relu"
Layers = list[tuple[str, tuple[int, ...]]]


def small_op_layers() -> Layers:
    layers: Layers = [("linear", (32, 32))]
    for _ in range(8):
        layers += [("norm", (32,)), ("linear", (32, 32)), ("gelu", ())]
    return layers + [("linear", (32, 10))]


def digits_layers() -> Layers:
    return [("linear", (64, 128)), ("relu", ()), ("linear", (128, 10))]


#: name -> (layers, batch size)
MODELS: dict[str, tuple[Callable[[], Layers], int]] = {
    "small-op (issue 14)": (small_op_layers, 16),
    "digits MLP 64-128-10": (digits_layers, 32),
}


def _weights(layers: Layers, rng: np.random.Generator) -> list[tuple[np.ndarray, ...]]:
    """torch-default-like uniform init for each Linear, drawn once for every framework."""
    out = []
    for kind, size in layers:
        if kind == "linear":
            k = 1 / np.sqrt(size[0])
            w = rng.uniform(-k, k, (size[1], size[0])).astype(np.float32)
            out.append((w, rng.uniform(-k, k, size[1]).astype(np.float32)))
    return out


def _other(kind: str, size: tuple[int, ...], norm: type, gelu: type, relu: type) -> object:
    """A layer that is not a Linear, from one framework's classes (LayerNorm's eps is
    1e-5 and GELU is exact in all three)."""
    if kind == "norm":
        return norm(size[0], eps=1e-5)
    return gelu() if kind == "gelu" else relu()


# ------------------------------------------------------------------------------ lucid
def _lucid_model(layers: Layers, weights: list[tuple[np.ndarray, ...]]) -> lucid.nn.Module:
    nn, it, mods = lucid.nn, iter(weights), []
    for kind, size in layers:
        if kind == "linear":
            lin = nn.Linear(*size)
            w, b = next(it)
            lin.weight.data, lin.bias.data = mx.array(w), mx.array(b)
            mods.append(lin)
        else:
            mods.append(_other(kind, size, nn.LayerNorm, nn.GELU, nn.ReLU))
    model = nn.Sequential(*mods)
    mx.eval([p.data for p in model.parameters()])
    return model


class LucidStep:
    """The step as a PyTorch user writes it; ``compiled`` wraps it in ``lucid.compile``."""

    def __init__(self, layers: Layers, weights: list, compiled: bool) -> None:
        self.name = "lucid compiled (lucid.compile)" if compiled else "lucid eager"
        self.model = _lucid_model(layers, weights)
        self.opt = lucid.optim.Adagrad(self.model.parameters(), lr=lr_at(0), eps=EPS)
        loss_fn = lucid.nn.CrossEntropyLoss()

        def step(x: lucid.Tensor, y: lucid.Tensor) -> lucid.Tensor:
            self.opt.zero_grad()
            loss = loss_fn(self.model(x), y)
            loss.backward()
            self.opt.step()
            return loss

        self.fn = lucid.compile(step, state=[self.model, self.opt]) if compiled else step

    def step(self, i: int, x: lucid.Tensor, y: lucid.Tensor) -> float:
        self.opt.param_groups[0]["lr"] = lr_at(i)
        return self.fn(x, y).item()


# -------------------------------------------------------------------------------- MLX
class MlxStep:
    """mlx.nn + mlx.optimizers.Adagrad, the whole step one ``mx.compile`` d function with
    the model's, the optimizer's and the random state as its inputs and outputs."""

    name = "MLX-native compiled (mlx.nn + Adagrad)"

    def __init__(self, layers: Layers, weights: list) -> None:
        it, mods = iter(weights), []
        for kind, size in layers:
            if kind == "linear":
                lin = mlx.nn.Linear(*size)
                w, b = next(it)
                lin.weight, lin.bias = mx.array(w), mx.array(b)
                mods.append(lin)
            else:
                mods.append(_other(kind, size, mlx.nn.LayerNorm, mlx.nn.GELU, mlx.nn.ReLU))
        self.model = mlx.nn.Sequential(*mods)
        self.opt = mlx.optimizers.Adagrad(learning_rate=lr_at(0), eps=EPS)
        self.opt.init(self.model.trainable_parameters())
        state = [self.model.state, self.opt.state, mx.random.state]
        mx.eval(state[:2])
        self._step, self._state = mlx_compiled_step(self.model, self.opt, state), state

    def step(self, i: int, x: mx.array, y: mx.array) -> float:
        self.opt.learning_rate = lr_at(i)  # an array in its state: no retrace
        loss = self._step(x, y)
        mx.eval(loss, self._state[:2])
        return loss.item()


# ------------------------------------------------------------------------------ torch
class TorchStep:
    name = "torch CPU (torch.optim.Adagrad)"

    def __init__(self, layers: Layers, weights: list) -> None:
        nn, it, mods = torch.nn, iter(weights), []
        for kind, size in layers:
            if kind == "linear":
                lin = nn.Linear(*size)
                w, b = next(it)
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(w))
                    lin.bias.copy_(torch.from_numpy(b))
                mods.append(lin)
            else:
                mods.append(_other(kind, size, nn.LayerNorm, nn.GELU, nn.ReLU))
        self.model = nn.Sequential(*mods)
        self.opt = torch.optim.Adagrad(self.model.parameters(), lr=lr_at(0), eps=EPS)

    def step(self, i: int, x: torch.Tensor, y: torch.Tensor) -> float:
        self.opt.param_groups[0]["lr"] = lr_at(i)
        self.opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss.item()


# ---------------------------------------------------------------------------- section
def _measure(layers: Layers, batch: int, s: Settings) -> tuple[dict[str, dict], object]:
    rng = np.random.default_rng(s.seed)
    weights = _weights(layers, rng)
    features, classes = layers[0][1][0], layers[-1][1][1]
    x = rng.standard_normal((batch, features)).astype(np.float32)
    y = rng.integers(0, classes, batch).astype(np.int32)
    lucid_xy = (lucid.tensor(x), lucid.tensor(y))
    impls = [
        (LucidStep(layers, weights, compiled=False), lucid_xy),
        (LucidStep(layers, weights, compiled=True), lucid_xy),
        (MlxStep(layers, weights), (mx.array(x), mx.array(y))),
        (TorchStep(layers, weights), (torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))),
    ]
    results: dict[str, dict] = {}
    steppers = {}
    for impl, (xb, yb) in impls:
        losses: list[float] = []

        def step(i: int, impl=impl, xb=xb, yb=yb, losses=losses) -> None:
            losses.append(impl.step(i, xb, yb))

        t0 = time.perf_counter()
        step(0)
        first_ms = 1e3 * (time.perf_counter() - t0)
        for i in range(1, s.warmup):
            step(i)
        results[impl.name] = {"first_ms": first_ms, "losses": losses, "times": []}
        steppers[impl.name] = step
    # the timed steps go round-robin in blocks, so that load from other processes hits
    # every implementation alike (as in training_step.py)
    for first, count in interleaved_blocks(s):
        for name, step in steppers.items():
            results[name]["times"] += time_calls(step, first, count)
    for r in results.values():
        r["ms"] = median_ms(r["times"])
    compiled = impls[1][0]
    results[compiled.name]["traces"] = compiled.fn.trace_count
    return results, compiled


def section_compile(s: Settings) -> Section:
    tables, notes, data, parity_ok = [], [], {}, True
    eager_name, compiled_name = "lucid eager", "lucid compiled (lucid.compile)"
    for title, (make_layers, batch) in MODELS.items():
        results, _ = _measure(make_layers(), batch, s)
        ref = np.array(results[eager_name]["losses"])
        table = Table(["implementation", "ms/step (median)", "vs lucid compiled",
                       "first step ms", "loss parity vs lucid eager"])  # fmt: skip
        base = results[compiled_name]["ms"]
        for name, r in results.items():
            rtol = COMPILED_RTOL if name == compiled_name else PEER_RTOL
            diff = np.abs(np.array(r["losses"]) - ref) / (ATOL + rtol * np.abs(ref))
            worst = float(diff.max())
            ok = worst <= 1.0
            parity_ok &= ok
            parity = "—" if name == eager_name else ("ok" if ok else "FAIL")
            if name != eager_name:
                parity += f" ({worst:.2g} x tolerance, rtol {rtol:g})"
            table.rows.append([name, fmt_ms(r["ms"]), f"{r['ms'] / base:.2f}x",
                               fmt_ms(r["first_ms"]), parity])  # fmt: skip
        tables.append(table)
        mlx_ms = results[MlxStep.name]["ms"]
        traces = results[compiled_name]["traces"]
        notes.append(
            f"{title}, batch {batch}: lucid compiled / MLX-native compiled = "
            f"{base / mlx_ms:.2f} (target <= 1.15 on the small-op model); lucid eager / "
            f"lucid compiled = {results[eager_name]['ms'] / base:.2f} (target > 1); "
            f"lucid.compile traced {traces} time(s) over {len(ref)} steps with lr changing "
            "every step."
        )
        data[title] = results
    notes.append(
        f"Adagrad eps={EPS}, lr = lr_at(i) (changes every step); one fixed batch; every step "
        f"reads the loss as a Python float. Median of {s.steps} timed steps after "
        f"{s.warmup} warm-up steps, the implementations taking turns in blocks."
    )
    notes.append("parity ok" if parity_ok else "PARITY FAILED (loss curves differ, see table)")
    return Section(
        key="compile",
        title="compile: the whole training step as one compiled call",
        tables=tables,
        notes=notes,
        parity_ok=parity_ok,
        data=data,
    )

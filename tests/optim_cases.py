"""Shared fixtures for the optimizer tests: a small model, gradient streams, references.

Everything here is plain data or a pure function, so each test file builds exactly the
run it needs. The model is a 2-layer MLP written directly with ``nn.Parameter`` and
lucid ops (and, for the parity tests, the same MLP in PyTorch) so the optimizer tests
depend only on Tensor, Parameter and the optimizer itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np

import lucid
from lucid.nn import Parameter
from lucid.optim import Adagrad

# The MLP: x (16, 4) -> tanh(x @ W1 + b1) (16, 8) -> @ W2 + b2 (16, 2)
SHAPES = [(4, 8), (8,), (8, 2), (2,)]
BATCH = 16


def initial_weights(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.5 * rng.standard_normal(s)).astype(np.float32) for s in SHAPES]


def batches(steps: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """A fresh batch per step, so the gradients keep changing."""
    rng = np.random.default_rng(seed)
    return [
        (
            rng.standard_normal((BATCH, SHAPES[0][0])).astype(np.float32),
            rng.standard_normal((BATCH, SHAPES[2][1])).astype(np.float32),
        )
        for _ in range(steps)
    ]


def lucid_loss(params: list[Any], x: np.ndarray, y: np.ndarray) -> lucid.Tensor:
    w1, b1, w2, b2 = params
    out = lucid.tanh(lucid.tensor(x) @ w1 + b1) @ w2 + b2
    return ((out - lucid.tensor(y)) ** 2).mean()


def grad_stream(shapes: list[tuple[int, ...]], steps: int, seed: int = 2) -> list[list[np.ndarray]]:
    """Random float32 gradients per step and parameter, independent of the parameters."""
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(steps)]


# ---------------------------------------------------------------------------- the reference


def numpy_adagrad(
    params: list[np.ndarray],
    grads: list[list[np.ndarray | None]],
    *,
    lr: float = 1e-2,
    eps: float = 1e-10,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    lr_decay: float = 0.0,
    maximize: bool = False,
    decoupled_weight_decay: bool = True,
) -> list[list[np.ndarray]]:
    """The rule of the issue, transcribed in float64; returns the parameters after each step.

    A ``None`` gradient skips that parameter for that step (its count does not advance).
    """
    theta = [p.astype(np.float64) for p in params]
    G = [np.full(p.shape, initial_accumulator_value, dtype=np.float64) for p in params]
    t = [0] * len(params)
    history = []
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            if g is None:
                continue
            t[i] += 1
            g = g.astype(np.float64)
            if maximize:
                g = -g
            lr_t = lr / (1 + (t[i] - 1) * lr_decay)
            if weight_decay != 0 and decoupled_weight_decay:
                theta[i] = theta[i] * (1 - lr_t * weight_decay)
            if weight_decay != 0 and not decoupled_weight_decay:
                g = g + weight_decay * theta[i]
            G[i] = G[i] + g * g
            theta[i] = theta[i] - lr_t * g / (np.sqrt(G[i]) + eps)
        history.append([p.copy() for p in theta])
    return history


# ---------------------------------------------------------------------------- runs


def make_params(values: list[np.ndarray], dtype: mx.Dtype | None = None) -> list[Parameter]:
    return [Parameter(mx.array(v) if dtype is None else mx.array(v).astype(dtype)) for v in values]


def set_grads(params: list[Parameter], grads: list[np.ndarray | None]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else lucid.Tensor(mx.array(g).astype(p.dtype))


def run_stream(
    opt: lucid.optim.Optimizer, params: list[Parameter], grads: list[list[np.ndarray | None]]
) -> None:
    for step_grads in grads:
        set_grads(params, step_grads)
        opt.step()


def values(params: list[Parameter]) -> list[np.ndarray]:
    return [np.array(p.data.astype(mx.float32)) for p in params]


def snapshot(opt: lucid.optim.Optimizer, same_params: bool = True) -> dict[str, Any]:
    """Everything observable about an optimizer: parameters, all state, all hyperparameters.

    With ``same_params=False`` the parameter objects themselves are not recorded, so two
    optimizers over different but equal parameters compare equal.
    """
    params = [p for g in opt.param_groups for p in g["params"]]
    return {
        "params": [(p.dtype, np.array(p.data.astype(mx.float32))) for p in params],
        "state": [
            {k: (v.dtype, np.array(v.astype(mx.float32))) for k, v in opt.state[p].items()}
            for p in params
        ],
        "groups": [
            (
                {k: v for k, v in g.items() if k != "params"},
                [id(p) if same_params else i for i, p in enumerate(g["params"])],
            )
            for g in opt.param_groups
        ],
        "defaults": dict(opt.defaults),
    }


def assert_same_snapshot(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["groups"] == b["groups"]
    assert a["defaults"] == b["defaults"]
    for (da, va), (db, vb) in zip(a["params"], b["params"], strict=True):
        assert da == db
        np.testing.assert_array_equal(va, vb)
    for sa, sb in zip(a["state"], b["state"], strict=True):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert sa[k][0] == sb[k][0], k
            np.testing.assert_array_equal(sa[k][1], sb[k][1], err_msg=k)


@dataclass(frozen=True)
class Scenario:
    """How a training run drives the optimizer; the same schedule runs in lucid and torch."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    group_lrs: tuple[float, float] | None = None  # layer 1 and layer 2 in their own groups
    lr_schedule: Callable[[int], float] | None = None  # lr of every group at step t
    skip_every: int = 0  # b2 gets no gradient on steps t % skip_every == 0
    late_group: bool = False  # layer 2 joins the optimizer after 5 steps


def param_arg(params: list[Any], sc: Scenario) -> list[Any]:
    if sc.group_lrs is not None:
        return [
            {"params": params[:2], "lr": sc.group_lrs[0]},
            {"params": params[2:], "lr": sc.group_lrs[1]},
        ]
    return list(params[:2]) if sc.late_group else list(params)


def train(
    sc: Scenario,
    steps: int,
    new_param: Callable[[np.ndarray], Any],
    new_opt: Callable[..., Any],
    loss_fn: Callable[[list[Any], np.ndarray, np.ndarray], Any],
    to_numpy: Callable[[Any], np.ndarray],
) -> list[list[np.ndarray]]:
    """Run the scenario with one framework's pieces; return all parameters after each step."""
    params = [new_param(w) for w in initial_weights()]
    opt = new_opt(param_arg(params, sc), **sc.kwargs)
    history = []
    for t, (x, y) in enumerate(batches(steps), start=1):
        if sc.late_group and t == 6:
            opt.add_param_group({"params": params[2:]})
        if sc.lr_schedule is not None:
            for g in opt.param_groups:
                g["lr"] = sc.lr_schedule(t)
        opt.zero_grad()
        loss_fn(params, x, y).backward()
        if sc.skip_every and t % sc.skip_every == 0:
            params[3].grad = None
        opt.step()
        history.append([to_numpy(p) for p in params])
    return history


def train_lucid(sc: Scenario, steps: int, **extra: Any) -> list[list[np.ndarray]]:
    return train(
        sc,
        steps,
        new_param=lambda w: Parameter(mx.array(w)),
        new_opt=lambda params, **kw: Adagrad(params, **kw, **extra),
        loss_fn=lucid_loss,
        to_numpy=lambda p: np.array(p.data),
    )

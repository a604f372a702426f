"""lucid.optim.lr_scheduler against torch.optim.lr_scheduler (torch 2.13).

One registry of scheduler configurations (each built by the same code on either
framework's module and optimizer) feeds every table: the lr (and momentum or beta1)
sequence over 100 steps equals torch's in float64, with two parameter groups of
different rates; a state dict carried to a fresh scheduler on a fresh optimizer (also
through lucid.save / lucid.load, in torch's checkpoint order) continues the same
sequence; resuming with ``last_epoch`` matches torch's resume. Then ReduceLROnPlateau on
metrics that plateau, improve and plateau again; the compiled step never retraces
while the rates change every step; and bad arguments.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
import torch
import torch.optim.lr_scheduler as torch_sched

import lucid
import lucid.optim as optim
import lucid.optim.lr_scheduler as lucid_sched
from lucid.nn import Parameter

STEPS = 100
LRS = (0.1, 0.05)  # the two groups' rates

# (optimizer, build): the optimizer is "sgd" (SGD with momentum, for momentum cycling) or
# "adam" (betas cycling); build(module, optimizer) makes the scheduler with either
# framework's lr_scheduler module
Build = Callable[[Any, Any], Any]
CASES: dict[str, tuple[str, Build]] = {
    "LambdaLR-one": ("sgd", lambda m, o: m.LambdaLR(o, lambda e: 0.95**e)),
    "LambdaLR-per-group": (
        "sgd",
        lambda m, o: m.LambdaLR(o, [lambda e: 1 / (1 + e), lambda e: 1 + math.sin(e)]),
    ),
    "MultiplicativeLR-one": ("sgd", lambda m, o: m.MultiplicativeLR(o, lambda e: 0.97)),
    "MultiplicativeLR-per-group": (
        "sgd",
        lambda m, o: m.MultiplicativeLR(o, [lambda e: 0.5 if e % 10 == 0 else 1.0, lambda e: 0.99]),
    ),
    "StepLR-7": ("sgd", lambda m, o: m.StepLR(o, step_size=7, gamma=0.5)),
    "StepLR-30": ("sgd", lambda m, o: m.StepLR(o, 30)),
    "MultiStepLR-repeated": (
        "sgd",
        lambda m, o: m.MultiStepLR(o, milestones=[5, 5, 30, 60], gamma=0.3),
    ),
    "MultiStepLR-default": ("sgd", lambda m, o: m.MultiStepLR(o, [10, 50])),
    "ConstantLR-quarter": ("sgd", lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=10)),
    "ConstantLR-default": ("sgd", lambda m, o: m.ConstantLR(o)),
    "LinearLR-up": ("sgd", lambda m, o: m.LinearLR(o, 0.1, 0.9, total_iters=20)),
    "LinearLR-down": ("sgd", lambda m, o: m.LinearLR(o, 1.0, 0.0, total_iters=50)),
    "LinearLR-default": ("sgd", lambda m, o: m.LinearLR(o)),
    "ExponentialLR-0.97": ("sgd", lambda m, o: m.ExponentialLR(o, gamma=0.97)),
    "ExponentialLR-0.9": ("sgd", lambda m, o: m.ExponentialLR(o, 0.9)),
    "PolynomialLR-square": ("sgd", lambda m, o: m.PolynomialLR(o, total_iters=40, power=2.0)),
    "PolynomialLR-sqrt": ("sgd", lambda m, o: m.PolynomialLR(o, total_iters=100, power=0.5)),
    "PolynomialLR-default": ("sgd", lambda m, o: m.PolynomialLR(o)),
    # T_max=30 over 100 steps: down, up again (the recursion's bottom case), down
    "CosineAnnealingLR-30": ("sgd", lambda m, o: m.CosineAnnealingLR(o, T_max=30, eta_min=1e-3)),
    "CosineAnnealingLR-100": ("sgd", lambda m, o: m.CosineAnnealingLR(o, 100)),
    "WarmRestarts-mult2": (
        "sgd",
        lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=2e-3),
    ),
    "WarmRestarts-7": ("sgd", lambda m, o: m.CosineAnnealingWarmRestarts(o, 7)),
    "CyclicLR-triangular": (
        "sgd",
        lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=7),
    ),
    "CyclicLR-triangular2-groups": (
        "sgd",
        lambda m, o: m.CyclicLR(
            o,
            [0.01, 0.02],
            [0.1, 0.3],
            7,
            step_size_down=13,
            mode="triangular2",
            base_momentum=[0.8, 0.7],
            max_momentum=0.95,
        ),  # fmt: skip
    ),
    "CyclicLR-exp_range-betas": (
        "adam",
        lambda m, o: m.CyclicLR(o, 1e-3, 1e-2, 9, mode="exp_range", gamma=0.99),
    ),
    "CyclicLR-scale_fn": (
        "sgd",
        lambda m, o: m.CyclicLR(
            o,
            0.01,
            0.1,
            5,
            scale_fn=lambda x: 1 / (1 + 0.01 * x),
            scale_mode="iterations",
            cycle_momentum=False,
        ),  # fmt: skip
    ),
    "OneCycleLR-groups": ("sgd", lambda m, o: m.OneCycleLR(o, max_lr=[0.2, 0.1], total_steps=100)),
    "OneCycleLR-three-phase-betas": (
        "adam",
        lambda m, o: m.OneCycleLR(
            o, 0.01, total_steps=100, three_phase=True, anneal_strategy="linear"
        ),
    ),
    "OneCycleLR-epochs": (
        "sgd",
        lambda m, o: m.OneCycleLR(
            o,
            0.3,
            epochs=10,
            steps_per_epoch=11,
            pct_start=0.25,
            cycle_momentum=False,
            div_factor=10.0,
            final_div_factor=100.0,
        ),  # fmt: skip
    ),
    "SequentialLR-warmup-cosine": (
        "sgd",
        lambda m, o: m.SequentialLR(
            o, [m.LinearLR(o, 0.01, total_iters=10), m.CosineAnnealingLR(o, T_max=90)], [10]
        ),
    ),
    "SequentialLR-three": (
        "sgd",
        lambda m, o: m.SequentialLR(
            o,
            [
                m.ConstantLR(o, 0.1, total_iters=5),
                m.ExponentialLR(o, 0.9),
                m.CosineAnnealingLR(o, T_max=40, eta_min=1e-4),
            ],
            milestones=[5, 20],
        ),  # fmt: skip
    ),
    "ChainedScheduler-warmup-cosine": (
        "sgd",
        lambda m, o: m.ChainedScheduler(
            [m.LinearLR(o, 0.01, total_iters=10), m.CosineAnnealingLR(o, T_max=100)]
        ),
    ),
    "ChainedScheduler-constant-exponential": (
        "sgd",
        lambda m, o: m.ChainedScheduler(
            [m.ConstantLR(o, 0.1, total_iters=20), m.ExponentialLR(o, 0.95)], optimizer=o
        ),
    ),
}
# resuming with last_epoch: schedulers whose constructor takes it (and only its own state)
RESUMABLE = [
    k for k in CASES if not k.startswith(("SequentialLR", "ChainedScheduler", "LambdaLR-per"))
]


def _optimizers(kind: str) -> tuple[optim.Optimizer, torch.optim.Optimizer]:
    """The same two parameter groups (rates LRS) in a lucid and a torch optimizer."""
    ours = [Parameter(mx.zeros((3,))), Parameter(mx.zeros((2,)))]
    theirs = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    if kind == "sgd":
        make, extra = "SGD", {"momentum": 0.9}
    else:
        make, extra = "Adam", {"betas": (0.9, 0.999)}

    def groups(ps: list) -> list[dict]:
        return [{"params": [ps[0]], "lr": LRS[0]}, {"params": [ps[1]], "lr": LRS[1]}]

    lucid_opt = getattr(optim, make)(groups(ours), **extra)
    torch_opt = getattr(torch.optim, make)(groups(theirs), **extra)
    return lucid_opt, torch_opt


def _record(opt: Any, sched: Any) -> list[float]:
    """What a step leaves: get_last_lr(), each group's lr, momentum or beta1, last_epoch."""
    row = [*sched.get_last_lr(), float(getattr(sched, "last_epoch", 0))]
    for g in opt.param_groups:
        row += [g["lr"], g["momentum"] if "momentum" in g else g["betas"][0]]
    return row


def _run(opt: Any, sched: Any, steps: int, torch_opt: bool = False) -> list[list[float]]:
    rows = []
    for _ in range(steps):
        rows.append(_record(opt, sched))
        if torch_opt:
            opt.step()  # no grads: changes nothing, but keeps torch from warning
        sched.step()
    rows.append(_record(opt, sched))
    return rows


def _assert_same(ours: list[list[float]], theirs: list[list[float]]) -> None:
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("case", CASES)
def test_sequence_equals_torch(case: str) -> None:
    kind, build = CASES[case]
    lucid_opt, torch_opt = _optimizers(kind)
    ours = _run(lucid_opt, build(lucid_sched, lucid_opt), STEPS)
    theirs = _run(torch_opt, build(torch_sched, torch_opt), STEPS, torch_opt=True)
    _assert_same(ours, theirs)
    # the scheduler keys torch writes into the groups are written here too, with its values
    for mine, ref in zip(lucid_opt.param_groups, torch_opt.param_groups, strict=True):
        keys = set(ref) - {"params", "foreach", "fused", "differentiable", "capturable"}
        assert keys - set(mine) == set()
        for k in ("initial_lr", "max_lr", "min_lr", "base_momentum", "max_momentum"):
            assert mine.get(k) == ref.get(k), k


@pytest.mark.parametrize("via", ["state_dict", "lucid.save"])
@pytest.mark.parametrize("case", CASES)
def test_state_dict_continues_on_fresh_objects(case: str, via: str, tmp_path: Path) -> None:
    """torch's checkpoint procedure: save the optimizer's and the scheduler's state
    dicts; build a fresh optimizer and scheduler, load the optimizer's, then the
    scheduler's; the rest of the sequence is the uninterrupted one's."""
    kind, build = CASES[case]
    opt, _ = _optimizers(kind)
    sched = build(lucid_sched, opt)
    whole = _run(opt, sched, STEPS)

    opt, _ = _optimizers(kind)
    sched = build(lucid_sched, opt)
    half = 37
    head = _run(opt, sched, half)
    checkpoint = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    if via == "lucid.save":
        lucid.save(checkpoint, tmp_path / "ckpt")
        checkpoint = lucid.load(tmp_path / "ckpt")
        assert checkpoint["scheduler"] == sched.state_dict()  # every value survives the file
    sched.step()  # later steps of the original reach no saved state
    fresh_opt, _ = _optimizers(kind)
    fresh = build(lucid_sched, fresh_opt)
    fresh_opt.load_state_dict(checkpoint["optimizer"])
    fresh.load_state_dict(checkpoint["scheduler"])
    tail = _run(fresh_opt, fresh, STEPS - half)
    _assert_same(head[:-1] + tail, whole)


@pytest.mark.parametrize("case", RESUMABLE)
def test_resume_with_last_epoch_equals_torch(case: str) -> None:
    """A fresh optimizer loaded from a state dict (it carries initial_lr and the cycle
    keys), then a scheduler built with ``last_epoch=k``: the same rates as torch's."""
    kind, build = CASES[case]
    k = 37
    runs = []
    for module, index in ((lucid_sched, 0), (torch_sched, 1)):
        opt = _optimizers(kind)[index]
        sched = build(module, opt)
        _run(opt, sched, k, torch_opt=index == 1)
        fresh = _optimizers(kind)[index]
        fresh.load_state_dict(opt.state_dict())
        resumed = build(_WithLastEpoch(module, k), fresh)
        runs.append(_run(fresh, resumed, 30, torch_opt=index == 1))
    _assert_same(*runs)


class _WithLastEpoch:
    """A module proxy whose scheduler classes get ``last_epoch=k``."""

    def __init__(self, module: Any, k: int) -> None:
        self.module, self.k = module, k

    def __getattr__(self, name: str) -> Any:
        cls = getattr(self.module, name)
        return lambda *args, **kwargs: cls(*args, **kwargs, last_epoch=self.k)


def test_resume_without_initial_lr_raises_key_error() -> None:
    opt, _ = _optimizers("sgd")
    with pytest.raises(KeyError, match="initial_lr"):
        lucid_sched.StepLR(opt, 5, last_epoch=3)


def test_one_cycle_past_total_steps_raises() -> None:
    opt, _ = _optimizers("sgd")
    sched = lucid_sched.OneCycleLR(opt, 0.1, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="total_steps is 3"):
        sched.step()


# ---------------------------------------------------------------------------- Noam


@pytest.mark.parametrize(
    ("model_size", "warmup", "factor"), [(512, 10, 1.0), (64, 40, 2.0), (1, 1, 0.5)]
)
def test_noam_equals_its_formula(model_size: int, warmup: int, factor: float) -> None:
    opt, _ = _optimizers("sgd")
    sched = lucid_sched.NoamScheduler(opt, model_size, warmup, factor=factor)
    got = np.array(_run(opt, sched, STEPS))[:, :2]
    s = np.maximum(np.arange(STEPS + 1, dtype=np.float64), 1.0)
    want = factor * model_size**-0.5 * np.minimum(s**-0.5, s * float(warmup) ** -1.5)
    np.testing.assert_allclose(got, np.stack([want, want], axis=1), rtol=1e-14)
    # peak at the end of the warm-up
    assert got[warmup, 0] == got[:, 0].max()


# ---------------------------------------------------------------------------- plateaus

# plateau, improve, plateau, tiny improvements (below a relative threshold), improve again
_METRIC = (
    [1.0] * 6 + list(np.linspace(0.9, 0.4, 8)) + [0.4] * 15
    + [0.4 - 1e-6 * i for i in range(1, 9)] + [0.3, 0.2] + [0.2] * 20
)  # fmt: skip
PLATEAU_CASES = {
    "min-rel": ({"mode": "min", "patience": 2}, 1),
    "min-abs-cooldown": (
        {
            "mode": "min",
            "threshold": 0.05,
            "threshold_mode": "abs",
            "cooldown": 3,
            "factor": 0.5,
            "patience": 1,
        },
        1,
    ),  # fmt: skip
    "max-rel-min_lr-groups": (
        {"mode": "max", "factor": 0.5, "patience": 0, "min_lr": [0.01, 0.001]},
        -1,
    ),
    "max-abs-min_lr-eps": (
        {
            "mode": "max",
            "threshold": 1e-3,
            "threshold_mode": "abs",
            "factor": 0.3,
            "patience": 3,
            "cooldown": 2,
            "min_lr": 0.004,
            "eps": 1e-3,
        },
        -1,
    ),  # fmt: skip
}


def _metrics(sign: int) -> list[float]:
    """The metric for mode "min" (sign 1), or mirrored for "max" (sign -1), kept
    positive: torch's relative threshold scales ``best``, so a negative metric that
    stays equal would count as an improvement in mode "max"."""
    return [v if sign == 1 else 2.0 - v for v in _METRIC]


def _plateau_run(opt: Any, sched: Any, metrics: list[float]) -> list[list[float]]:
    rows = []
    for value in metrics:
        sched.step(value)
        best = sched.best if math.isfinite(sched.best) else 0.0
        extra = [best, sched.num_bad_epochs, sched.cooldown_counter, sched.last_epoch]
        rows.append([*sched.get_last_lr(), *(g["lr"] for g in opt.param_groups), *extra])
    return rows


@pytest.mark.parametrize("case", PLATEAU_CASES)
def test_reduce_on_plateau_equals_torch(case: str) -> None:
    kwargs, sign = PLATEAU_CASES[case]
    metrics = _metrics(sign)
    lucid_opt, torch_opt = _optimizers("sgd")
    ours = _plateau_run(lucid_opt, lucid_sched.ReduceLROnPlateau(lucid_opt, **kwargs), metrics)
    theirs = _plateau_run(torch_opt, torch_sched.ReduceLROnPlateau(torch_opt, **kwargs), metrics)
    _assert_same(ours, theirs)
    lrs = np.array(ours)[:, 0]
    assert lrs[-1] < lrs[0]  # the metric plateaued: the rate went down


@pytest.mark.parametrize("at", [0, 20])
@pytest.mark.parametrize("case", PLATEAU_CASES)
def test_reduce_on_plateau_resumes_through_a_checkpoint(case: str, at: int, tmp_path: Path):
    kwargs, sign = PLATEAU_CASES[case]
    metrics = _metrics(sign)
    opt, _ = _optimizers("sgd")
    whole = _plateau_run(opt, lucid_sched.ReduceLROnPlateau(opt, **kwargs), metrics)
    opt, _ = _optimizers("sgd")
    sched = lucid_sched.ReduceLROnPlateau(opt, **kwargs)
    head = _plateau_run(opt, sched, metrics[:at])
    lucid.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp_path / "c")
    checkpoint = lucid.load(tmp_path / "c")
    fresh_opt, _ = _optimizers("sgd")
    fresh = lucid_sched.ReduceLROnPlateau(fresh_opt, **kwargs)
    fresh_opt.load_state_dict(checkpoint["optimizer"])
    fresh.load_state_dict(checkpoint["scheduler"])
    _assert_same(head + _plateau_run(fresh_opt, fresh, metrics[at:]), whole)


# ---------------------------------------------------------------------------- no retrace


@pytest.mark.parametrize(
    ("make", "build"),
    [
        (
            lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
            lambda o: lucid_sched.OneCycleLR(o, 0.5, total_steps=500),
        ),
        (
            lambda ps: optim.Adam(ps, lr=1e-3),
            lambda o: lucid_sched.CyclicLR(o, 1e-4, 1e-2, step_size_up=25),
        ),
        (
            lambda ps: optim.AdamW(ps, lr=1e-3),
            lambda o: lucid_sched.ChainedScheduler(
                [lucid_sched.LinearLR(o, 0.01, total_iters=50), lucid_sched.ExponentialLR(o, 0.999)]
            ),
        ),
    ],
    ids=["SGD-OneCycleLR", "Adam-CyclicLR-betas", "AdamW-ChainedScheduler"],
)
def test_rates_changing_every_step_never_retrace(make: Callable, build: Callable) -> None:
    """500 real steps of a small model, the rate (and momentum or beta1) new each step."""
    lucid.manual_seed(0)
    model = lucid.nn.Sequential(lucid.nn.Linear(4, 8), lucid.nn.Tanh(), lucid.nn.Linear(8, 1))
    opt = make(model.parameters())
    sched = build(opt)
    rng = np.random.default_rng(0)
    x = lucid.tensor(rng.standard_normal((16, 4)).astype(np.float32))
    y = lucid.tensor(rng.standard_normal((16, 1)).astype(np.float32))
    loss_fn = lucid.nn.MSELoss()
    counts, rates = [], []
    for _ in range(500):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        counts.append(opt.trace_count)
        rates.append(opt.param_groups[0]["lr"])
        sched.step()
    assert all(a != b for a, b in zip(rates[:-1], rates[1:], strict=True))
    assert counts[0] >= 1 and counts[-1] == counts[0]


def test_schedule_function_as_lr_equals_closed_form() -> None:
    """``Adagrad(params, lr=cosine_decay(0.1, 1000))``: the same parameters as torch's
    Adagrad with the closed-form rate set by hand before each step, and no retrace."""
    rng = np.random.default_rng(1)
    init = rng.standard_normal(5).astype(np.float32)
    ours = Parameter(mx.array(init))
    theirs = torch.tensor(init, requires_grad=True)
    opt = optim.Adagrad([ours], lr=optim.schedules.cosine_decay(0.1, 1000))
    ref = torch.optim.Adagrad([theirs], lr=0.1)
    counts = []
    for t in range(60):
        grad = rng.standard_normal(5).astype(np.float32)
        ours.grad = lucid.tensor(grad)
        theirs.grad = torch.tensor(grad)
        ref.param_groups[0]["lr"] = 0.05 * (1 + math.cos(math.pi * t / 1000))
        opt.step()
        ref.step()
        counts.append(opt.trace_count)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-6, atol=1e-7)
    assert counts[-1] == counts[0]
    assert callable(opt.param_groups[0]["lr"])


# ---------------------------------------------------------------------------- bad arguments

L = lucid_sched
BAD: dict[str, tuple[Callable[[Any, list], Any], type, str]] = {
    "StepLR step_size=0": (lambda o, s: L.StepLR(o, step_size=0), ValueError, "step_size"),
    "StepLR step_size=1.5": (lambda o, s: L.StepLR(o, 1.5), ValueError, "step_size"),
    "StepLR gamma=-1": (lambda o, s: L.StepLR(o, 3, gamma=-1.0), ValueError, "gamma"),
    "MultiStepLR milestone": (lambda o, s: L.MultiStepLR(o, [3, -1]), ValueError, "milestones"),
    "ConstantLR factor": (lambda o, s: L.ConstantLR(o, factor=1.5), ValueError, "factor"),
    "LinearLR start": (lambda o, s: L.LinearLR(o, start_factor=0.0), ValueError, "start_factor"),
    "LinearLR end": (lambda o, s: L.LinearLR(o, end_factor=2.0), ValueError, "end_factor"),
    "LinearLR total_iters": (lambda o, s: L.LinearLR(o, total_iters=0), ValueError, "total_iters"),
    "ExponentialLR gamma": (lambda o, s: L.ExponentialLR(o, math.nan), ValueError, "gamma"),
    "PolynomialLR power": (lambda o, s: L.PolynomialLR(o, power=-1.0), ValueError, "power"),
    "CosineAnnealingLR T_max=0": (lambda o, s: L.CosineAnnealingLR(o, 0), ValueError, "T_max"),
    "CosineAnnealingLR eta_min": (
        lambda o, s: L.CosineAnnealingLR(o, 5, eta_min=-1.0),
        ValueError,
        "eta_min",
    ),  # fmt: skip
    "WarmRestarts T_0": (lambda o, s: L.CosineAnnealingWarmRestarts(o, 0), ValueError, "T_0"),
    "WarmRestarts T_mult": (
        lambda o, s: L.CosineAnnealingWarmRestarts(o, 5, T_mult=0),
        ValueError,
        "T_mult",
    ),  # fmt: skip
    "CyclicLR mode": (lambda o, s: L.CyclicLR(o, 0.01, 0.1, mode="sine"), ValueError, "mode"),
    "CyclicLR max_lr list": (
        lambda o, s: L.CyclicLR(o, 0.01, [0.1, 0.2, 0.3]),
        ValueError,
        "max_lr",
    ),  # fmt: skip
    "CyclicLR step_size_up": (
        lambda o, s: L.CyclicLR(o, 0.01, 0.1, step_size_up=0),
        ValueError,
        "step_size_up",
    ),  # fmt: skip
    "CyclicLR no momentum": (
        lambda o, s: L.CyclicLR(_adagrad(), 0.01, 0.1),
        ValueError,
        "cycle_momentum",
    ),  # fmt: skip
    "OneCycleLR no total": (lambda o, s: L.OneCycleLR(o, 0.1), ValueError, "total_steps"),
    "OneCycleLR total_steps": (
        lambda o, s: L.OneCycleLR(o, 0.1, total_steps=0),
        ValueError,
        "total_steps",
    ),  # fmt: skip
    "OneCycleLR pct_start": (
        lambda o, s: L.OneCycleLR(o, 0.1, 10, pct_start=1.5),
        ValueError,
        "pct_start",
    ),  # fmt: skip
    "OneCycleLR anneal": (
        lambda o, s: L.OneCycleLR(o, 0.1, 10, anneal_strategy="exp"),
        ValueError,
        "anneal_strategy",
    ),  # fmt: skip
    "Plateau factor": (lambda o, s: L.ReduceLROnPlateau(o, factor=1.0), ValueError, "factor"),
    "Plateau mode": (lambda o, s: L.ReduceLROnPlateau(o, mode="low"), ValueError, "mode"),
    "Plateau threshold_mode": (
        lambda o, s: L.ReduceLROnPlateau(o, threshold_mode="pct"),
        ValueError,
        "threshold_mode",
    ),  # fmt: skip
    "Plateau min_lr list": (
        lambda o, s: L.ReduceLROnPlateau(o, min_lr=[0.1]),
        ValueError,
        "min_lr",
    ),  # fmt: skip
    "Plateau patience": (lambda o, s: L.ReduceLROnPlateau(o, patience=-1), ValueError, "patience"),
    "Sequential milestones": (
        lambda o, s: L.SequentialLR(o, s, [4, 8]),
        ValueError,
        "milestones",
    ),
    "Sequential plateau": (
        lambda o, s: L.SequentialLR(o, [s[0], L.ReduceLROnPlateau(o)], [4]),
        ValueError,
        "ReduceLROnPlateau",
    ),
    "Chained empty": (lambda o, s: L.ChainedScheduler([]), ValueError, "schedulers"),
    "Chained other optimizer": (
        lambda o, s: L.ChainedScheduler([s[0], L.StepLR(_optimizers("sgd")[0], 2)]),
        ValueError,
        "another optimizer",
    ),
    "LambdaLR count": (lambda o, s: L.LambdaLR(o, [lambda e: 1.0]), ValueError, "lr_lambdas"),
    "last_epoch": (lambda o, s: L.StepLR(o, 2, last_epoch=-2), ValueError, "last_epoch"),
    "Noam model_size": (lambda o, s: L.NoamScheduler(o, 0, 10), ValueError, "model_size"),
    "Noam warmup_steps": (lambda o, s: L.NoamScheduler(o, 8, 0), ValueError, "warmup_steps"),
    "not an optimizer": (lambda o, s: L.StepLR(object(), 2), TypeError, "not a lucid"),
    "schedule as lr": (
        lambda o, s: L.StepLR(optim.SGD([Parameter(mx.zeros(2))], lr=lambda t: 0.1), 2),
        ValueError,
        "schedule function",
    ),
}


def _adagrad() -> optim.Adagrad:
    return optim.Adagrad([Parameter(mx.zeros((2,)))], lr=0.1)


@pytest.mark.parametrize("case", BAD)
def test_bad_arguments_raise_and_change_nothing(case: str) -> None:
    build, error, words = BAD[case]
    opt, _ = _optimizers("sgd")
    members = [L.StepLR(opt, 2), L.StepLR(opt, 3)]  # for the composites
    before = copy.deepcopy(
        [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    )
    with pytest.raises(error, match=words):
        build(opt, members)
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == before


def test_load_state_dict_refuses_another_schedulers_state() -> None:
    opt, _ = _optimizers("sgd")
    sched = lucid_sched.StepLR(opt, 3)
    other = lucid_sched.CosineAnnealingLR(_optimizers("sgd")[0], 10).state_dict()
    before = sched.state_dict()
    with pytest.raises(ValueError, match="T_max"):
        sched.load_state_dict(other)
    assert sched.state_dict() == before


def test_normal_use_warns_nothing() -> None:
    """No warning in normal use (torch's step-order warning is not reproduced); the
    deprecated ``step(epoch)`` warns, as torch's does."""
    opt, _ = _optimizers("sgd")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched = lucid_sched.CosineAnnealingLR(opt, 10)
        sched.step()
    with pytest.warns(UserWarning, match="deprecated"):
        sched.step(5)
    assert sched.get_last_lr() == [LRS[0] / 2, LRS[1] / 2]  # the closed form at 5 of 10


# torch makes an optimizer's state at the first step; a scheduler that cycles momentum
# sets it before that step, so SGD built with momentum=0 must make its momentum buffer then
CYCLING_FROM_ZERO = [
    ("OneCycleLR", dict(max_lr=0.5, total_steps=20)),
    ("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=4)),
]


@pytest.mark.parametrize(
    ("name", "kwargs"), CYCLING_FROM_ZERO, ids=[c[0] for c in CYCLING_FROM_ZERO]
)
def test_momentum_cycling_on_sgd_built_without_momentum_equals_torch(name, kwargs) -> None:
    start = np.linspace(-1, 1, 6, dtype=np.float32)
    p = Parameter(mx.array(start))
    opt = optim.SGD([p], lr=0.1, momentum=0.0)
    sched = getattr(lucid_sched, name)(opt, **kwargs)
    tp = torch.nn.Parameter(torch.from_numpy(start.copy()))
    topt = torch.optim.SGD([tp], lr=0.1, momentum=0.0)
    tsched = getattr(torch_sched, name)(topt, **kwargs)
    for step in range(12):
        g = np.cos(np.arange(6, dtype=np.float32) + step)
        p.grad = lucid.Tensor(mx.array(g))
        tp.grad = torch.from_numpy(g)
        opt.step(), sched.step(), topt.step(), tsched.step()
    np.testing.assert_allclose(np.array(p.data), tp.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert "momentum_buffer" in opt.state[p]

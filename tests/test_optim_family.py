"""Every optimizer in the registry (tests/optim_registry.py), one table per kind of check.

- parity with its reference (``torch.optim``; ``mlx.optimizers.Lion`` for Lion) over
  configurations that turn every option on and off, two parameter groups with their own
  hyperparameters, a parameter that has no gradient every third step, float32 and
  float16, 30 steps; the state's keys are torch's;
- bad hyperparameters raise (TypeError for the wrong type, ValueError out of range) at
  construction, in ``add_param_group`` and at ``step()``, and change nothing;
- ``state_dict`` -> fresh optimizer -> ``load_state_dict`` -> steps equals an
  uninterrupted run, bitwise;
- the compiled step equals the plain rule run eagerly, bitwise;
- one trace over 50 steps with ``lr`` changing on every step, and one ``mx.eval`` a step;
- 2,000 steps keep MLX's active memory flat.
"""

from __future__ import annotations

import copy
from typing import Any

import mlx.core as mx
import mlx.optimizers
import numpy as np
import pytest
import torch
from optim_registry import BY_NAME, DENSE, SPECS, WITH_TORCH, Spec

import lucid
from lucid.nn import Parameter

STEPS, SKIP_EVERY = 30, 3
F32, F16 = mx.float32, mx.float16
TORCH_DTYPE = {F32: torch.float32, F16: torch.float16}


def _shapes(spec: Spec) -> list[list[tuple[int, ...]]]:
    """Two groups of two parameters (a matrix and a vector, or two matrices for Muon)."""
    if spec.matrices_only:
        return [[(4, 8), (8, 3)], [(8, 2), (5, 6)]]
    return [[(4, 8), (8,)], [(8, 2), (2,)]]


def _initial(spec: Spec, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(np.float32) for s in g] for g in _shapes(spec)]


def _grads(spec: Spec, steps: int, seed: int = 1) -> list[list[np.ndarray | None]]:
    """Per step, per parameter (flattened over groups); the last parameter has no
    gradient every SKIP_EVERY-th step (its state and step count must not move)."""
    rng = np.random.default_rng(seed)
    flat = [s for g in _shapes(spec) for s in g]
    out = []
    for t in range(1, steps + 1):
        gs: list[np.ndarray | None] = [rng.standard_normal(s).astype(np.float32) for s in flat]
        if t % SKIP_EVERY == 0:
            gs[-1] = None
        out.append(gs)
    return out


def _lucid(spec: Spec, config: tuple[dict, dict], dtype: mx.Dtype = F32, seed: int = 0):
    defaults, second = config
    groups = [[Parameter(mx.array(w).astype(dtype)) for w in g] for g in _initial(spec, seed)]
    opt = spec.cls([{"params": groups[0]}, {"params": groups[1], **second}], **defaults)
    return opt, [p for g in groups for p in g]


def _set(params: list[Parameter], grads: list[np.ndarray | None]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else lucid.Tensor(mx.array(g).astype(p.dtype))


def _np(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32))


CONFIGS = [
    pytest.param(spec, i, id=f"{spec.name}-{i}") for spec in SPECS for i in range(len(spec.configs))
]
TORCH_CONFIGS = [p for p in CONFIGS if p.values[0] in WITH_TORCH]


# ---------------------------------------------------------------------------- parity

# float32: each step agrees to rounding; over 30 steps the differences stay below 1e-5
# relative (atol for entries that pass near 0). A spec may loosen it, saying why.
F32_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
# float16: torch rounds to float16 after every operation, lucid once per step, so the two
# runs drift apart by float16 ulps of the tensor's largest entries (one ulp is 1/1024
# relative), momentum carrying them from step to step (measured: up to 13 ulps in 30
# steps): compared against the tensor's scale.
F16_SCALE = 16 / 1024


def _close(ours: np.ndarray, theirs: np.ndarray, dtype: mx.Dtype, spec: Spec) -> None:
    if dtype == F32:
        np.testing.assert_allclose(ours, theirs, **(spec.f32_tolerance or F32_TOLERANCE))
    else:
        # torch's float16 Adam rounds eps=1e-8 to 0 in float16, so an entry whose second
        # moment underflows becomes inf and then NaN there (Adam config 2); lucid computes
        # in float32 and stays finite. Those entries are left out of the comparison.
        assert np.isfinite(ours).all()
        kept = np.isfinite(theirs)
        ours, theirs = ours[kept], theirs[kept]
        scale = max(float(np.abs(theirs).max(initial=0.0)), 1e-3)
        assert float(np.abs(ours - theirs).max(initial=0.0)) <= F16_SCALE * scale, (ours, theirs)


@pytest.mark.parametrize("dtype", [F32, F16], ids=["f32", "f16"])
@pytest.mark.parametrize("spec, index", TORCH_CONFIGS)
def test_matches_torch(spec: Spec, index: int, dtype: mx.Dtype) -> None:
    config = spec.configs[index]
    opt, params = _lucid(spec, config, dtype)
    tgroups = [
        [torch.tensor(w, dtype=TORCH_DTYPE[dtype], requires_grad=True) for w in g]
        for g in _initial(spec)
    ]
    defaults, second = config
    defaults = {k: v for k, v in defaults.items() if k not in spec.lucid_only}
    ref = getattr(torch.optim, spec.name)(
        [{"params": tgroups[0]}, {"params": tgroups[1], **second}], **defaults
    )
    tparams = [p for g in tgroups for p in g]
    for step in _grads(spec, STEPS):
        _set(params, step)
        for p, g in zip(tparams, step, strict=True):
            p.grad = None if g is None else torch.tensor(g, dtype=TORCH_DTYPE[dtype])
        opt.step()
        ref.step()
        for p, q in zip(params, tparams, strict=True):
            _close(_np(p.data), q.detach().float().numpy(), dtype, spec)
    for p, q in zip(params, tparams, strict=True):
        theirs = set(ref.state[q]) | ({"step"} if not spec.torch_has_step else set())
        assert set(opt.state[p]) == theirs
        for key, value in ref.state[q].items():
            if isinstance(value, torch.Tensor) and key != "step":
                _close(_np(opt.state[p][key]), value.float().numpy(), dtype, spec)
        steps_taken = STEPS - (STEPS // SKIP_EVERY if p is params[-1] else 0)
        assert opt.state[p]["step"].item() == steps_taken


@pytest.mark.parametrize("index", range(len(BY_NAME["Lion"].configs)))
def test_lion_matches_mlx(index: int) -> None:
    spec = BY_NAME["Lion"]
    defaults, _ = spec.configs[index]
    opt, params = _lucid(spec, (defaults, {}))
    betas = defaults.get("betas", (0.9, 0.99))
    ref = mlx.optimizers.Lion(defaults["lr"], betas=list(betas),
                              weight_decay=defaults.get("weight_decay", 0.0))  # fmt: skip
    theirs = {str(i): mx.array(w) for i, w in enumerate(w for g in _initial(spec) for w in g)}
    for step in _grads(spec, STEPS):
        step = [g if g is not None else np.zeros_like(step[0][:0]) for g in step]
        present = {str(i): mx.array(g) for i, g in enumerate(step) if g.size}
        _set(params, [g if g.size else None for g in step])
        opt.step()
        theirs.update(ref.apply_gradients(present, {k: theirs[k] for k in present}))
        for i, p in enumerate(params):
            np.testing.assert_allclose(_np(p.data), np.array(theirs[str(i)]), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------- validation


def _snapshot(opt: lucid.optim.Optimizer, params: list[Parameter]) -> Any:
    return (
        [_np(p.data) for p in params],
        [{k: _np(v) for k, v in opt.state[p].items()} for p in params],
        [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
    )


def _assert_same(a: Any, b: Any) -> None:
    for x, y in zip(a[0] + [v for s in a[1] for v in s.values()],
                    b[0] + [v for s in b[1] for v in s.values()], strict=True):  # fmt: skip
        np.testing.assert_array_equal(x, y)
    assert [sorted(s) for s in a[1]] == [sorted(s) for s in b[1]]
    assert a[2] == b[2]


BAD = [
    pytest.param(spec, name, value, error, id=f"{spec.name}-{name}={value!r}")
    for spec in SPECS
    for name, value, error in spec.bad
]


@pytest.mark.parametrize("spec, name, value, error", BAD)
def test_bad_hyperparameter_raises_and_changes_nothing(spec, name, value, error) -> None:
    defaults = spec.configs[0][0]
    with pytest.raises(error, match=name):
        spec.cls([Parameter(mx.ones((3, 2)))], **{**defaults, name: value})
    opt, params = _lucid(spec, spec.configs[0])
    if spec.dense:
        _set(params, _grads(spec, 1)[0])
        opt.step()
        _set(params, _grads(spec, 2)[1])
    before = _snapshot(opt, params)
    with pytest.raises(error, match=name):
        opt.add_param_group({"params": [Parameter(mx.ones((2, 2)))], name: value})
    assert len(opt.param_groups) == 2
    _assert_same(before, _snapshot(opt, params))
    opt.param_groups[1][name] = value  # by hand: refused at the step, group 0 unchanged too
    before = _snapshot(opt, params)
    with pytest.raises(error, match=name):
        opt.step()
    _assert_same(before, _snapshot(opt, params))


# ---------------------------------------------------------------------------- resume


@pytest.mark.parametrize("spec", DENSE, ids=repr)
def test_state_dict_resume_equals_an_uninterrupted_run(spec: Spec) -> None:
    config, grads = spec.configs[-1], _grads(spec, 12)
    straight, straight_params = _lucid(spec, config)
    for step in grads:
        _set(straight_params, step)
        straight.step()

    first, first_params = _lucid(spec, config)
    for step in grads[:5]:
        _set(first_params, step)
        first.step()
    saved = first.state_dict()
    resumed, params = _lucid(spec, config, seed=7)  # other values: all must come from saved
    for p, q in zip(params, first_params, strict=True):
        p.data = mx.array(q.data)
    resumed.load_state_dict(saved)
    for step in grads[5:]:
        _set(params, step)
        resumed.step()
    _assert_same(_snapshot(straight, straight_params), _snapshot(resumed, params))


# ---------------------------------------------------------------------------- compiled == rule


@pytest.mark.parametrize("spec, index", [p for p in CONFIGS if p.values[0].dense])
def test_compiled_step_equals_the_plain_rule(spec: Spec, index: int) -> None:
    config = spec.configs[index]
    opt, params = _lucid(spec, config, F16 if index % 2 else F32)
    plain = [p.data for p in params]
    group_of = [gi for gi, g in enumerate(opt.param_groups) for _ in g["params"]]
    states = [
        {k: v for k, v in opt.state[p].items() if k != "step"} for p in params
    ]  # before any step: the initial state
    counts = [0] * len(params)
    for step in _grads(spec, 8):
        _set(params, step)
        opt.step()
        for i, g in enumerate(step):
            if g is None:
                continue
            counts[i] += 1
            group = opt.param_groups[group_of[i]]
            numbers = opt.step_hyperparameters(group, counts[i])
            hyper = {k: mx.array(v, dtype=mx.float32) for k, v in numbers.items()}
            grad = mx.array(g).astype(plain[i].dtype)
            plain[i], states[i] = spec.cls.rule(
                plain[i], grad, states[i], hyper, **opt.static_config(group)
            )
        for p, a in zip(params, plain, strict=True):
            np.testing.assert_array_equal(_np(p.data), _np(a))
    for p, s in zip(params, states, strict=True):
        for k, v in s.items():
            np.testing.assert_array_equal(_np(opt.state[p][k]), _np(v), err_msg=k)


# ---------------------------------------------------------------------------- traces, evals


@pytest.mark.parametrize("spec", DENSE, ids=repr)
def test_one_trace_and_one_eval_per_step_with_lr_changing(spec: Spec, monkeypatch) -> None:
    opt, params = _lucid(spec, spec.configs[-1])
    grads = _grads(spec, 50)
    _set(params, [g if g is not None else np.ones_like(grads[0][-1]) for g in grads[0]])
    opt.step()  # every parameter steps once, so all share one step count afterwards
    traces = opt.trace_count
    assert traces == len(opt.param_groups)  # one compiled call per group
    calls = []
    real_eval = mx.eval
    monkeypatch.setattr(mx, "eval", lambda *a: (calls.append(1), real_eval(*a))[1])
    for t, step in enumerate(grads[1:], start=1):
        for k, group in enumerate(opt.param_groups):
            group["lr"] = 0.01 / (1 + 0.1 * t + k)
        _set(params, [g if g is not None else np.zeros_like(grads[0][-1]) for g in step])
        opt.step()
        assert len(calls) == t
    assert opt.trace_count == traces


@pytest.mark.parametrize("spec", DENSE, ids=repr)
def test_two_thousand_steps_keep_memory_flat(spec: Spec) -> None:
    opt, params = _lucid(spec, spec.configs[-1])
    grads = [mx.array(g) for g in _grads(spec, 1)[0]]
    memory = []
    for t in range(2000):
        opt.param_groups[0]["lr"] = 0.01 / (1 + 1e-3 * t)
        for p, g in zip(params, grads, strict=True):
            p.grad = lucid.Tensor(g * 1e-3)
        opt.step()
        if t >= 200 and t % 200 == 0:
            memory.append(mx.get_active_memory())
    assert max(memory) - min(memory) < 16 * 1024, f"active memory drifts: {memory}"
    assert opt.trace_count == len(opt.param_groups)


# ---------------------------------------------------------------------------- row-sparse

N_ROWS, DIM = 40, 3


def _lookups(steps: int, all_rows: bool = False) -> list[np.ndarray]:
    """Indices per step, with repeats; with ``all_rows`` every row appears every step."""
    rng = np.random.default_rng(5)
    if all_rows:
        return [rng.permutation(np.concatenate([np.arange(N_ROWS)] * 2)) for _ in range(steps)]
    return [rng.integers(0, N_ROWS, size=9) for _ in range(steps)]


def _embedding_run(make_opt, sparse: bool, lookups: list[np.ndarray]) -> np.ndarray:
    table = np.random.default_rng(4).standard_normal((N_ROWS, DIM)).astype(np.float32)
    emb = lucid.nn.Embedding(N_ROWS, DIM, sparse=sparse)
    emb.weight.data = mx.array(table)
    opt = make_opt(emb.parameters())
    target = np.random.default_rng(6).standard_normal(DIM).astype(np.float32)
    for idx in lookups:
        opt.zero_grad()
        ((emb(idx) - lucid.tensor(target)) ** 2).sum().backward()
        opt.step()
    return np.array(emb.weight.data)


SPARSE_VS_TORCH = [
    pytest.param("SGD", {"lr": 0.1}, "SGD", id="SGD"),
    pytest.param("SGD", {"lr": 0.1, "maximize": True}, "SGD", id="SGD-maximize"),
    pytest.param("Adam", {"lr": 0.05}, "SparseAdam", id="Adam-as-SparseAdam"),
    pytest.param("SparseAdam", {"lr": 0.05}, "SparseAdam", id="SparseAdam"),
    pytest.param(
        "SparseAdam",
        {"lr": 0.05, "betas": (0.8, 0.9), "maximize": True},
        "SparseAdam",
        id="SparseAdam-options",
    ),  # fmt: skip
]


@pytest.mark.parametrize("name, kwargs, torch_name", SPARSE_VS_TORCH)
def test_sparse_step_matches_torch(name: str, kwargs: dict, torch_name: str) -> None:
    lookups = _lookups(20)
    ours = _embedding_run(lambda ps: getattr(lucid.optim, name)(ps, **kwargs), True, lookups)
    table = np.random.default_rng(4).standard_normal((N_ROWS, DIM)).astype(np.float32)
    emb = torch.nn.Embedding(N_ROWS, DIM, sparse=True)
    emb.weight.data = torch.tensor(table)
    opt = getattr(torch.optim, torch_name)(emb.parameters(), **kwargs)
    target = torch.tensor(np.random.default_rng(6).standard_normal(DIM).astype(np.float32))
    for idx in lookups:
        opt.zero_grad()
        ((emb(torch.tensor(idx)) - target) ** 2).sum().backward()
        opt.step()
    np.testing.assert_allclose(ours, emb.weight.detach().numpy(), rtol=1e-5, atol=1e-6)


SPARSE_VS_DENSE = [
    pytest.param("SGD", {"lr": 0.05, "momentum": 0.9}, id="SGD-momentum"),
    pytest.param("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}, id="SGD-nesterov"),
    pytest.param("Adam", {"lr": 0.05, "amsgrad": True}, id="Adam-amsgrad"),
    pytest.param("AdamW", {"lr": 0.05}, id="AdamW"),
]


@pytest.mark.parametrize("name, kwargs", SPARSE_VS_DENSE)
def test_sparse_step_equals_dense_when_every_row_is_touched(name: str, kwargs: dict) -> None:
    """The row rule is the dense rule on the touched rows: with every row touched every
    step (repeats summed first), the two runs agree, weight decay and momentum included."""
    lookups = _lookups(15, all_rows=True)
    make = lambda ps: getattr(lucid.optim, name)(ps, **kwargs)  # noqa: E731
    np.testing.assert_allclose(
        _embedding_run(make, True, lookups), _embedding_run(make, False, lookups),
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip


def test_sparse_adam_refuses_dense_gradients_and_changes_nothing() -> None:
    p = Parameter(mx.ones((3, 2)))
    opt = lucid.optim.SparseAdam([p])
    p.grad = lucid.Tensor(mx.ones((3, 2)))
    with pytest.raises(TypeError, match="row-sparse gradients only"):
        opt.step()
    np.testing.assert_array_equal(np.array(p.data), np.ones((3, 2)))
    assert opt.state[p]["step"].item() == 0


@pytest.mark.parametrize("spec", [s for s in SPECS if not s.sparse], ids=repr)
def test_rules_without_row_updates_refuse_sparse_gradients(spec: Spec) -> None:
    emb = lucid.nn.Embedding(N_ROWS, DIM, sparse=True)
    opt = spec.cls(emb.parameters(), **spec.configs[0][0])
    emb(np.array([1, 2])).sum().backward()
    with pytest.raises(TypeError, match="does not support sparse gradients"):
        opt.step()


# ---------------------------------------------------------------------------- deep copies


@pytest.mark.parametrize("spec", DENSE, ids=repr)
@pytest.mark.parametrize("when", [0, 1, 4], ids=lambda n: f"after-{n}-steps")
def test_deepcopy_is_an_independent_optimizer(spec: Spec, when: int) -> None:
    """copy.deepcopy at any time (its compile cache and trace bookkeeping are not copied)
    gives an optimizer over copied parameters that steps on its own and gives the same
    results as the original."""
    grads = _grads(spec, when + 3)
    opt, params = _lucid(spec, spec.configs[-1])
    for step in grads[:when]:
        _set(params, step)
        opt.step()
    twin = copy.deepcopy(opt)
    twin_params = [p for g in twin.param_groups for p in g["params"]]
    assert not any(p is q for p, q in zip(params, twin_params, strict=True))
    for step in grads[when:]:
        _set(twin_params, step)
        twin.step()  # the copy first: the original must not move
    assert twin.trace_count >= 1
    frozen = [_np(p.data) for p in params]
    for step in grads[when:]:
        _set(params, step)
        opt.step()
    assert not np.array_equal(frozen[0], _np(params[0].data))  # the original moved later
    _assert_same(_snapshot(opt, params), _snapshot(twin, twin_params))


def test_deepcopy_of_model_and_optimizer_keeps_them_shared() -> None:
    """As in torch: copying {"model": m, "opt": o} together gives a copied optimizer that
    holds the copied model's parameters."""
    model = lucid.nn.Sequential(lucid.nn.Linear(3, 4), lucid.nn.Linear(4, 2))
    opt = lucid.optim.Adam(model.parameters(), lr=0.01)
    x = lucid.tensor(np.ones((5, 3), np.float32))
    for _ in range(2):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    both = copy.deepcopy({"model": model, "opt": opt})
    copied = list(both["model"].parameters())
    assert [p for g in both["opt"].param_groups for p in g["params"]] == copied
    assert all(p in both["opt"].state for p in copied)
    both["opt"].zero_grad()
    both["model"](x).sum().backward()
    both["opt"].step()
    assert opt.state[next(iter(model.parameters()))]["step"].item() == 2
    assert both["opt"].state[copied[0]]["step"].item() == 3

"""Property tests over random shapes, dtypes, hyperparameters and group layouts, for every
optimizer in the registry (tests/optim_registry.py).

Each example picks an optimizer and builds it over 1-5 parameters (float32, float16,
bfloat16; shapes of rank 0-3, sizes 0-4 per axis; Muon: matrices, Adafactor: sizes from
1) in 1-3 groups with their own hyperparameters (Adagrad: drawn at random; the others:
one of the registry's configurations per group), and runs 1-3 steps in which any
parameter may have no gradient. Properties:

- dtype and shape of parameters are kept, and the state has the keys, shapes and dtypes
  of a fresh state;
- the compiled step equals the plain rule (``rule`` run eagerly per parameter with the
  same hyperparameter arrays), bitwise;
- Adagrad: the accumulator ``G`` never decreases;
- Adagrad: a zero gradient with ``weight_decay=0`` leaves every parameter (and ``G``)
  unchanged;
- ``state_dict`` -> ``load_state_dict`` (in memory or through a file) -> step equals the
  same step without the round trip, bitwise.

Equality is bitwise: the compiled and the eager step run the same float32 operations in
the same order, and MLX's fused kernels do not reassociate them (measured on CPU; no
tolerance was needed). ``eps`` is drawn from ``[1e-10, 1e-2]``, not 0: with ``eps = 0``
and ``G = 0`` a zero gradient gives ``0 / 0 = NaN``, as in PyTorch.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from optim_registry import BY_NAME, DENSE, Spec

import lucid
from lucid import nn
from lucid.optim import Optimizer

DTYPES = [mx.float32, mx.float16, mx.bfloat16]
SETTINGS = settings(max_examples=40, deadline=None)


@dataclass
class Layout:
    optimizer: Spec
    specs: list[tuple[tuple[int, ...], mx.Dtype]]  # (shape, dtype) per parameter
    groups: list[list[int]]  # parameter indices per group
    hypers: list[dict[str, Any]]  # per group
    has_grad: list[list[bool]]  # per step, per parameter
    seed: int


def _hyper(zero_decay: bool) -> st.SearchStrategy[dict[str, Any]]:
    maybe = lambda lo, hi: st.just(0.0) | st.floats(lo, hi)  # noqa: E731
    return st.fixed_dictionaries(
        {
            "lr": st.floats(1e-4, 1.0),
            "eps": st.floats(1e-10, 1e-2),
            "weight_decay": st.just(0.0) if zero_decay else maybe(1e-4, 0.5),
            "lr_decay": maybe(1e-4, 0.5),
            "initial_accumulator_value": maybe(1e-3, 1.0),
            "maximize": st.booleans(),
            "decoupled_weight_decay": st.booleans(),
        }
    )


def _configured(spec: Spec) -> st.SearchStrategy[dict[str, Any]]:
    return st.sampled_from([{**d, **second} for d, second in spec.configs])


@st.composite
def layouts(draw: st.DrawFn, zero_decay: bool = False, adagrad_only: bool = False) -> Layout:
    spec = BY_NAME["Adagrad"] if adagrad_only else draw(st.sampled_from(DENSE))
    n = draw(st.integers(1, 5))
    if spec.matrices_only:
        shapes = st.tuples(st.integers(1, 4), st.integers(1, 4))
    else:
        low = 1 if spec.name == "Adafactor" else 0  # a mean over an empty axis is NaN
        shapes = st.lists(st.integers(low, 4), max_size=3).map(tuple)
    specs = [(draw(shapes), draw(st.sampled_from(DTYPES))) for _ in range(n)]
    k = draw(st.integers(1, min(3, n)))
    owner = list(range(k)) + draw(st.lists(st.integers(0, k - 1), min_size=n - k, max_size=n - k))
    order = draw(st.permutations(range(n)))  # which parameter lands where
    groups = [[order[i] for i in range(n) if owner[i] == g] for g in range(k)]
    hyper = _hyper(zero_decay) if spec.name == "Adagrad" else _configured(spec)
    hypers = [draw(hyper) for _ in range(k)]
    steps = draw(st.integers(1, 3))
    has_grad = [draw(st.lists(st.booleans(), min_size=n, max_size=n)) for _ in range(steps)]
    return Layout(spec, specs, groups, hypers, has_grad, draw(st.integers(0, 2**31 - 1)))


# ---------------------------------------------------------------------------- helpers


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: mx.Dtype) -> mx.array:
    return mx.array(rng.standard_normal(shape).astype(np.float32)).astype(dtype)


def _build(layout: Layout) -> tuple[Optimizer, list[nn.Parameter]]:
    rng = np.random.default_rng(layout.seed)
    params = [nn.Parameter(_random(rng, s, d)) for s, d in layout.specs]
    groups = [
        {"params": [params[i] for i in idx], **h}
        for idx, h in zip(layout.groups, layout.hypers, strict=True)
    ]
    return layout.optimizer.cls(groups), params


def _grads(layout: Layout, step: int, zero: bool = False) -> list[mx.array | None]:
    """The gradients of step ``step`` (the same arrays every time they are asked for)."""
    rng = np.random.default_rng([layout.seed, step])
    out = []
    for (shape, dtype), has in zip(layout.specs, layout.has_grad[step], strict=True):
        g = mx.zeros(shape, dtype=dtype) if zero else _random(rng, shape, dtype)
        out.append(g if has else None)
    return out


def _set_grads(params: list[nn.Parameter], grads: list[mx.array | None]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else lucid.Tensor(g)


def _bits(a: mx.array) -> np.ndarray:
    """The raw bits of ``a`` (NumPy has no bfloat16; a view as uint16 keeps every bit)."""
    wide = {mx.float32: mx.uint32, mx.float16: mx.uint16, mx.bfloat16: mx.uint16}[a.dtype]
    return np.array(a.view(wide))


def _assert_bitwise(a: mx.array, b: mx.array, what: str) -> None:
    assert (a.dtype, a.shape) == (b.dtype, b.shape), what
    np.testing.assert_array_equal(_bits(a), _bits(b), err_msg=what)


def _assert_same_optimizer(x: Optimizer, xp: list, y: Optimizer, yp: list) -> None:
    for i, (p, q) in enumerate(zip(xp, yp, strict=True)):
        _assert_bitwise(p.data, q.data, f"params[{i}]")
        assert x.state[p].keys() == y.state[q].keys()
        for k in x.state[p]:
            _assert_bitwise(x.state[p][k], y.state[q][k], f"params[{i}] state {k!r}")


# ---------------------------------------------------------------------------- properties


@SETTINGS
@given(layouts())
def test_dtype_and_shape_kept(layout: Layout) -> None:
    opt, params = _build(layout)
    for t in range(len(layout.has_grad)):
        _set_grads(params, _grads(layout, t))
        opt.step()
    groups = {id(p): g for g in opt.param_groups for p in g["params"]}
    for p, (shape, dtype) in zip(params, layout.specs, strict=True):
        assert (p.dtype, p.shape) == (dtype, shape)
        state = opt.state[p]
        fresh = opt.init_state(p.data, groups[id(p)])
        assert set(state) == {"step", *fresh}
        for key, value in fresh.items():
            assert (state[key].dtype, state[key].shape) == (value.dtype, value.shape), key
        assert (state["step"].dtype, tuple(state["step"].shape)) == (mx.float32, ())


@SETTINGS
@given(layouts())
def test_compiled_step_equals_the_plain_rule(layout: Layout) -> None:
    opt, params = _build(layout)
    rule = layout.optimizer.cls.rule
    ref = {
        id(p): (p.data, {k: v for k, v in opt.state[p].items() if k != "step"}, 0)
        for g in opt.param_groups
        for p in g["params"]
    }
    for t in range(len(layout.has_grad)):
        grads = _grads(layout, t)
        _set_grads(params, grads)
        opt.step()
        for group in opt.param_groups:
            for p in group["params"]:
                g = grads[next(i for i, q in enumerate(params) if q is p)]
                if g is None:
                    continue
                data, state, count = ref[id(p)]
                values = opt.step_hyperparameters(group, count + 1)
                hyper = {k: mx.array(v, dtype=mx.float32) for k, v in values.items()}
                data, state = rule(data, g, state, hyper, **opt.static_config(group))
                ref[id(p)] = data, state, count + 1
    for i, p in enumerate(params):
        data, state, count = ref[id(p)]
        _assert_bitwise(p.data, data, f"params[{i}]")
        for key, value in state.items():
            _assert_bitwise(opt.state[p][key], value, f"params[{i}] {key}")
        assert opt.state[p]["step"].item() == count


@SETTINGS
@given(layouts(adagrad_only=True))
def test_accumulator_never_decreases(layout: Layout) -> None:
    opt, params = _build(layout)
    for t in range(len(layout.has_grad)):
        before = [np.array(opt.state[p]["sum"].astype(mx.float32)) for p in params]
        _set_grads(params, _grads(layout, t))
        opt.step()
        for i, p in enumerate(params):
            after = np.array(opt.state[p]["sum"].astype(mx.float32))
            assert np.all(after >= before[i]), f"params[{i}]: G decreased at step {t + 1}"


@SETTINGS
@given(layouts(zero_decay=True, adagrad_only=True))
def test_zero_gradient_without_decay_changes_nothing(layout: Layout) -> None:
    opt, params = _build(layout)
    for t in range(len(layout.has_grad)):  # some real steps first, so G is not all zero
        _set_grads(params, _grads(layout, t))
        opt.step()
    before = [(p.data, opt.state[p]["sum"]) for p in params]
    _set_grads(params, _grads(layout, 0, zero=True))
    opt.step()
    for i, (p, (data, total)) in enumerate(zip(params, before, strict=True)):
        # values, not bits: maximize turns the zero gradient into -0.0, and x - (-0.0)
        # turns a parameter of -0.0 into +0.0, which is equal but has other bits
        np.testing.assert_array_equal(
            np.array(p.data.astype(mx.float32)), np.array(data.astype(mx.float32)), f"[{i}]"
        )
        _assert_bitwise(opt.state[p]["sum"], total, f"params[{i}] sum")


@SETTINGS
@given(layouts(), st.booleans())
def test_state_dict_round_trip_then_step_is_bitwise_equal(layout: Layout, via_file: bool) -> None:
    opt, params = _build(layout)
    steps = len(layout.has_grad)
    for t in range(steps - 1):
        _set_grads(params, _grads(layout, t))
        opt.step()

    sd = opt.state_dict()
    if via_file:
        with tempfile.TemporaryDirectory() as folder:
            lucid.save(sd, Path(folder) / "opt")
            sd = lucid.load(Path(folder) / "opt")
    twin_params = [nn.Parameter(p.data) for p in params]
    twin = layout.optimizer.cls(
        [{"params": [twin_params[i] for i in idx]} for idx in layout.groups]
    )
    twin.load_state_dict(sd)
    _assert_same_optimizer(opt, params, twin, twin_params)

    grads = _grads(layout, steps - 1)
    _set_grads(params, grads)
    _set_grads(twin_params, grads)
    opt.step()
    twin.step()
    _assert_same_optimizer(opt, params, twin, twin_params)
    for mine, theirs in zip(opt.param_groups, twin.param_groups, strict=True):
        assert {k: v for k, v in mine.items() if k != "params"} == {
            k: v for k, v in theirs.items() if k != "params"
        }

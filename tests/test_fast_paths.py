"""The fast paths of the compiled step against the plain rule.

The step takes three shortcuts (see lucid/optim/optimizer.py and buckets.py): small
parameters run as one flat bucket, the new state is computed by a kernel of its own so
buffers are reused, and the updates are spread over two streams. Each case here runs a
layout through many steps and compares every parameter and state array, bitwise, with
``Adagrad.update`` applied eagerly to each parameter alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np
import pytest

import lucid
from lucid import nn
from lucid.optim import Adagrad, kernels
from lucid.optim.buckets import SMALL

F32, F16, BF16 = mx.float32, mx.float16, mx.bfloat16


@dataclass
class Layout:
    shapes: list[tuple[int, ...]]
    dtypes: list[mx.Dtype] | None = None
    kwargs: dict = field(default_factory=dict)
    steps: int = 6
    # hooks, called with (step index, optimizer, params) before each step
    skip: Callable[[int, int], bool] = lambda t, i: False  # no grad for param i at step t
    between: Callable | None = None


def _replace_data(t: int, opt: Adagrad, params: list[nn.Parameter]) -> None:
    if t == 3:  # a user writes new values into a bucketed parameter
        params[1].data = params[1].data * 0.5


def _augmented(t: int, opt: Adagrad, params: list[nn.Parameter]) -> None:
    if t == 2:  # `+=` keeps the array object but assigns .data: the bucket must see it
        params[0].data += 1.0
        params[2].data *= 0.5


def _new_dtype(t: int, opt: Adagrad, params: list[nn.Parameter]) -> None:
    if t == 2:  # a bucketed parameter moves to float16: it leaves its float32 bucket
        params[1].data = params[1].data.astype(F16)


def _read_state(t: int, opt: Adagrad, params: list[nn.Parameter]) -> None:
    if t % 2:  # unpacks the buckets; the next step packs them again
        assert all(opt.state[p]["sum"].shape == p.shape for p in params)


def _round_trip(t: int, opt: Adagrad, params: list[nn.Parameter]) -> None:
    if t == 3:
        opt.load_state_dict(opt.state_dict())


LAYOUTS = [
    pytest.param(Layout([(3,), (5, 7), (1,), (1023,)]), id="small-odd-sizes"),
    pytest.param(  # buckets by layout: vectors and a scalar; (n, 7) matrices; (n, 2, 3)
        Layout([(4,), (5, 7), (), (9, 7), (3, 2, 3), (6,), (1, 7), (2, 2, 3)]),
        id="matrix-buckets",
    ),
    pytest.param(
        Layout([(5, 7), (9, 7), (4,), (6,)], skip=lambda t, i: (t + i) % 2 == 0),
        id="matrix-buckets-skipping",
    ),
    pytest.param(Layout([(SMALL,), (SMALL + 1,), (128, 129), (2,)]), id="bucket-boundary"),
    pytest.param(
        Layout([(40, 50)] * 3 + [(17,)] * 3, dtypes=[F32, F16, BF16, F32, F16, BF16]),
        id="mixed-dtypes",
    ),
    pytest.param(
        Layout([(9,), (33, 3), (300, 70), (4,), (5,)], skip=lambda t, i: (t + i) % 3 == 0),
        id="grads-missing-some-steps",
    ),
    pytest.param(
        Layout([(64,), (8, 8), (5,)], kwargs={"weight_decay": 0.1, "lr_decay": 0.2}),
        id="decoupled-decay",
    ),
    pytest.param(
        Layout(
            [(64,), (8, 8), (20000,)],
            kwargs={"weight_decay": 0.1, "decoupled_weight_decay": False, "maximize": True},
        ),
        id="coupled-decay-maximize",
    ),
    pytest.param(Layout([(6,), (7, 2), (3,)], between=_replace_data), id="data-replaced"),
    pytest.param(Layout([(6,), (7, 2), (3,)], between=_augmented), id="data-augmented"),
    pytest.param(Layout([(6,), (7, 2), (3,), (4,)], between=_new_dtype), id="data-new-dtype"),
    pytest.param(Layout([(6,), (7, 2), (30000,)], between=_read_state), id="state-read"),
    pytest.param(Layout([(6,), (7, 2), (3,)], between=_round_trip), id="state-dict-mid-run"),
]


def _params(layout: Layout, rng: np.random.Generator) -> list[nn.Parameter]:
    dtypes = layout.dtypes or [F32] * len(layout.shapes)
    return [
        nn.Parameter(mx.array(rng.standard_normal(s).astype(np.float32)).astype(d))
        for s, d in zip(layout.shapes, dtypes, strict=True)
    ]


def _eager(opt: Adagrad, group: dict, p: mx.array, g: mx.array, state: dict, t: int):
    hyper = {k: mx.array(v, dtype=F32) for k, v in opt.step_hyperparameters(group, t).items()}
    return Adagrad.rule(p, g, state, hyper, **opt.static_config(group))


def _check(layout: Layout) -> Adagrad:
    rng = np.random.default_rng(0)
    params = _params(layout, rng)
    opt = Adagrad(params, lr=0.05, **layout.kwargs)
    group = opt.param_groups[0]
    init = layout.kwargs.get("initial_accumulator_value", 0.0)
    ref = [(p.data, {"sum": mx.full(p.shape, init, dtype=p.dtype)}, 0) for p in params]
    for t in range(layout.steps):
        if layout.between is not None:
            layout.between(t, opt, params)
            ref = [(p.data, s, n) for p, (_, s, n) in zip(params, ref, strict=True)]
        for i, p in enumerate(params):
            if layout.skip(t, i):
                p.grad = None
                continue
            g = rng.standard_normal(p.shape).astype(np.float32)
            p.grad = lucid.Tensor(mx.array(g).astype(p.dtype))
            data, state, n = ref[i]
            ref[i] = (*_eager(opt, group, data, p.grad.data, state, n + 1), n + 1)
        opt.step()
    for i, (p, (data, state, n)) in enumerate(zip(params, ref, strict=True)):
        assert p.dtype == data.dtype and p.shape == data.shape, f"params[{i}]"
        assert mx.array_equal(p.data, data).item(), f"params[{i}] differs from the plain rule"
        s = opt.state[p]
        assert s["sum"].dtype == p.dtype
        assert mx.array_equal(s["sum"], state["sum"]).item(), f"params[{i}] sum differs"
        assert int(s["step"].item()) == n
    return opt


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fast_paths_equal_the_plain_rule(layout: Layout) -> None:
    _check(layout)


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_any_number_of_streams_gives_the_same_result(
    streams: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernels, "STREAMS", streams)
    monkeypatch.setattr(kernels, "_streams", {})
    _check(Layout([(300, 70), (20000,), (17000,), (5,), (6,)]))


def test_small_parameters_share_buckets_by_layout_and_large_ones_do_not() -> None:
    shapes = [(10,), (SMALL,), (SMALL + 1,), (3, 3), (5, 3), (), (2, 4)]
    params = [nn.Parameter(mx.zeros(s)) for s in shapes]
    opt = Adagrad(params)
    for p in params:
        p.grad = lucid.Tensor(mx.ones(p.shape))
    opt.step()
    # vectors and scalars share one bucket, (n, 3) matrices another; the lone (2, 4)
    # matrix and the large vector step alone
    assert [p in opt._buckets for p in params] == [True, True, False, True, True, True, False]
    bucket_of = {i: opt._buckets.held[id(p)][0] for i, p in enumerate(params) if p in opt._buckets}
    assert bucket_of[0] is bucket_of[1] is bucket_of[5] and bucket_of[3] is bucket_of[4]
    assert bucket_of[0] is not bucket_of[3] and bucket_of[3].flat.shape == (8, 3)
    assert opt._buckets.step_of(params[0]) == 1


def test_a_large_step_reuses_its_buffers() -> None:
    """Peak memory of a step over one parameter above kernels.SPLIT_ABOVE_BYTES stays near
    zero: the new parameter and state are written over the old ones (no timing, only
    memory)."""
    n = 2 * kernels.SPLIT_ABOVE_BYTES // 4  # float32
    p = nn.Parameter(mx.zeros((n,)))
    opt = Adagrad([p])
    g = mx.ones((n,))
    mx.eval(g)
    for _ in range(3):
        p.grad = lucid.Tensor(g)
        opt.step()
    p.grad = lucid.Tensor(g)
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    opt.step()
    extra = mx.get_peak_memory() - before
    assert extra < 0.05 * 2 * 4 * n, f"a step added {extra} bytes over params + state"


# After steady steps, the step skips checks whose inputs it has already seen (the group's
# values but lr, a parameter whose state it wrote itself). Each change below must still be
# caught before anything moves.
def _set(key, value):
    return lambda opt, p: opt.param_groups[0].__setitem__(key, value)


def _edit_betas(opt, p):
    opt.param_groups[0]["betas"][1] = 1.5  # an edit in place of the list


def _bad_state(opt, p):
    opt.state[p]["exp_avg"] = mx.zeros((3,))


def _new_data(opt, p):
    p.data = mx.zeros((7,))


CHANGES = [
    ("lr -1", _set("lr", -1.0), ValueError, "lr"),
    ("lr nan", _set("lr", float("nan")), ValueError, "lr"),
    ("lr str", _set("lr", "0.1"), TypeError, "lr"),
    ("eps -1", _set("eps", -1.0), ValueError, "eps"),
    ("betas tuple", _set("betas", (0.9, 1.0)), ValueError, "betas"),
    ("betas in place", _edit_betas, ValueError, "betas"),
    ("amsgrad on", _set("amsgrad", True), ValueError, "state has keys"),
    ("state replaced", _bad_state, ValueError, "exp_avg"),
    ("data replaced", _new_data, ValueError, "shape"),
]


@pytest.mark.parametrize(("change", "expected", "match"), [c[1:] for c in CHANGES],
                         ids=[c[0] for c in CHANGES])  # fmt: skip
def test_a_change_after_steady_steps_is_still_caught(change, expected, match) -> None:
    p = nn.Parameter(mx.arange(5, dtype=mx.float32))
    opt = lucid.optim.Adam([p], lr=0.1, betas=[0.9, 0.999])
    for _ in range(3):
        p.grad = lucid.Tensor(mx.ones((5,)))
        opt.step()
    change(opt, p)
    p.grad = lucid.Tensor(mx.ones(p.shape))
    before = np.array(p.data)
    with pytest.raises(expected, match=match):
        opt.step()
    np.testing.assert_array_equal(np.array(p.data), before)


def test_state_keeps_the_order_of_the_parameters_after_buckets() -> None:
    shapes = [(3, 2), (4,), (40000,), (5, 2), (), (6,)]
    params = [nn.Parameter(mx.zeros(s)) for s in shapes]
    opt = Adagrad(params)
    for p in params:
        p.grad = lucid.Tensor(mx.ones(p.shape))
    opt.step()
    assert list(opt.state) == params

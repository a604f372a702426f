"""Module: registration, traversal order (checked against torch on the same tree), modes,
zero_grad, state_dict round trips and all-or-nothing strict loading, containers."""

from __future__ import annotations

import copy
import math
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
import torch

import lucid
import lucid.nn as nn

# --------------------------------------------------------------------------- a tree built twice


def build_tree(lib: Any, param: Any, buffer: Any) -> Any:
    """The same model in lucid.nn and torch.nn: nested containers, a tied weight, a shared
    submodule, a bare parameter, persistent and non-persistent buffers."""

    class Block(lib.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = lib.Linear(4, 4)
            self.gain = param([1.0, 1.0, 1.0, 1.0])
            self.register_buffer("count", buffer([0.0]))

    class Net(lib.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = param([1.0, 2.0, 3.0, 4.0])
            self.embed = lib.Embedding(5, 4)
            self.blocks = lib.ModuleList([Block(), lib.Sequential(lib.Linear(4, 4), lib.ReLU())])
            self.heads = lib.ModuleDict({"a": lib.Linear(4, 2), "b": lib.Linear(4, 2, bias=False)})
            self.heads["b"].weight = self.heads["a"].weight  # tied parameter
            self.shared = self.blocks[0]  # the same module under a second name
            self.register_buffer("mask", buffer([1.0, 0.0]))
            self.register_buffer("cache", buffer([0.0]), persistent=False)
            self.norm = lib.LayerNorm(4)

    return Net()


def lucid_tree() -> nn.Module:
    return build_tree(nn, nn.Parameter, lambda v: lucid.tensor(v))


def torch_tree() -> torch.nn.Module:
    return build_tree(torch.nn, lambda v: torch.nn.Parameter(torch.tensor(v)), torch.tensor)


NAME_LISTS = [
    ("named_parameters", lambda m: [n for n, _ in m.named_parameters()]),
    ("named_buffers", lambda m: [n for n, _ in m.named_buffers()]),
    ("named_modules", lambda m: [n for n, _ in m.named_modules()]),
    ("named_children", lambda m: [n for n, _ in m.named_children()]),
    ("state_dict", lambda m: list(m.state_dict())),
    ("non_recursive", lambda m: [n for n, _ in m.named_parameters(recurse=False)]),
    ("module_types", lambda m: [type(x).__name__ for x in m.modules()]),
    ("child_count", lambda m: [len(list(m.children()))]),
    ("param_shapes", lambda m: [tuple(p.shape) for p in m.parameters()]),
]


@pytest.mark.parametrize(("what", "names"), NAME_LISTS, ids=[c[0] for c in NAME_LISTS])
def test_traversal_matches_torch(what: str, names: Any) -> None:
    assert names(lucid_tree()) == names(torch_tree())


def test_repr_matches_torch() -> None:
    assert repr(lucid_tree()) == repr(torch_tree())


def test_shared_parameters_are_yielded_once() -> None:
    model = lucid_tree()
    params = list(model.parameters())
    assert len(params) == len({id(p) for p in params})
    assert model.heads["b"].weight is model.heads["a"].weight
    assert "heads.b.weight" in model.state_dict()  # but the state names both, like torch


def test_spec_example() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.param = nn.Parameter([1.0, 2.0, 3.0])

        def forward(self, x: lucid.Tensor) -> lucid.Tensor:
            return x * self.param

    model = Model()
    assert list(model.parameters()) == [model.param]
    y = model(lucid.tensor([2.0, 2.0, 2.0]))
    y.sum().backward()
    np.testing.assert_array_equal(np.array(y.data), [2.0, 4.0, 6.0])
    np.testing.assert_array_equal(model.param.grad.numpy(), [2.0, 2.0, 2.0])


# --------------------------------------------------------------------------- registration rules


class Empty(nn.Module):
    pass


def test_reassignment_and_deletion_update_the_registry() -> None:
    m = Empty()
    m.w = nn.Parameter([1.0])
    m.w = nn.Linear(1, 1)  # a parameter name reused for a module
    assert [n for n, _ in m.named_parameters()] == ["w.weight", "w.bias"]
    del m.w
    assert list(m.parameters()) == []
    with pytest.raises(AttributeError, match="'Empty' object has no attribute 'w'"):
        _ = m.w
    m.plain = lucid.tensor([1.0])  # a plain Tensor is an ordinary attribute
    assert list(m.parameters()) == [] and list(m.buffers()) == []


def _two_linears(nn_: Any) -> Any:
    m = nn_.Module()
    m.a, m.b = nn_.Linear(2, 2), nn_.Linear(2, 2)
    return m


def _buffers(nn_: Any, zeros: Any) -> Any:
    m = nn_.Module()
    m.register_buffer("x", zeros(1))
    m.register_buffer("y", zeros(1))
    m.register_buffer("x", zeros(2))
    return m


def _tied(nn_: Any, zeros: Any) -> Any:
    m = _two_linears(nn_)
    m.b.weight = m.a.weight
    return m


def _reassigned(nn_: Any, zeros: Any) -> Any:
    m = nn_.Linear(2, 3)
    m.weight = nn_.Parameter(zeros(3, 2))
    return m


def _registered_again(nn_: Any, zeros: Any) -> Any:
    m = nn_.Linear(2, 3)
    m.register_parameter("weight", nn_.Parameter(zeros(3, 2)))
    return m


def _submodule_reassigned(nn_: Any, zeros: Any) -> Any:
    m = _two_linears(nn_)
    m.a = nn_.Linear(2, 2)
    return m


@pytest.mark.parametrize(
    "build", [_reassigned, _registered_again, _tied, _submodule_reassigned, _buffers]
)
def test_reregistering_a_name_keeps_its_place_like_torch(build: Any) -> None:
    def order(m: Any) -> list[list[str]]:
        walks = (m.named_parameters(), m.named_buffers(), m.named_children())
        return [[n for n, _ in walk] for walk in walks] + [list(m.state_dict())]

    assert order(build(nn, lucid.zeros)) == order(build(torch.nn, torch.zeros))


def test_parameter_slot_can_be_emptied_but_not_given_a_plain_tensor() -> None:
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="parameter 'bias'"):
        lin.bias = lucid.tensor([1.0, 2.0])
    lin.bias = None
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    assert lin(lucid.ones(1, 2)).shape == (1, 2)


def test_buffer_assignment_keeps_it_a_buffer() -> None:
    m = Empty()
    m.register_buffer("running", mx.zeros(3))
    assert isinstance(m.running, lucid.Tensor) and not m.running.requires_grad
    m.running = mx.ones(3)
    np.testing.assert_array_equal(np.array(m.state_dict()["running"]), np.ones(3))


class NoInit(nn.Module):
    def __init__(self) -> None:
        self.w = nn.Parameter([1.0])


REGISTRATION_ERRORS = [
    ("before_init", lambda: NoInit(), AttributeError, "super().__init__()"),
    (
        "buffer_type",
        lambda: Empty().register_buffer("b", [1.0]),
        TypeError,
        "buffer 'b' must be a Tensor",
    ),
    ("buffer_param", lambda: Empty().register_buffer("b", nn.Parameter([1.0])), TypeError, "b"),
    ("dotted_name", lambda: Empty().register_buffer("a.b", mx.zeros(1)), KeyError, "'a.b'"),
    ("empty_name", lambda: Empty().add_module("", nn.ReLU()), KeyError, "non-empty"),
    ("clash", lambda: Empty().register_buffer("train", mx.zeros(1)), KeyError, "'train'"),
    ("param_type", lambda: Empty().register_parameter("p", mx.zeros(1)), TypeError, "'p'"),
    ("module_type", lambda: Empty().add_module("m", 3), TypeError, "'m'"),
    ("train_mode", lambda: Empty().train("no"), TypeError, "mode"),
    ("no_forward", lambda: Empty()(1), NotImplementedError, "Empty"),
    ("list_forward", lambda: nn.ModuleList()(1), NotImplementedError, "ModuleList"),
]


@pytest.mark.parametrize(
    ("case", "action", "error", "message"),
    REGISTRATION_ERRORS,
    ids=[c[0] for c in REGISTRATION_ERRORS],
)
def test_registration_errors(case: str, action: Any, error: type, message: str) -> None:
    with pytest.raises(error) as info:
        action()
    assert message in str(info.value)


# --------------------------------------------------------------------------- modes and grads


def test_train_and_eval_reach_every_module() -> None:
    model = lucid_tree()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.blocks.train()
    assert model.blocks[0].proj.training and not model.embed.training
    model.train()
    assert all(m.training for m in model.modules())


def _backward_once(model: nn.Module) -> None:
    loss = sum((p * p).sum() for p in model.parameters())
    loss.backward()


def test_zero_grad() -> None:
    model = lucid_tree()
    _backward_once(model)
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    for p in model.parameters():
        assert p.grad.shape == p.shape and p.grad.dtype == p.dtype
        assert not np.any(p.grad.numpy())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_apply_visits_every_module_once_children_first() -> None:
    seen: list[str] = []
    nn.Sequential(nn.Linear(1, 1), nn.Sequential(nn.ReLU())).apply(
        lambda m: seen.append(type(m).__name__)
    )
    assert seen == ["Linear", "ReLU", "Sequential", "Sequential"]


# --------------------------------------------------------------------------- state_dict


def snapshot(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in model.state_dict().items()}


def assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_state_dict_holds_arrays_and_persistent_buffers_only() -> None:
    state = lucid_tree().state_dict()
    assert all(isinstance(v, mx.array) for v in state.values())
    assert "mask" in state and "blocks.0.count" in state and "shared.count" in state
    assert "cache" not in state


def test_state_dict_round_trip_keeps_parameter_objects() -> None:
    lucid.manual_seed(0)
    src = lucid_tree()
    lucid.manual_seed(1)
    dst = lucid_tree()
    params_before = list(dst.parameters())
    result = dst.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert_same_state(snapshot(dst), snapshot(src))
    assert all(a is b for a, b in zip(dst.parameters(), params_before, strict=True))
    x = np.array([[0, 3, 4]])
    np.testing.assert_array_equal(dst.embed(x).numpy(), src.embed(x).numpy())


def test_load_casts_to_each_parameters_dtype_and_accepts_numpy() -> None:
    lin = nn.Linear(3, 2)
    state = {k: np.array(v).astype(np.float16) for k, v in lin.state_dict().items()}
    lin.load_state_dict(state)
    assert lin.weight.dtype == mx.float32 and lin.bias.dtype == mx.float32
    np.testing.assert_array_equal(lin.weight.numpy(), state["weight"].astype(np.float32))


def test_load_into_torch_and_back() -> None:
    """Names and layouts match torch's, so state moves both ways."""
    model, ref = lucid_tree(), torch_tree()
    ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(1.0)
    model.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    assert_same_state(snapshot(model), {k: v.numpy() for k, v in ref.state_dict().items()})


def _corrupt(state: dict[str, mx.array]) -> dict[str, Any]:
    state = dict(state)
    del state["norm.bias"]
    state["head.extra"] = mx.zeros(2)
    state["embed.weight"] = mx.zeros((6, 4))
    state["scale"] = mx.full((4,), 7.0)  # valid: must not be written when the load fails
    return state


def test_strict_load_reports_every_problem_and_changes_nothing() -> None:
    model = lucid_tree()
    before, params = snapshot(model), list(model.parameters())
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(_corrupt(model.state_dict()))
    message = str(info.value)
    for fragment in ("missing key(s): norm.bias", "unexpected key(s): head.extra", "embed.weight"):
        assert fragment in message
    assert "(6, 4)" in message and "(5, 4)" in message
    assert_same_state(snapshot(model), before)
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))


def test_non_strict_load_skips_missing_and_unexpected_keys() -> None:
    model = lucid_tree()
    state = _corrupt(model.state_dict())
    state["embed.weight"] = model.embed.weight.data
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["norm.bias"] and result.unexpected_keys == ["head.extra"]
    np.testing.assert_array_equal(model.scale.numpy(), np.full(4, 7.0))


def test_non_strict_load_still_rejects_shape_mismatch() -> None:
    model = lucid_tree()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="size mismatch for embed.weight"):
        model.load_state_dict(_corrupt(model.state_dict()), strict=False)
    assert_same_state(snapshot(model), before)


def test_load_rejects_unconvertible_values() -> None:
    lin = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="weight: cannot convert str"):
        lin.load_state_dict({"weight": "zeros", "bias": mx.zeros(2)})


# --------------------------------------------------------------------------- containers


def test_sequential_indexing_slicing_and_forward() -> None:
    a, b, c = nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and list(seq) == [a, b, c]
    assert seq[0] is a and seq[-1] is c
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and list(head) == [a, b]
    x = lucid.randn(5, 3)
    np.testing.assert_allclose(seq(x).numpy(), c(b(a(x))).numpy())
    seq[1] = nn.Tanh()
    assert isinstance(seq[1], nn.Tanh)
    with pytest.raises(IndexError, match="index 3 is out of range for length 3"):
        seq[3]


def test_sequential_from_mapping_keeps_names() -> None:
    seq = nn.Sequential({"fc": nn.Linear(2, 2), "act": nn.ReLU()})
    assert [n for n, _ in seq.named_parameters()] == ["fc.weight", "fc.bias"]
    assert isinstance(seq[1], nn.ReLU)


def test_module_list_and_dict_operations() -> None:
    layers = nn.ModuleList([nn.Linear(2, 2)])
    layers.append(nn.ReLU()).extend([nn.Linear(2, 3)])
    assert len(layers) == 3 and isinstance(layers[-1], nn.Linear)
    assert isinstance(layers[1:], nn.ModuleList) and len(layers[1:]) == 2
    assert [n for n, _ in layers.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(TypeError, match="expected an nn.Module; got int"):
        layers.append(3)

    heads = nn.ModuleDict({"x": nn.Linear(2, 1)})
    heads["y"] = nn.Linear(2, 1)
    assert list(heads) == ["x", "y"] and "y" in heads and len(heads) == 2
    assert [k for k, _ in heads.items()] == list(heads.keys())
    del heads["x"]
    assert [n for n, _ in heads.named_parameters()] == ["y.weight", "y.bias"]


def test_deepcopy_gives_independent_parameters() -> None:
    model = lucid_tree()
    clone = copy.deepcopy(model)
    assert_same_state(snapshot(clone), snapshot(model))
    assert not any(a is b for a, b in zip(clone.parameters(), model.parameters(), strict=True))
    assert clone.heads["b"].weight is clone.heads["a"].weight  # ties survive the copy


# --------------------------------------------------------------------------- nn.utils


def test_clip_grad_norm_error_says_what_clipping_an_infinite_norm_does() -> None:
    """The message promises: finite entries become 0 and infinite ones NaN (torch too)."""
    grads = [[1.0, math.inf], [2.0]]
    ours = [nn.Parameter(np.zeros(len(g), np.float32)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(len(g))) for g in grads]
    for p, t, g in zip(ours, theirs, grads, strict=True):
        p.grad, t.grad = lucid.tensor(g), torch.tensor(g)
    with pytest.raises(RuntimeError, match="finite gradient entries then become 0 and infinite"):
        nn.utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    nn.utils.clip_grad_norm_(ours, 1.0)
    torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(p.grad.numpy(), t.grad.numpy())  # [0, nan], [0]


# --------------------------------------------------------------------------- dtypes and freezing


def _dtypes(model: Any) -> dict[str, str]:
    """Every parameter's and buffer's dtype by name, spelled the same for lucid and torch."""
    entries = [*model.named_parameters(), *model.named_buffers()]
    return {name: str(t.dtype).rsplit(".", 1)[-1] for name, t in entries}


def _int_buffer(model: Any, make: Any) -> Any:
    model.register_buffer("steps", make([3]))  # an integer buffer keeps its dtype
    return model


CASTS = [  # (lucid call, torch call)
    ("half", lambda m: m.half(), lambda m: m.half()),
    ("float-after-half", lambda m: m.half().float(), lambda m: m.half().float()),
    ("to-bfloat16", lambda m: m.to(lucid.bfloat16), lambda m: m.to(torch.bfloat16)),
    ("to-dtype-kw", lambda m: m.to(dtype=lucid.float16), lambda m: m.to(dtype=torch.float16)),
    ("to-device-dtype", lambda m: m.to("cpu", lucid.float16), lambda m: m.to("cpu", torch.float16)),
    ("to-device", lambda m: m.to("cpu"), lambda m: m.to("cpu")),
]  # fmt: skip


@pytest.mark.parametrize(("cast", "torch_cast"), [pytest.param(f, g, id=i) for i, f, g in CASTS])
def test_module_casts_like_torch(cast: Any, torch_cast: Any) -> None:
    model = _int_buffer(lucid_tree(), lambda v: lucid.tensor(v))
    ref = _int_buffer(torch_tree(), lambda v: torch.tensor(v, dtype=torch.int32))
    ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    params = list(model.parameters())
    assert cast(model) is model
    torch_cast(ref)
    assert _dtypes(model) == _dtypes(ref)
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    expected = ref.state_dict()
    for name, value in model.state_dict().items():  # the same values after the same casts
        got = np.array(value.astype(mx.float32)) if value.dtype == mx.bfloat16 else np.array(value)
        np.testing.assert_array_equal(got, expected[name].float().numpy(), err_msg=name)


def test_module_cast_takes_dense_grads_along() -> None:
    model = nn.Linear(3, 2)
    _backward_once(model)
    model.half()
    assert all(p.grad.dtype == mx.float16 for p in model.parameters())
    out = model(lucid.ones((1, 3), dtype=lucid.float16))
    assert out.dtype == mx.float16


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m: m.to(lucid.int32), TypeError, "floating dtypes only"),
        (lambda m: m.to("tpu"), ValueError, "unknown device"),
        (lambda m: m.to(torch.float16), TypeError, "expected a dtype"),
        (lambda m: m.requires_grad_(0), TypeError, "must be a bool"),
    ],
    ids=["int-dtype", "bad-device", "torch-dtype", "flag-not-bool"],
)
def test_module_cast_and_freeze_errors_change_nothing(call: Any, error: type, match: str) -> None:
    model = lucid_tree()
    before = (_dtypes(model), [p.requires_grad for p in model.parameters()])
    with pytest.raises(error, match=match):
        call(model)
    assert (_dtypes(model), [p.requires_grad for p in model.parameters()]) == before


def _mlp(lib: Any) -> Any:
    return lib.Sequential(lib.Linear(3, 5), lib.Tanh(), lib.Linear(5, 2))


FREEZES = [  # (what to freeze, on a lucid model and its torch twin)
    ("first-layer", lambda m: m[0].requires_grad_(False)),
    ("one-parameter", lambda m: setattr(m[2].bias, "requires_grad", False)),
    ("whole-then-last", lambda m: (m.requires_grad_(False), m[2].requires_grad_(True))),
]


@pytest.mark.parametrize("freeze", [pytest.param(f, id=i) for i, f in FREEZES])
def test_frozen_parameters_get_no_grad_and_adagrad_skips_them(freeze: Any) -> None:
    """Three Adagrad steps with part of the model frozen, lucid against torch."""
    lucid.manual_seed(0)
    model = _mlp(nn)
    ref = _mlp(torch.nn)
    ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    freeze(model)
    freeze(ref)
    frozen = {n for n, p in ref.named_parameters() if not p.requires_grad}
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen and frozen
    start = {n: np.array(p.data) for n, p in model.named_parameters()}
    opt = lucid.optim.Adagrad(model.parameters(), lr=0.1)
    ref_opt = torch.optim.Adagrad(ref.parameters(), lr=0.1)
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    for _ in range(3):
        opt.zero_grad()
        ref_opt.zero_grad()
        (model(lucid.tensor(x)) ** 2).mean().backward()
        (ref(torch.from_numpy(x)) ** 2).mean().backward()
        for name, p in model.named_parameters():
            assert (p.grad is None) == (name in frozen), name
        opt.step()
        ref_opt.step()
    for (name, p), (_, r) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        np.testing.assert_allclose(np.array(p.data), r.detach().numpy(), rtol=1e-5, atol=1e-6)
        if name in frozen:  # bit for bit unchanged
            np.testing.assert_array_equal(np.array(p.data), start[name])


def test_requires_grad_underscore_returns_the_module() -> None:
    model = lucid_tree()
    assert model.requires_grad_(False) is model
    assert not any(p.requires_grad for p in model.parameters())
    assert model.requires_grad_() is model
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------- shape errors

SHAPE_ERRORS = [  # (layer call, error, the exact message or its fragments)
    (
        lambda: nn.Linear(3, 4)(lucid.zeros((2, 5))),
        ValueError,
        ["Linear(in_features=3, out_features=4): input has shape (2, 5); expected last "
         "dimension 3"],
    ),
    (lambda: nn.Linear(3, 4)(lucid.tensor(1.0)), ValueError, ["Linear(", "shape ()"]),
    (lambda: nn.Linear(3, 4)([[1.0, 2.0]]), ValueError, ["shape (1, 2)", "last dimension 3"]),
    (
        lambda: nn.LayerNorm(4)(lucid.zeros((2, 3))),
        ValueError,
        ["LayerNorm(normalized_shape=(4,)): input has shape (2, 3); expected the last 1 "
         "dimension(s) to be (4,)"],
    ),
    (lambda: nn.LayerNorm((2, 4))(lucid.zeros(4)), ValueError, ["(2, 4)", "shape (4,)"]),
    (
        lambda: nn.Embedding(10, 3)(lucid.tensor([1.0, 2.0])),
        TypeError,
        ["Embedding(10, 3): input must hold integer indices; got dtype float32"],
    ),
    (lambda: nn.Embedding(10, 3)(mx.array([0.5])), TypeError, ["Embedding(10, 3)", "float32"]),
    (
        lambda: nn.functional.linear(lucid.zeros((2, 5)), lucid.zeros((4, 3))),
        ValueError,
        ["linear(): input has shape (2, 5) and weight (4, 3)"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "fragments"), SHAPE_ERRORS, ids=[
        "linear", "linear-0d", "linear-list", "layernorm", "layernorm-2d", "embedding-float",
        "embedding-mx-float", "F.linear",
    ]
)  # fmt: skip
def test_layer_errors_name_the_layer_and_the_shapes(call: Any, error: type, fragments: Any) -> None:
    with pytest.raises(error) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value)
    assert "[matmul]" not in str(info.value)


@pytest.mark.parametrize(
    ("layer", "x"),
    [
        (nn.Linear(3, 4), lucid.zeros((3,))),
        (nn.Linear(3, 4), lucid.zeros((2, 7, 3))),
        (nn.LayerNorm((2, 3)), lucid.zeros((5, 2, 3))),
        (nn.Embedding(4, 2), np.array([], dtype=np.float64)),  # empty: no index to be wrong
    ],
    ids=["linear-1d", "linear-3d", "layernorm-3d", "embedding-empty"],
)
def test_layers_accept_the_shapes_they_expect(layer: Any, x: Any) -> None:
    layer(x)

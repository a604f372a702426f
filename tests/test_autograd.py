"""The autograd engine: backward's contract, accumulation, no_grad, detach, leaves,
unbroadcast, and that nothing in forward or backward forces an evaluation."""

from __future__ import annotations

import threading

import mlx.core as mx
import numpy as np
import pytest
import torch

import lucid
from lucid.tensor import unbroadcast


def _grad(t):
    return None if t.grad is None else t.grad.tolist()


# --------------------------------------------------------------------------- backward


def test_backward_on_scalar_seeds_one():
    x = lucid.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    assert _grad(x) == [2.0, 4.0, 6.0]


def test_backward_on_one_element_non_scalar():
    x = lucid.tensor([3.0], requires_grad=True)
    (x * x).backward()
    assert _grad(x) == [6.0]


def test_backward_of_a_leaf_itself():
    x = lucid.tensor(2.0, requires_grad=True)
    x.backward()
    assert _grad(x) == 1.0


@pytest.mark.parametrize("gradient", [[1.0, 10.0], np.array([1.0, 10.0]), mx.array([1.0, 10.0])])
def test_backward_with_explicit_gradient(gradient):
    x = lucid.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).backward(gradient)
    assert _grad(x) == [3.0, 30.0]


def test_backward_non_scalar_without_gradient_raises():
    y = lucid.ones(2, 3, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"one-element tensor.*\(2, 3\).*gradient="):
        y.backward()


def test_backward_gradient_of_wrong_shape_raises():
    y = lucid.ones(2, 3, requires_grad=True) * 2
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(2, 3\)"):
        y.backward(mx.ones(3))


def test_backward_without_graph_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (lucid.ones(2) * 2).sum().backward()


def test_backward_twice_with_retain_graph_accumulates():
    x = lucid.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert _grad(x) == [4.0, 8.0]
    (x * 10).sum().backward()  # a second graph adds in too
    assert _grad(x) == [14.0, 18.0]


@pytest.mark.parametrize("lib", [lucid, torch], ids=["lucid", "torch"])
@pytest.mark.parametrize(
    "second",
    [
        lambda y, loss: loss.backward(),  # the same graph again
        lambda y, loss: (y * 2).sum().backward(),  # a new graph through a freed node
    ],
    ids=["same-root", "through-freed-intermediate"],
)
def test_second_backward_through_a_freed_graph_raises(lib, second):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    loss = y.sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        second(y, loss)
    assert x.grad.tolist() == [2.0, 4.0]  # the refused call added nothing
    assert not y.is_leaf and y.requires_grad  # a freed intermediate is still no leaf


def test_backward_frees_the_graph():
    x = lucid.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    loss = y.sum()
    loss.backward()
    assert loss._parents == () and y._parents == ()
    kept = (x * x).sum()
    kept.backward(retain_graph=True)
    assert kept._parents != ()


# Each op as (lucid, torch); a and b are (2, 3) with positive entries.
_STALE_CASES = {
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "div": (lambda a, b: a / b, lambda a, b: a / b),
    "pow": (lambda a, b: a**b, lambda a, b: a**b),
    "matmul": (lambda a, b: a @ b.T, lambda a, b: a @ b.T),
    "relu": (lambda a, b: (a - 1).relu() * b, lambda a, b: (a - 1).relu() * b),
    "abs": (lambda a, b: (a - 1).abs() * b, lambda a, b: (a - 1).abs() * b),
    "log": (lambda a, b: a.log() * b, lambda a, b: a.log() * b),
    "clip": (lambda a, b: a.clip(0.5, 1.5) * b, lambda a, b: a.clip(0.5, 1.5) * b),
    "maximum": (lucid.maximum, torch.maximum),
    "minimum": (lucid.minimum, torch.minimum),
    "where": (
        lambda a, b: lucid.where(a > 1, a * b, b),
        lambda a, b: torch.where(a > 1, a * b, b),
    ),
    "var": (lambda a, b: a.var(axis=1) * b[0, 0], lambda a, b: a.var(1, correction=0) * b[0, 0]),
    "max": (lambda a, b: a.max(axis=1) * b[0, :2], lambda a, b: a.amax(1) * b[0, :2]),
    "logsumexp": (lambda a, b: a.logsumexp(axis=0) * b, lambda a, b: a.logsumexp(0) * b),
    "getitem": (
        lambda a, b: a[[0, 1], [2, 0]] * b[1, :2],
        lambda a, b: a[[0, 1], [2, 0]] * b[1, :2],
    ),
    "gelu": (lambda a, b: a.gelu() * b, lambda a, b: torch.nn.functional.gelu(a) * b),
}


@pytest.mark.parametrize("name", list(_STALE_CASES))
def test_backward_uses_the_values_from_forward_time(name):
    """An optimizer step between forward and backward replaces .data; the gradient must
    still be the one of the function evaluated in forward (torch on the old values)."""
    lucid_fn, torch_fn = _STALE_CASES[name]
    rng = np.random.default_rng(0)
    a0, b0 = (rng.uniform(0.2, 2.0, size=(2, 3)).astype(np.float32) for _ in range(2))
    a, b = lucid.tensor(a0, requires_grad=True), lucid.tensor(b0, requires_grad=True)
    loss = lucid_fn(a, b).sum()
    a.data, b.data = mx.array(-3 * a0), mx.array(a0 + 5)  # a step after forward
    loss.backward()

    ta, tb = torch.tensor(a0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    torch_fn(ta, tb).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_shared_subgraph_gradient_sums_paths():
    x = lucid.tensor(3.0, requires_grad=True)
    y = x * x  # y used twice below; x reached along three paths
    z = y * y + y + x
    z.backward()
    assert _grad(x) == pytest.approx(4 * 27 + 2 * 3 + 1)  # d(x^4 + x^2 + x)/dx


def test_deep_graph_does_not_recurse():
    x = lucid.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(3000):
        y = y + 0.0
    y.backward()
    assert _grad(x) == 1.0


def test_leaf_without_requires_grad_gets_no_grad():
    x = lucid.tensor([1.0, 2.0], requires_grad=True)
    c = lucid.tensor([5.0, 6.0])
    (x * c).sum().backward()
    assert _grad(x) == [5.0, 6.0] and c.grad is None


def test_int_operand_gets_no_grad():
    x = lucid.tensor([1.0, 2.0], requires_grad=True)
    i = lucid.tensor([3, 4])
    (x * i).sum().backward()
    assert _grad(x) == [3.0, 4.0] and i.grad is None


def test_interior_nodes_keep_no_grad():
    x = lucid.tensor([1.0], requires_grad=True)
    y = x * 2
    (y * 3).sum().backward()
    assert y.grad is None and not y.is_leaf and x.is_leaf


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_grad_keeps_parameter_dtype(dtype):
    x = lucid.ones(3, dtype=dtype, requires_grad=True)
    (x.astype(mx.float32) * 2).sum().backward()
    assert x.grad.dtype == dtype


# --------------------------------------------------------------------------- detach, no_grad


def test_detach_cuts_the_graph():
    x = lucid.tensor([1.0, 2.0], requires_grad=True)
    d = (x * x).detach()
    assert d.is_leaf and not d.requires_grad and d.tolist() == [1.0, 4.0]
    (x * d).sum().backward()  # d is a constant here: the gradient is d, not 3x^2
    assert _grad(x) == [1.0, 4.0]


def test_detach_shares_values():
    x = lucid.randn(3, requires_grad=True)
    assert x.detach().data is x.data


def test_no_grad_context_manager():
    x = lucid.tensor([1.0], requires_grad=True)
    with lucid.no_grad():
        assert not lucid.is_grad_enabled()
        y = x * 2
    assert lucid.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf


def test_no_grad_decorator():
    x = lucid.tensor([1.0], requires_grad=True)

    @lucid.no_grad()
    def double(t):
        return t * 2

    assert not double(x).requires_grad
    assert (x * 2).requires_grad and lucid.is_grad_enabled()
    assert double.__name__ == "double"


def test_no_grad_decorator_recursion_restores_mode():
    @lucid.no_grad()
    def depth(n):
        return depth(n - 1) if n else lucid.is_grad_enabled()

    assert depth(3) is False
    assert lucid.is_grad_enabled()


def test_no_grad_nested_and_exception_restore_mode():
    with lucid.no_grad(), lucid.no_grad():
        pass
    assert lucid.is_grad_enabled()
    with pytest.raises(KeyError), lucid.no_grad():
        raise KeyError
    assert lucid.is_grad_enabled()


def test_one_no_grad_instance_entered_twice_restores_mode():
    # torch 2.x keeps one saved mode per instance and leaves grad disabled here. Run in a
    # thread of its own (grad mode is per thread) so that a failure cannot leak out.
    modes = []

    def scenario():
        ng = lucid.no_grad()
        with ng:
            with ng:
                pass
            modes.append(lucid.is_grad_enabled())
        modes.append(lucid.is_grad_enabled())

    worker = threading.Thread(target=scenario)
    worker.start()
    worker.join()
    assert modes == [False, True]


@pytest.mark.parametrize("lib", [lucid, torch], ids=["lucid", "torch"])
def test_no_grad_decorator_covers_generator_bodies(lib):
    x = lib.tensor([1.0], requires_grad=True)

    @lib.no_grad()
    def steps():
        sent = yield (x * 2).requires_grad
        yield sent, lib.is_grad_enabled()
        return "done"

    gen = steps()
    assert next(gen) is False
    assert lib.is_grad_enabled()  # the caller's code between steps keeps grad
    assert gen.send("hi") == ("hi", False)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done" and lib.is_grad_enabled()


def test_no_grad_is_per_thread():
    seen = []
    with lucid.no_grad():
        worker = threading.Thread(target=lambda: seen.append(lucid.is_grad_enabled()))
        worker.start()
        worker.join()
    assert seen == [True]


# --------------------------------------------------------------------------- unbroadcast


@pytest.mark.parametrize(
    ("grad_shape", "shape"),
    [((3, 4), (3, 4)), ((3, 4), (1, 4)), ((3, 4), (3, 1)), ((2, 3, 4), (4,)), ((2, 3, 4), ()),
     ((2, 3, 4), (3, 1)), ((5, 1, 4), (1, 1, 4))],
)  # fmt: skip
def test_unbroadcast_sums_to_shape(grad_shape, shape):
    g = np.random.default_rng(0).standard_normal(grad_shape).astype(np.float32)
    expected = g.sum(axis=tuple(range(len(grad_shape) - len(shape))))
    expected = expected.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)
    out = unbroadcast(mx.array(g), shape)
    assert tuple(out.shape) == shape
    np.testing.assert_allclose(np.array(out), expected.reshape(shape), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- laziness


def _refuse(*args, **kwargs):
    raise AssertionError("lucid forced an evaluation during forward/backward")


def test_forward_and_backward_stay_lazy(monkeypatch):
    """No op and no part of backward evaluates: mx.eval and every implicit
    materialisation of an mx.array (item, tolist, bool, float, int) are made to fail."""
    lucid.manual_seed(0)
    x = lucid.randn(4, 3, requires_grad=True)
    w = lucid.randn(3, 5, requires_grad=True)
    for name in ("eval", "async_eval"):
        monkeypatch.setattr(mx, name, _refuse)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(mx.array, name, _refuse)

    h = (x @ w).relu()
    h = lucid.concatenate([h, h[:, [0, 0]]], axis=1)
    h = h - h.max(axis=0, keepdims=True)
    loss = h.log_softmax(axis=-1)[[0, 1, 2, 3], [1, 0, 2, 6]].mean() + h.var() + (h**2).sum()
    loss = loss + lucid.stack([x.T[0], x[:, 1]]).logsumexp() + lucid.gelu(w).clip(-1, 1).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    assert isinstance(x.grad.data, mx.array) and isinstance(w.grad.data, mx.array)

    monkeypatch.undo()
    assert np.isfinite(x.grad.numpy()).all() and np.isfinite(w.grad.numpy()).all()

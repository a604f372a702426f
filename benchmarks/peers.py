"""The peers lucid is measured against: Adagrad steps and MLP training steps written the
way each library's documentation shows, with the same hyperparameters as lucid.

An optimizer implementation is built from NumPy start values and fixed gradients and
offers ``step(lr)`` (synchronous: the update is done when it returns) and ``params()``
(the current parameters as NumPy arrays, for the cross-check). :class:`MlxOptimizer` and
:class:`TorchOptimizer` take any optimizer of their library; the Adagrad peers are
configurations of them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import mlx.core as mx
import mlx.nn
import mlx.optimizers
import numpy as np
import torch

from benchmarks.common import EPS, LR, Factory

__all__ = [
    "NumpyAdagrad",
    "MlxOptimizer",
    "TorchOptimizer",
    "ADAGRAD_PEERS",
    "MlxMLP",
    "mlx_compiled_step",
    "TorchMLP",
]


class NumpyAdagrad:
    """In-place NumPy: ``G += g*g; θ -= lr*g/(sqrt(G)+eps)`` with one preallocated
    temporary per tensor, so a step allocates nothing. Also the reference for parity."""

    name = "numpy in-place"
    uses_mlx = False

    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        self._p = [a.copy() for a in params]
        self._g = grads
        self._G = [np.zeros_like(a) for a in params]
        self._tmp = [np.empty_like(a) for a in params]

    def step(self, lr: float) -> None:
        for p, g, G, t in zip(self._p, self._g, self._G, self._tmp, strict=True):
            np.multiply(g, g, out=t)
            G += t
            np.sqrt(G, out=t)
            t += np.float32(EPS)
            np.divide(g, t, out=t)
            t *= np.float32(lr)
            p -= t

    def params(self) -> list[np.ndarray]:
        return self._p


class _Holder(mlx.nn.Module):
    """An MLX module whose only parameters are a list of arrays."""

    def __init__(self, arrays: list[mx.array]) -> None:
        super().__init__()
        self.ps = arrays


class MlxOptimizer:
    """An ``mlx.optimizers`` optimizer (built by ``make()``) driving
    ``optimizer.update(model, grads)``; compiled as MLX's docs show, with the model and
    optimizer state as compile inputs and outputs."""

    uses_mlx = True

    def __init__(
        self,
        params: list[np.ndarray],
        grads: list[np.ndarray],
        make: Callable[[], mlx.optimizers.Optimizer],
        compiled: bool,
    ) -> None:
        self._model = _Holder([mx.array(a) for a in params])
        self._grads = {"ps": [mx.array(g) for g in grads]}
        self._opt = make()
        self._opt.init(self._model.trainable_parameters())
        self._state = [self._model.state, self._opt.state]
        mx.eval(self._state, self._grads)

        def update(grads: dict) -> None:
            self._opt.update(self._model, grads)

        if compiled:
            update = partial(mx.compile, inputs=self._state, outputs=self._state)(update)
        self._update = update

    def step(self, lr: float) -> None:
        self._opt.learning_rate = lr  # lives in the state as an array: no retrace
        self._update(self._grads)
        mx.eval(self._state)

    def params(self) -> list[np.ndarray]:
        return [np.array(a) for a in self._model.ps]


class TorchOptimizer:
    """A ``torch.optim`` optimizer on CPU in one of its three code paths (``mode``:
    ``for-loop``, ``foreach`` or ``fused``), built by ``make(params, **flags)``."""

    uses_mlx = False
    FLAGS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}

    def __init__(
        self,
        params: list[np.ndarray],
        grads: list[np.ndarray],
        make: Callable[..., torch.optim.Optimizer],
        mode: str,
    ) -> None:
        self._p = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in params]
        for p, g in zip(self._p, grads, strict=True):
            p.grad = torch.from_numpy(g)  # shares memory; the optimizers only read it
        self._opt = make(self._p, **self.FLAGS[mode])

    def step(self, lr: float) -> None:
        self._opt.param_groups[0]["lr"] = lr
        self._opt.step()

    def params(self) -> list[np.ndarray]:
        return [p.detach().numpy() for p in self._p]


def _mlx_adagrad() -> mlx.optimizers.Optimizer:
    return mlx.optimizers.Adagrad(learning_rate=LR, eps=EPS)


def _torch_adagrad(params: list[torch.nn.Parameter], **flags) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(params, lr=LR, eps=EPS, **flags)


#: every peer of lucid's Adagrad, ``(name, factory)`` in table order
ADAGRAD_PEERS: list[tuple[str, Factory]] = [
    ("mlx.optimizers.Adagrad", partial(MlxOptimizer, make=_mlx_adagrad, compiled=False)),
    ("mlx.optimizers.Adagrad compiled", partial(MlxOptimizer, make=_mlx_adagrad, compiled=True)),
    *[
        (f"torch Adagrad {mode}", partial(TorchOptimizer, make=_torch_adagrad, mode=mode))
        for mode in TorchOptimizer.FLAGS
    ],
    (NumpyAdagrad.name, NumpyAdagrad),
]


# ---------------------------------------------------------------------------- MLP peers


def mlx_compiled_step(
    model: mlx.nn.Module, opt: mlx.optimizers.Optimizer, state: list
) -> Callable[[mx.array, mx.array], mx.array]:
    """The whole step of an ``mlx.nn`` classifier (mean cross-entropy, ``value_and_grad``,
    ``opt.update``) as one ``mx.compile`` d function, ``state`` its inputs and outputs,
    as MLX's docs show it."""

    def loss_fn(model: mlx.nn.Module, x: mx.array, y: mx.array) -> mx.array:
        return mlx.nn.losses.cross_entropy(model(x), y, reduction="mean")

    loss_and_grad = mlx.nn.value_and_grad(model, loss_fn)

    @partial(mx.compile, inputs=state, outputs=state)
    def train_step(x: mx.array, y: mx.array) -> mx.array:
        loss, grads = loss_and_grad(model, x, y)
        opt.update(model, grads)
        return loss

    return train_step


class MlxMLP:
    """mlx.nn MLP trained with ``nn.value_and_grad`` and Adagrad; the whole step (forward,
    backward, update) is one ``mx.compile`` d function with the state as inputs/outputs."""

    name = "mlx.nn + Adagrad, step compiled"
    uses_mlx = True

    def __init__(self, weights: list[tuple[np.ndarray, np.ndarray]]) -> None:
        layers: list[mlx.nn.Module] = []
        for i, (w, b) in enumerate(weights):
            lin = mlx.nn.Linear(w.shape[1], w.shape[0])
            lin.weight, lin.bias = mx.array(w), mx.array(b)
            layers.append(lin)
            if i < len(weights) - 1:
                layers.append(mlx.nn.ReLU())
        self.model = mlx.nn.Sequential(*layers)
        self._opt = mlx.optimizers.Adagrad(learning_rate=LR, eps=EPS)
        self._opt.init(self.model.trainable_parameters())
        state = [self.model.state, self._opt.state]
        mx.eval(state)
        self._step = mlx_compiled_step(self.model, self._opt, state)
        self._state = state

    def step(self, x: mx.array, y: mx.array) -> float:
        loss = self._step(x, y)
        mx.eval(loss, self._state)
        return loss.item()


class TorchMLP:
    """torch.nn MLP with ``F.cross_entropy`` and ``torch.optim.Adagrad`` (default path)."""

    name = "torch CPU, Adagrad default"
    uses_mlx = False

    def __init__(self, weights: list[tuple[np.ndarray, np.ndarray]]) -> None:
        layers: list[torch.nn.Module] = []
        for i, (w, b) in enumerate(weights):
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if i < len(weights) - 1:
                layers.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers)
        self._opt = torch.optim.Adagrad(self.model.parameters(), lr=LR, eps=EPS)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self._opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        self._opt.step()
        return loss.item()

"""The example of the Adagrad spec, as written, plus an nn.Linear model trained against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lucid
import lucid.nn as nn
import lucid.optim as optim


def _data(n: int = 200, seed: int = 0) -> list[tuple[lucid.Tensor, lucid.Tensor]]:
    rng = np.random.default_rng(seed)
    true = np.array([2.0, -1.0, 0.5], np.float32)
    xs = rng.standard_normal((n, 8, 3)).astype(np.float32)
    return [(lucid.tensor(x), lucid.tensor(x * true)) for x in xs]


def compute_loss(output: lucid.Tensor, target: lucid.Tensor) -> lucid.Tensor:
    return ((output - target) ** 2).mean()


def test_spec_example_trains_and_round_trips_its_state() -> None:
    data = _data()

    # ---- the spec's code, verbatim apart from the names it leaves to the reader
    class MyModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.param = nn.Parameter([1.0, 2.0, 3.0])

        def forward(self, x):
            return x * self.param

    model = MyModel()
    optimizer = optim.Adagrad(
        model.parameters(), lr=0.01, eps=1e-10, weight_decay=0.01, initial_accumulator_value=0.1
    )

    losses = []
    for input, target in data:
        optimizer.zero_grad()
        output = model(input)
        loss = compute_loss(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    optimizer_state = optimizer.state_dict()
    optimizer.load_state_dict(optimizer_state)
    # ---- end of the spec's code

    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.9 * first, (first, last)
    moved = model.param.numpy() - np.array([1.0, 2.0, 3.0])
    assert np.all(np.sign(moved) == [1, -1, -1])  # each weight heads towards [2, -1, 0.5]
    state = optimizer.state[model.param]
    assert state["step"].item() == len(data)
    assert optimizer_state["state"][0]["step"].item() == len(data)
    assert optimizer_state["param_groups"][0]["initial_accumulator_value"] == 0.1


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_linear_model_matches_torch(weight_decay: float) -> None:
    """nn.Linear layers trained by lucid's Adagrad (coupled decay) and by torch's."""
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    ref = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    with torch.no_grad():
        for p, q in zip(model.parameters(), ref.parameters(), strict=True):
            q.copy_(torch.from_numpy(p.numpy()))
    kwargs = {"lr": 0.05, "weight_decay": weight_decay, "lr_decay": 0.01}
    opt = optim.Adagrad(model.parameters(), decoupled_weight_decay=False, **kwargs)
    ref_opt = torch.optim.Adagrad(ref.parameters(), **kwargs)
    for x, y in _data(50, seed=1):
        opt.zero_grad()
        compute_loss(model(x), y.sum(axis=1, keepdims=True)).backward()
        opt.step()
        ref_opt.zero_grad()
        xt, yt = torch.from_numpy(x.numpy()), torch.from_numpy(y.numpy()).sum(1, keepdim=True)
        ((ref(xt) - yt) ** 2).mean().backward()
        ref_opt.step()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        # float32 over 50 steps; lr_t in float32 here, float64 in torch (see test_adagrad)
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)

"""The smallest end-to-end fit: recover a line's coefficients with Adagrad.

Data: ``y = X w* + b* + noise`` with three features. Model: one ``nn.Linear(3, 1)``.
Loss: mean squared error. Full-batch steps; prints the recovered ``w`` and ``b``.

Run:  python examples/linear_regression.py [--steps 300]
"""

from __future__ import annotations

import argparse

import numpy as np

import lucid
from lucid import nn, optim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    w_true, b_true = np.array([2.0, -3.0, 0.5]), 4.0
    x = rng.normal(size=(256, 3))
    y = x @ w_true + b_true + 0.05 * rng.normal(size=256)
    inputs, targets = lucid.tensor(x), lucid.tensor(y[:, None])

    lucid.manual_seed(0)
    model = nn.Linear(3, 1)
    loss_fn = nn.MSELoss()
    optimizer = optim.Adagrad(model.parameters(), lr=args.lr)

    for step in range(1, args.steps + 1):
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        if step == 1 or step % 100 == 0 or step == args.steps:
            print(f"step {step:4d}  loss {loss.item():.5f}")

    def show(w: np.ndarray, b: float) -> str:
        return f"w = [{', '.join(f'{v:+.3f}' for v in w)}], b = {b:+.3f}"

    print(f"recovered {show(model.weight.numpy().ravel(), model.bias.item())}")
    print(f"true      {show(w_true, b_true)}")


if __name__ == "__main__":
    main()

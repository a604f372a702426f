"""SGD, Adam, AdamW and Adagrad on one problem: sparse, unevenly scaled features.

The problem: least squares on indicator-like features. Feature ``j`` is non-zero in a
fraction ``p_j`` of the samples (from every sample down to 1 in 200) and, when present,
has magnitude ``s_j`` (frequent features are large, rare ones small). The curvature
along feature ``j`` is about ``p_j s_j^2``, so it spans four orders of magnitude.

SGD has one step size for all coordinates, and the stiffest (frequent, large) feature
caps it near ``1 / L`` (``L`` the largest curvature); momentum helps, but the rare
features still move by a tiny fraction of their error per step. Adagrad, Adam and AdamW
scale each coordinate's step by its own gradient history, which evens the speeds out:

    Adagrad:  G_j += g_j^2,                  w_j -= lr * g_j / (sqrt(G_j) + eps)
    Adam:     m, v = EMAs of g_j and g_j^2,  w_j -= lr * m_hat / (sqrt(v_hat) + eps)
    AdamW:    Adam, and w_j -= lr * wd * w_j (decoupled weight decay)

Every optimizer is a ``lucid.optim`` class with torch's signature; all four run through
the same :func:`train` loop.

Run:  python examples/compare_optimizers.py [--steps 300] [--out PNG]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

import lucid
from lucid.nn import Parameter
from lucid.optim import SGD, Adagrad, Adam, AdamW


def make_problem(n: int, d: int, seed: int) -> tuple[lucid.Tensor, lucid.Tensor, np.ndarray]:
    """Sparse, unevenly scaled design ``X``, targets ``y = X w* + noise``, and ``w*``."""
    rng = np.random.default_rng(seed)
    frequency = np.logspace(0, np.log10(1 / 200), d)  # share of samples with feature j
    scale = np.logspace(0.5, -0.5, d)  # its magnitude when present
    x = (rng.random((n, d)) < frequency) * scale * rng.uniform(0.5, 1.5, (n, d))
    w_true = rng.normal(0.0, 1.0, d)
    y = x @ w_true + 0.01 * rng.normal(size=n)
    return lucid.tensor(x), lucid.tensor(y), w_true


def loss_fn(x: lucid.Tensor, y: lucid.Tensor, w: Parameter) -> lucid.Tensor:
    """Half the mean squared error, ``||X w - y||^2 / (2 n)``."""
    return 0.5 * ((x @ w - y) ** 2).mean()


def train(x, y, steps: int, make_optimizer) -> tuple[list[float], np.ndarray]:
    """Full-batch training of ``w`` from zero; returns the loss per step and the final ``w``."""
    w = Parameter(np.zeros(x.shape[1], dtype=np.float32))
    optimizer = make_optimizer([w])
    losses = []
    for _ in range(steps):
        w.grad = None
        loss = loss_fn(x, y, w)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, w.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--n", type=int, default=2000, help="number of samples")
    parser.add_argument("--d", type=int, default=30, help="number of features")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("examples/out/compare_optimizers.png"))
    args = parser.parse_args()

    x, y, w_true = make_problem(args.n, args.d, args.seed)
    xn = x.numpy().astype(np.float64)
    curvature = np.linalg.eigvalsh(xn.T @ xn / args.n)
    gd_lr = 1.0 / curvature[-1]  # a step that is safe along the stiffest direction
    print(f"curvature of the loss spans {curvature[0]:.1e} .. {curvature[-1]:.1e}")

    print(f"SGD lr = 1/L = {gd_lr:.3f} with momentum 0.9; Adam and AdamW lr = 0.05; "
          "Adagrad lr = 0.5")  # fmt: skip
    optimizers = {
        "SGD (momentum 0.9)": lambda ps: SGD(ps, lr=gd_lr, momentum=0.9),
        "Adam": lambda ps: Adam(ps, lr=0.05),
        "AdamW (weight decay 1e-2)": lambda ps: AdamW(ps, lr=0.05, weight_decay=1e-2),
        "Adagrad": lambda ps: Adagrad(ps, lr=0.5),
    }
    runs = {name: train(x, y, args.steps, make) for name, make in optimizers.items()}
    half = args.d // 2
    for name, (losses, w) in runs.items():
        err = np.abs(w - w_true)
        print(
            f"{name:>26}: final loss {losses[-1]:.2e}, max |w - w*|: "
            f"frequent features {err[:half].max():.3f}, rare features {err[half:].max():.3f}"
        )
    best = min(runs, key=lambda name: runs[name][0][-1])
    sgd_final = runs["SGD (momentum 0.9)"][0][-1]
    print(f"lowest final loss: {best}, {sgd_final / runs[best][0][-1]:.0f}x lower than SGD")

    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for name, (losses, w) in runs.items():
        left.semilogy(losses, label=name)
        right.semilogy(np.abs(w - w_true) + 1e-6, "o-", ms=3, label=name)
    left.set(xlabel="step", ylabel="loss (log scale)", title="Training loss")
    right.set(
        xlabel="feature (frequent, large  →  rare, small)",
        ylabel="|w - w*| after training",
        title="Where each optimizer is still wrong",
    )
    left.legend()
    right.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"saved plot to {args.out}")


if __name__ == "__main__":
    main()

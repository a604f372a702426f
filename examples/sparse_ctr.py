"""Click-through-rate prediction with sparse embeddings: a factorization machine on hashed
categorical features, trained with Adagrad on row-sparse gradients.

The data are synthetic and made here with a fixed seed: each impression has a few
categorical fields (site, ad, device, hour...), and the click probability follows a
hidden factorization machine over them. Features are hashed into one table of
``--buckets`` rows, as production CTR models do. Each step touches only the rows of the
batch's features, so ``nn.Embedding(..., sparse=True)`` gives ``lucid.SparseGrad``
gradients and Adagrad reads and writes only those rows of the table and of its state.

Run:  python examples/sparse_ctr.py            (about a minute)
      python examples/sparse_ctr.py --quick    (a few seconds)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from tqdm import tqdm

import lucid
from lucid import nn, optim
from lucid.nn import functional as F

FIELD_SIZES = (1000, 5000, 20000, 300, 24, 7, 50, 2000)  # distinct values per field


def make_clicks(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` impressions: raw values per field, shape (n, fields), and clicks (0/1).

    Values are Zipf-like (a few very common), as in real logs. The click logit is a
    hidden factorization machine over the raw values plus a bias giving about 20% clicks.
    """
    hidden = np.random.default_rng(1234)  # the same hidden model for every split
    weights = [hidden.normal(0, 0.6, size) for size in FIELD_SIZES]
    factors = [hidden.normal(0, 0.5, (size, 4)) for size in FIELD_SIZES]
    values = np.stack([np.minimum(rng.zipf(1.3, n) - 1, size - 1) for size in FIELD_SIZES], axis=1)
    linear = sum(w[values[:, f]] for f, w in enumerate(weights))
    v = np.stack([fa[values[:, f]] for f, fa in enumerate(factors)], axis=1)  # (n, F, 4)
    pairwise = 0.5 * ((v.sum(1) ** 2).sum(-1) - (v**2).sum((1, 2)))
    logit = linear + pairwise - 1.5
    clicks = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return values, clicks


def hash_features(values: np.ndarray, buckets: int) -> np.ndarray:
    """Hash (field, value) pairs into ``[0, buckets)``: one shared table for all fields."""
    field = np.arange(values.shape[1], dtype=np.uint64)
    mixed = values.astype(np.uint64) * np.uint64(2654435761) + field * np.uint64(40503)
    mixed ^= mixed >> np.uint64(13)
    return (mixed % np.uint64(buckets)).astype(np.int32)


class FactorizationMachine(nn.Module):
    r"""``logit = b + sum_i w_i + sum_{i<j} <v_i, v_j>`` over the active features ``i``
    (one per field), with the pairwise term in its O(F k) form
    ``0.5 * (|sum_i v_i|^2 - sum_i |v_i|^2)``."""

    def __init__(self, buckets: int, dim: int) -> None:
        super().__init__()
        self.weights = nn.Embedding(buckets, 1, sparse=True)
        self.factors = nn.Embedding(buckets, dim, sparse=True)
        self.bias = nn.Parameter(lucid.zeros(1))
        nn.init.zeros_(self.weights.weight)
        nn.init.normal_(self.factors.weight, std=0.01)

    def forward(self, ids: np.ndarray) -> lucid.Tensor:
        linear = self.weights(ids).sum(axis=(1, 2))
        v = self.factors(ids)  # (batch, fields, dim)
        s = v.sum(axis=1)
        pairwise = 0.5 * ((s * s).sum(axis=-1) - (v * v).sum(axis=(1, 2)))
        return linear + pairwise + self.bias


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank formula (ties get their average rank)."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse.reshape(-1)]
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(1 / (1 + np.exp(-scores.astype(np.float64))), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def predict(model: FactorizationMachine, ids: np.ndarray, batch: int) -> np.ndarray:
    with lucid.no_grad():
        return np.concatenate(
            [model(ids[i : i + batch]).numpy() for i in range(0, len(ids), batch)]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, one epoch")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--buckets", type=int, default=None, help="rows of the hashed table")
    parser.add_argument("--dim", type=int, default=8, help="factor size")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()
    n_train = 20_000 if args.quick else 400_000
    epochs = args.epochs or (1 if args.quick else 3)
    buckets = args.buckets or (1 << 14 if args.quick else 1 << 20)

    rng = np.random.default_rng(0)
    train_x, train_y = make_clicks(n_train, rng)
    test_x, test_y = make_clicks(n_train // 4, rng)
    train_ids, test_ids = hash_features(train_x, buckets), hash_features(test_x, buckets)
    print(
        f"{n_train} impressions, {len(FIELD_SIZES)} fields hashed into {buckets} rows; "
        f"click rate {train_y.mean():.3f}"
    )

    lucid.manual_seed(0)
    model = FactorizationMachine(buckets, args.dim)
    opt = optim.Adagrad(model.parameters(), lr=args.lr, initial_accumulator_value=0.1)
    base = log_loss(np.full(len(test_y), np.log(train_y.mean() / (1 - train_y.mean()))), test_y)
    print(f"test log-loss of the constant click rate: {base:.4f}")

    for epoch in range(1, epochs + 1):
        order = rng.permutation(n_train)
        total, seen, t0 = 0.0, 0, time.perf_counter()
        bar = tqdm(range(0, n_train, args.batch), desc=f"epoch {epoch}", leave=False)
        for start in bar:
            rows = order[start : start + args.batch]
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(model(train_ids[rows]), train_y[rows])
            loss.backward()
            # Reading the loss evaluates the forward pass (and its lookups of the tables)
            # now, so the step's single evaluation is the update alone and MLX can write
            # the touched rows in place instead of copying each table (see lucid.sparse).
            total += loss.item() * len(rows)
            seen += len(rows)
            opt.step()
            bar.set_postfix(loss=f"{total / seen:.4f}")
        scores = predict(model, test_ids, 4096)
        print(
            f"epoch {epoch}: train log-loss {total / seen:.4f}, test log-loss "
            f"{log_loss(scores, test_y):.4f}, test AUC {auc(scores, test_y):.4f} "
            f"({time.perf_counter() - t0:.1f} s)"
        )


if __name__ == "__main__":
    main()

"""Train the digits MLP data-parallel: DistributedDataParallel and DistributedSampler.

Every process (rank) holds the whole model and trains on its own shard of the training
images. After each backward, DDP replaces every gradient by its mean over the ranks, so
all ranks take the same step and their parameters stay identical, bit for bit. With
``--zero`` the optimizer state is sharded too (:class:`lucid.optim.ZeroRedundancyOptimizer`).

Launch (two processes on this machine; ``make demo-distributed`` does this)::

    mlx.launch -n 2 python examples/train_distributed.py

or across machines with a hostfile (see MLX's ``mlx.distributed_config``)::

    mlx.launch --hostfile hosts.json python examples/train_distributed.py

Started alone (``python examples/train_distributed.py``) it is a world of one process
and trains as ``train_digits.py`` does. Each rank prints its shard size; at the end,
each prints the test accuracy and whether all ranks hold the same parameters.
"""

from __future__ import annotations

import argparse
import time

import mlx.core as mx
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import lucid
import lucid.distributed as dist
from lucid import nn, optim
from lucid.nn.parallel import DistributedDataParallel
from lucid.utils.data import DataLoader, DistributedSampler, TensorDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32, help="global: split over ranks")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zero", action="store_true", help="shard Adagrad's state (ZeRO-1)")
    args = parser.parse_args()
    start = time.perf_counter()

    dist.init()
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        parser.error(f"--batch-size {args.batch_size} must be a multiple of the {world} ranks")

    digits = load_digits()  # the same split on every rank (same random_state)
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, stratify=digits.target, random_state=args.seed
    )
    dataset = TensorDataset(x_train, y_train)
    sampler = DistributedSampler(dataset, shuffle=True, seed=args.seed, drop_last=True)
    local_batch = args.batch_size // world
    loader = DataLoader(dataset, local_batch, sampler=sampler, drop_last=True)
    print(
        f"rank {rank} of {world}: shard of {len(sampler)} of {len(dataset)} training images, "
        f"{len(loader)} batches of {local_batch} per epoch",
        flush=True,
    )

    lucid.manual_seed(args.seed + rank)  # different on purpose: DDP broadcasts rank 0's
    model = DistributedDataParallel(
        nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    )
    if args.zero:
        optimizer = optim.ZeroRedundancyOptimizer(model.parameters(), optim.Adagrad, lr=args.lr)
    else:
        optimizer = optim.Adagrad(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()

    for epoch in range(1, args.epochs + 1):
        sampler.set_epoch(epoch)  # a new order, the same on every rank
        model.train()
        losses = []
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()  # gradients: the mean over ranks
            optimizer.step()
            losses.append(loss.item())
        mean = dist.all_reduce(lucid.tensor(np.mean(losses)), op="mean").item()
        if rank == 0:
            print(f"epoch {epoch:2d}  train loss {mean:.4f} (mean over ranks)", flush=True)

    model.eval()
    with lucid.no_grad():
        logits = model(lucid.tensor(x_test))
    accuracy = float((logits.numpy().argmax(axis=1) == y_test).mean())
    flat = mx.concatenate([p.data.reshape(-1) for p in model.parameters()])
    spread = dist.all_reduce(flat, op="max") - dist.all_reduce(flat, op="min")
    same = mx.max(mx.abs(spread)).item() == 0
    print(
        f"rank {rank}: test accuracy {accuracy:.2%}; parameters identical on all ranks: {same}; "
        f"done in {time.perf_counter() - start:.1f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()

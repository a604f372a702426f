"""Train an MLP on scikit-learn's 8x8 digits with Adagrad; checkpoint, reload, resume.

What it shows, in order:

1. Mini-batch training with :class:`lucid.utils.data.DataLoader` and
   :class:`lucid.optim.Adagrad`, each step one compiled call (:func:`lucid.compile`;
   ``--eager`` runs it op by op), a tqdm bar per epoch with the running loss. The
   learning rate follows a linear warm-up then a cosine decay, stepped every batch
   (:class:`~lucid.optim.lr_scheduler.SequentialLR` of ``LinearLR`` and
   ``CosineAnnealingLR``, as in PyTorch); the compiled step never retraces for it.
2. Half-way, the model's, the optimizer's and the scheduler's state dicts go to disk
   with :func:`lucid.save`; then a *fresh* model, optimizer and scheduler (different
   random init) load them with :func:`lucid.load`, in PyTorch's order (optimizer, then
   scheduler). The reloaded states equal the saved ones, the reloaded model has the
   saved loss, and one more step on the same batch gives the same loss and parameters
   in the original and the reloaded set.
3. Training goes on from the reloaded set; the test accuracy is printed and the loss
   curve (with the reload marked) and the learning rate are saved side by side as a PNG.

The data ship with scikit-learn (1797 images, no download). Runs in well under a
minute on a laptop CPU.

Run:  python examples/train_digits.py [--epochs 20] [--out examples/out/digits_loss.png]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import lucid
from lucid import nn, optim
from lucid.optim import lr_scheduler
from lucid.utils.data import DataLoader, TensorDataset


def make_model(hidden: int, seed: int) -> nn.Module:
    lucid.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def make_optimizer(model: nn.Module, lr: float) -> optim.Adagrad:
    return optim.Adagrad(model.parameters(), lr=lr)


def make_scheduler(optimizer: optim.Optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up from 1% of the rate over ``warmup_steps``, then a cosine decay to
    zero over the remaining steps, one scheduler step per batch."""
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup_steps)
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps)
    return lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


def make_train_step(model, optimizer, loss_fn, compiled: bool = True):
    """One training step, written as in PyTorch. With ``compiled``, :func:`lucid.compile`
    runs the forward, the backward and the optimizer's update as one compiled call (the
    first call traces; the scheduler's new rates enter as inputs, so nothing retraces).
    It helps here: on this MLP it is 2-3x faster than the eager step."""

    def train_step(x: lucid.Tensor, y: lucid.Tensor) -> lucid.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return lucid.compile(train_step, state=[model, optimizer]) if compiled else train_step


def train_epoch(model, train_step, scheduler, loader, desc: str, rates: list[float]):
    """One pass over ``loader``; returns the loss of every step and appends the learning
    rate each step used to ``rates``."""
    model.train()
    losses: list[float] = []
    with tqdm(loader, desc=desc, leave=False, dynamic_ncols=True) as bar:
        for x, y in bar:
            rates.append(scheduler.get_last_lr()[0])
            loss = train_step(x, y)
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.4f}", refresh=False)
    return losses


@lucid.no_grad()
def evaluate(model, loss_fn, x: lucid.Tensor, y: lucid.Tensor) -> tuple[float, float]:
    """(mean loss, accuracy) over the whole of ``x``."""
    model.eval()
    logits = model(x)
    accuracy = float((logits.numpy().argmax(axis=1) == y.numpy()).mean())
    return loss_fn(logits, y).item(), accuracy


def same_tree(a: Any, b: Any) -> bool:
    """Structural equality of state dicts: same keys, lists, scalars and array values."""
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and a.keys() == b.keys() and all(same_tree(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return (
            isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(same_tree(u, v) for u, v in zip(a, b, strict=True))
        )
    if isinstance(a, mx.array):
        return isinstance(b, mx.array) and a.dtype == b.dtype and mx.array_equal(a, b).item()
    return a == b


def plot(losses: list[float], rates: list[float], steps_per_epoch: int, resumed_at: int,
         path: Path) -> None:  # fmt: skip
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(losses) + 1)
    k = steps_per_epoch
    epoch_means = np.array(losses[: len(losses) // k * k]).reshape(-1, k).mean(axis=1)
    fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    ax.plot(steps, losses, lw=0.6, alpha=0.5, label="loss per step")
    ax.plot(np.arange(1, len(epoch_means) + 1) * k, epoch_means, "o-", ms=3, label="epoch mean")
    ax.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="MLP on digits, Adagrad")
    ax_lr.plot(steps, rates, color="C2")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="warm-up, then cosine (SequentialLR)")
    for a in (ax, ax_lr):
        a.axvline(resumed_at, color="k", ls="--", lw=1, label="saved, reloaded, resumed")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="total epochs (>= 1)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eager", action="store_true", help="run the step without lucid.compile")
    parser.add_argument("--out", type=Path, default=Path("examples/out/digits_loss.png"))
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="default: <folder of --out>/checkpoints/..."
    )
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1; got {args.epochs}")
    checkpoint = args.checkpoint or args.out.parent / "checkpoints" / "digits.ckpt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # pixel intensities 0..16 -> 0..1
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, stratify=digits.target, random_state=args.seed
    )
    # drop_last: a last batch of 3 images would make a noisy final step every epoch
    dataset = TensorDataset(x_train, y_train)
    loader = DataLoader(dataset, args.batch_size, shuffle=True, drop_last=True, seed=args.seed)
    train_x, train_y = lucid.tensor(x_train), lucid.tensor(y_train)
    test_x, test_y = lucid.tensor(x_test), lucid.tensor(y_test)
    print(f"digits: {len(x_train)} train / {len(x_test)} test images, {len(loader)} batches/epoch")

    loss_fn = nn.CrossEntropyLoss()
    model = make_model(args.hidden, args.seed)
    optimizer = make_optimizer(model, args.lr)
    # every batch of every epoch, and the one extra step after the reload
    total_steps = args.epochs * len(loader) + 1
    warmup_steps = max(1, min(len(loader), total_steps // 5))
    scheduler = make_scheduler(optimizer, total_steps, warmup_steps)
    train_step = make_train_step(model, optimizer, loss_fn, compiled=not args.eager)
    history: list[float] = []
    rates: list[float] = []
    save_after = max(1, args.epochs // 2)

    # ---- first half
    for epoch in range(1, save_after + 1):
        desc = f"epoch {epoch}/{args.epochs}"
        history += train_epoch(model, train_step, scheduler, loader, desc, rates)
        print(f"epoch {epoch:2d}  train loss {np.mean(history[-len(loader) :]):.4f}")

    # ---- checkpoint, then reload into fresh objects
    saved_loss, _ = evaluate(model, loss_fn, train_x, train_y)
    lucid.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": save_after,
        },
        checkpoint,
    )
    print(f"saved checkpoint after epoch {save_after} to {checkpoint}")
    print(f"  train loss right before saving:   {saved_loss:.6f}")

    fresh_model = make_model(args.hidden, args.seed + 1)  # a different init, on purpose
    fresh_optimizer = make_optimizer(fresh_model, args.lr)
    fresh_scheduler = make_scheduler(fresh_optimizer, total_steps, warmup_steps)
    fresh_loss, _ = evaluate(fresh_model, loss_fn, train_x, train_y)
    print(f"  fresh model, before loading:      {fresh_loss:.6f}")
    ckpt = lucid.load(checkpoint)
    fresh_model.load_state_dict(ckpt["model"])
    fresh_optimizer.load_state_dict(ckpt["optimizer"])  # PyTorch's order: the optimizer,
    fresh_scheduler.load_state_dict(ckpt["scheduler"])  # then the scheduler
    reloaded_loss, _ = evaluate(fresh_model, loss_fn, train_x, train_y)
    print(f"  fresh model, after loading:       {reloaded_loss:.6f}")
    same = same_tree(fresh_optimizer.state_dict(), optimizer.state_dict())
    print(f"  reloaded optimizer state equals the saved one: {same}")
    same = same_tree(fresh_scheduler.state_dict(), scheduler.state_dict())
    print(f"  reloaded scheduler state equals the saved one: {same}")
    print(f"  learning rate at the reload: {fresh_scheduler.get_last_lr()[0]:.6f}")

    # one more step on the same batch, from the original and from the reloaded pair;
    # training then carries on from the reloaded pair, this step included
    x0, y0 = next(iter(loader))
    one_step = []
    pairs = ((model, optimizer, scheduler), (fresh_model, fresh_optimizer, fresh_scheduler))
    for m, opt, sched in pairs:
        m.train()
        opt.zero_grad()
        loss = loss_fn(m(x0), y0)
        loss.backward()
        opt.step()
        sched.step()
        one_step.append(evaluate(m, loss_fn, train_x, train_y)[0])
    gap = max(
        float(np.abs(p.numpy() - q.numpy()).max())
        for p, q in zip(model.parameters(), fresh_model.parameters(), strict=True)
    )
    print(
        f"  one more step, original vs reloaded: train loss {one_step[0]:.6f} vs "
        f"{one_step[1]:.6f}, max parameter difference {gap:.1e}"
    )
    # carry on with the reloaded set
    model, optimizer, scheduler = fresh_model, fresh_optimizer, fresh_scheduler
    train_step = make_train_step(model, optimizer, loss_fn, compiled=not args.eager)
    resumed_at = len(history)

    # ---- second half
    for epoch in range(ckpt["epoch"] + 1, args.epochs + 1):
        desc = f"epoch {epoch}/{args.epochs}"
        history += train_epoch(model, train_step, scheduler, loader, desc, rates)
        print(f"epoch {epoch:2d}  train loss {np.mean(history[-len(loader) :]):.4f}")

    test_loss, test_acc = evaluate(model, loss_fn, test_x, test_y)
    plot(history, rates, len(loader), resumed_at, args.out)
    what = "the eager step's update" if args.eager else "the compiled training step"
    traces = optimizer.trace_count if args.eager else train_step.trace_count
    print(f"{what} traced {traces} time(s) after the reload, over {len(rates)} rates in all")
    print(f"test loss {test_loss:.4f}  test accuracy {test_acc:.2%}")
    print(f"saved loss curve to {args.out}")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

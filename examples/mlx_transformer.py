"""A character-level transformer written in ``mlx.nn``, trained by ``lucid.optim.AdamW``.

The model is plain MLX: an embedding, learned positions, two
``mlx.nn.TransformerEncoderLayer`` blocks (multi-head self-attention under a causal mask,
then an MLP, each with a pre-norm and a residual) and a linear head over the characters.
Gradients come from ``mlx.nn.value_and_grad``, as in any MLX script. Only the
optimizer is lucid's, and switching to it is one line::

    opt = mlx.optimizers.AdamW(learning_rate=3e-3)                       # before
    opt = lucid.optim.AdamW(model.trainable_parameters(), lr=3e-3)       # after
    ...
    opt.update(model, grads)                                             # unchanged

Here the parameters go in two groups, built by a predicate on each ``(path, array)``:
the 1-D ones (biases and LayerNorm scales and shifts) get no weight decay, the
matrices get 0.1. The learning rate is a schedule, a plain function of the step
(linear warm-up, then cosine decay). ``--save`` writes the model and the optimizer's
state (PyTorch's layout) with ``lucid.save``: a safetensors file, no pickle.

The text is built in (no download); the model learns its spelling and its refrains.

Run:  python examples/mlx_transformer.py [--steps 300] [--save ckpt.lucid]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

import lucid
import lucid.optim

TEXT = """\
The lighthouse keeper counts the waves at night, and the waves count him back.
One for the rock, two for the rain, three for the ship that never came.
He writes the numbers in a book with a green cover, and the book grows heavy.
In the morning the gulls read the book aloud, and they get the numbers wrong.
One for the rock, two for the rain, three for the ship that never came.
The keeper laughs, and trims the wick, and climbs the stair of ninety steps.
At the top the lamp turns slowly, round and round, a patient yellow eye.
The sea is wide and the sea is grey and the sea is never the same sea twice.
One for the rock, two for the rain, three for the ship that never came.
When the fog comes in he rings the bell, and the bell rings out across the bay.
A fisherman hears it and turns his boat, and the boat comes safely home.
The keeper writes a four in the book: four for the boat that came home.
One for the rock, two for the rain, three for the ship, four for the boat.
"""

CONTEXT = 32
BATCH = 16
DIMS = 64
HEADS = 4
LAYERS = 2


class CharLM(nn.Module):
    """Next-character model: ``logits[b, t]`` scores the character after ``x[b, :t+1]``."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, DIMS)
        self.position = nn.Embedding(CONTEXT, DIMS)
        self.blocks = [nn.TransformerEncoderLayer(DIMS, HEADS, 4 * DIMS) for _ in range(LAYERS)]
        self.norm = nn.LayerNorm(DIMS)
        self.head = nn.Linear(DIMS, vocab)

    def __call__(self, x: mx.array) -> mx.array:
        t = x.shape[1]
        h = self.embed(x) + self.position(mx.arange(t))
        mask = nn.MultiHeadAttention.create_additive_causal_mask(t)
        for block in self.blocks:
            h = block(h, mask)
        return self.head(self.norm(h))


def loss_fn(model: CharLM, x: mx.array, y: mx.array) -> mx.array:
    return nn.losses.cross_entropy(model(x), y, reduction="mean")


def batches(ids: np.ndarray, rng: np.random.Generator):
    """Random windows of the text: inputs and the same windows shifted by one."""
    while True:
        start = rng.integers(0, len(ids) - CONTEXT - 1, BATCH)
        window = np.stack([ids[s : s + CONTEXT + 1] for s in start])
        yield mx.array(window[:, :-1]), mx.array(window[:, 1:])


def schedule(peak: float, steps: int, warmup: int):
    """``lr(step)``: linear warm-up to ``peak``, then cosine decay to ``peak / 10``."""

    def lr(step: int) -> float:
        if step < warmup:
            return peak * (step + 1) / warmup
        done = (step - warmup) / max(1, steps - warmup)
        return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * min(done, 1.0))))

    return lr


def sample(model: CharLM, chars: list[str], prompt: str, n: int, seed: int) -> str:
    """``n`` characters after ``prompt``, drawn from the model at temperature 0.7."""
    key = mx.random.key(seed)
    ids = [chars.index(c) for c in prompt]
    for _ in range(n):
        logits = model(mx.array([ids[-CONTEXT:]]))[0, -1]
        key, sub = mx.random.split(key)
        ids.append(mx.random.categorical(logits / 0.7, key=sub).item())
    return "".join(chars[i] for i in ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--save", type=Path, help="write the model and optimizer state here")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error(f"--steps must be at least 2; got {args.steps}")

    chars = sorted(set(TEXT))
    ids = np.array([chars.index(c) for c in TEXT], dtype=np.int32)
    mx.random.seed(0)
    model = CharLM(len(chars))
    mx.eval(model.parameters())

    # the one lucid-specific part: no weight decay on biases and norms (the 1-D arrays)
    groups = lucid.optim.param_groups(
        model.trainable_parameters(), [(lambda path, a: a.ndim < 2, {"weight_decay": 0.0})]
    )
    lr = schedule(3e-3, args.steps, warmup=max(1, args.steps // 10))
    opt = lucid.optim.AdamW(groups, lr=lr, weight_decay=0.1)
    sizes = [len(g["params"]) for g in opt.param_groups]
    count = sum(a.size for _, a in tree_flatten(model.trainable_parameters()))
    print(f"{len(chars)} characters, {len(TEXT)} of text; model: {count:,} parameters in "
          f"{sum(sizes)} arrays ({sizes[0]} with weight decay, {sizes[1]} without)")  # fmt: skip

    value_and_grad = nn.value_and_grad(model, loss_fn)
    data = batches(ids, np.random.default_rng(0))
    every = max(1, args.steps // 10)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(args.steps):
        x, y = next(data)
        loss, grads = value_and_grad(model, x, y)
        opt.update(model, grads)  # evaluates the new parameters
        losses.append(loss.item())
        if step % every == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {losses[-1]:.3f}  lr {lr(step):.2e}")
    seconds = time.perf_counter() - t0

    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    print(f"loss fell from {first:.3f} to {last:.3f} (mean of the first and last 5 steps) "
          f"in {seconds:.1f} s, {1e3 * seconds / args.steps:.0f} ms a step")  # fmt: skip
    print("sample:", repr(sample(model, chars, "One for the ", 60, seed=1)))
    if args.save is not None:
        lucid.save({"model": dict(tree_flatten(model.parameters())),
                    "optimizer": opt.state_dict()}, args.save)  # fmt: skip
        print(f"saved the model and the optimizer state to {args.save}")


if __name__ == "__main__":
    main()

"""What lucid's index checks cost (lucid/bounds.py): host indices against lazy ones.

The variants of one case run interleaved in one process (blocks of steps, round-robin,
median per variant), so that a shared machine's load drifts over all of them alike. Not
part of ``make bench``:

    PYTHONPATH=$PWD python benchmarks/bounds_cost.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import mlx.core as mx
import numpy as np

import lucid
from lucid import bounds, nn, optim
from lucid.utils.data import DataLoader, TensorDataset

BLOCK, ROUNDS = 40, 9


def interleaved(loops: dict[str, Callable[[int], None]], block: int = BLOCK) -> dict[str, float]:
    """Median milliseconds per call of each loop, timed in alternating blocks."""
    for loop in loops.values():
        loop(5)  # warm: compile, page in
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(ROUNDS):
        for name, loop in loops.items():
            t0 = time.perf_counter()
            loop(block)
            times[name].append((time.perf_counter() - t0) * 1e3 / block)
    return {name: float(np.median(t)) for name, t in times.items()}


def sparse_loops(read: bool) -> dict[str, Callable[[int], None]]:
    """200k x 64 sparse embedding, 512 indices a step, Adagrad."""
    rng = np.random.default_rng(0)
    lucid.manual_seed(0)
    emb = nn.Embedding(200_000, 64, sparse=True)
    opt = optim.Adagrad(emb.parameters(), lr=0.1)
    host = [rng.integers(0, 200_000, 512).astype(np.int32) for _ in range(16)]
    evaluated = [mx.array(h) for h in host]
    mx.eval(emb.weight.data, *evaluated)
    picks = {
        "numpy (host check)": lambda k: host[k % 16],
        "mx.array (lazy check)": lambda k: evaluated[k % 16],
        "pending mx gather (lazy check)": lambda k: evaluated[k % 16][mx.arange(512)],
    }

    def make(pick: Callable[[int], object]) -> Callable[[int], None]:
        def loop(n: int) -> None:
            for k in range(n):
                opt.zero_grad()
                loss = emb(pick(k)).mean()
                loss.backward()
                if read:
                    loss.item()
                opt.step()

        return loop

    return {name: make(pick) for name, pick in picks.items()}


def mlp_loops(read: bool) -> dict[str, Callable[[int], None]]:
    """MLP 64-128-10 on batches of 128, cross-entropy, Adagrad."""
    rng = np.random.default_rng(0)
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adagrad(model.parameters(), lr=0.1)
    x = rng.standard_normal((2048, 64)).astype(np.float32)
    y = rng.integers(0, 10, 2048).astype(np.int64)
    xs = [mx.array(x[i * 128 : (i + 1) * 128]) for i in range(16)]
    host = [y[i * 128 : (i + 1) * 128] for i in range(16)]
    lazy = [mx.array(h) for h in host]  # evaluated, but lucid cannot know: the lazy path
    mx.eval(*xs, *lazy)
    loader = DataLoader(TensorDataset(x, y), batch_size=128)
    batches = iter(())

    def next_batch(k: int) -> tuple:
        nonlocal batches
        batch = next(batches, None)
        if batch is None:
            batches = iter(loader)
            batch = next(batches)
        return batch

    picks = {
        "numpy targets (host check)": lambda k: (xs[k % 16], host[k % 16]),
        "mx.array targets (lazy check)": lambda k: (xs[k % 16], lazy[k % 16]),
        "DataLoader batch (known range)": next_batch,
    }

    def make(pick: Callable[[int], tuple]) -> Callable[[int], None]:
        def loop(n: int) -> None:
            for k in range(n):
                xb, yb = pick(k)
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                if read:
                    loss.item()
                opt.step()

        return loop

    return {name: make(pick) for name, pick in picks.items()}


def micro_loops() -> dict[str, Callable[[int], None]]:
    """The parts alone, on 512 indices into 200k rows."""
    host = np.random.default_rng(0).integers(0, 200_000, 512).astype(np.int32)
    source = mx.array(host)
    mx.eval(source)

    def host_check(n: int) -> None:
        for _ in range(n):
            bounds.checked_indices(host, 200_000, "bench", "a table")

    def lazy_register(n: int) -> None:  # the clamp and flag graph, then drop it
        for _ in range(n):
            bounds.checked_indices(source, 200_000, "bench", "a table")
            bounds._pending.clear()

    def lazy_check(n: int) -> None:  # ... plus the extra evaluation of the flag
        for _ in range(n):
            bounds.checked_indices(source, 200_000, "bench", "a table")
            bounds.check_pending()

    def eval_overhead(n: int) -> None:  # any mx.eval of one tiny op, for scale
        for _ in range(n):
            mx.eval(source[:1] + 1)

    return {
        "host check (numpy min/max)": host_check,
        "lazy: clamp + flag, no eval": lazy_register,
        "lazy: clamp + flag + check_pending": lazy_check,
        "mx.eval of one tiny op": eval_overhead,
    }


def main() -> None:
    for name, ms in interleaved(micro_loops(), block=500).items():
        print(f"micro, 512 indices, {name:36s}: {ms * 1e3:7.1f} us")
    for read in (True, False):
        for name, ms in interleaved(sparse_loops(read)).items():
            print(f"sparse 200k x 64, 512 ids, loss read={read!s:5s}, {name:32s}: {ms:6.3f} ms")
    for read in (True, False):
        for name, ms in interleaved(mlp_loops(read)).items():
            print(f"MLP 64-128-10 b=128 CE, loss read={read!s:5s}, {name:32s}: {ms:6.3f} ms")


if __name__ == "__main__":
    main()

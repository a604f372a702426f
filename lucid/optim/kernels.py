"""How a compiled step is laid out on the device: kernel boundaries and streams."""

from __future__ import annotations

import mlx.core as mx

__all__ = ["own_kernel", "fence", "SPLIT_ABOVE_BYTES", "STREAMS", "spread", "job_streams"]


def own_kernel(x: mx.array) -> mx.array:
    """``x`` unchanged, but computed by a kernel of its own inside ``mx.compile``.

    A compiled rule that returns both a new parameter and a new state fuses them into
    one two-output kernel, and MLX gives such a kernel fresh output buffers instead of
    reusing its inputs' (measured, 16M float32: +128 MB per step, and ~33 ms of page
    faults per fresh 64 MB array on Linux). A no-copy reshape between the two ends the
    fusion: each output then comes from a single-output kernel that writes over its
    input's buffer (0 MB extra), at the cost of reading the new state once more.
    """
    return x.reshape(1, -1).reshape(x.shape)


#: arrays of more bytes than this end their fused kernel at a :func:`fence`; smaller ones
#: stay fused. A fused kernel that returns both a new parameter and a new state gets fresh
#: output buffers (MLX donates no input to a multi-output kernel one of whose outputs it
#: also consumes), and split kernels read the new state once more. Fresh buffers are cheap
#: while MLX's buffer cache (32 MiB by default) can hold the last step's two freed arrays,
#: and page-fault beyond: so the bound is half the cache. Measured on Adagrad, one float32
#: tensor, MLX 0.32 CPU, ms per step fused / split / compiled mlx.optimizers, in one
#: process: 1M 2.01 / 2.35 / 2.03, 2M 4.37 / 5.13 / 4.23, 3M 6.54 / 7.78 / 6.55,
#: 4M 8.86 / 12.88 / 8.83, 8M 28.2 / 21.3 / 28.4.
SPLIT_ABOVE_BYTES = 16 << 20


def fence(x: mx.array) -> mx.array:
    """Where a rule's new state value is complete. The machinery decides, by size, whether
    it becomes a kernel boundary (:func:`own_kernel`, above :data:`SPLIT_ABOVE_BYTES`) or the
    kernel stays fused; the rule's values are the same either way."""
    return own_kernel(x) if x.nbytes > SPLIT_ABOVE_BYTES else x


#: streams a step spreads its updates over: the device's default stream and STREAMS - 1
#: more. MLX's CPU backend runs each stream on one thread, so two streams use both cores
#: of a small machine (measured on set B, 100 tensors: 22.7 ms on one stream, 12.9 ms on
#: two); on a GPU they overlap kernels.
STREAMS = 2
_streams: dict[tuple[str, int], list[mx.Stream]] = {}


def spread(sizes: list[int]) -> list[tuple[mx.Stream, list[int]]]:
    """Assign jobs (by size) to streams, largest first, each to the least loaded stream."""
    device = mx.default_device()
    streams = _streams.get((str(device), STREAMS))
    if streams is None:
        extra = [mx.new_stream(device) for _ in range(STREAMS - 1)]
        streams = _streams[(str(device), STREAMS)] = [mx.default_stream(device), *extra]
    load = [0] * len(streams)
    assigned: list[list[int]] = [[] for _ in streams]
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        k = load.index(min(load))
        load[k] += sizes[i]
        assigned[k].append(i)
    return [(s, sorted(a)) for s, a in zip(streams, assigned, strict=True) if a]


def job_streams(sizes: list[int]) -> list[mx.Stream]:
    """The stream :func:`spread` gives each job, in job order (memoised: a step asks for
    the same sizes every time, and the assignment costs ~3 µs of a small step)."""
    key = (str(mx.default_device()), tuple(sizes))
    found = _assigned.get(key)
    if found is None:
        found = [None] * len(sizes)  # type: ignore[list-item]
        for stream, indices in spread(sizes):
            for i in indices:
                found[i] = stream
        if len(_assigned) >= 256:
            _assigned.clear()
        _assigned[key] = found
    return list(found)


_assigned: dict[tuple, list[mx.Stream]] = {}

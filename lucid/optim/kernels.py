"""How a compiled step is laid out on the device: kernel boundaries and streams."""

from __future__ import annotations

import mlx.core as mx

__all__ = ["own_kernel", "STREAMS", "spread"]


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

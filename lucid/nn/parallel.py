"""DistributedDataParallel: every rank trains the same model on its own part of a batch.

After ``loss.backward()`` through the wrapped model, each parameter's ``.grad`` is the
mean of the ranks' gradients,

.. math:: g = \\frac{1}{N} \\sum_{r=0}^{N-1} g_r,

so that with equal local batch sizes every rank takes the step that one process would
take on the whole global batch. The reduction is lazy: the backward only adds the
all-reduce to the graph, and it runs inside the optimizer step's one ``mx.eval``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import mlx.core as mx

from .. import distributed as dist
from .. import tensor as _tensor
from ..sparse import SparseGrad
from .module import IncompatibleKeys, Module
from .parameter import Parameter

__all__ = ["DistributedDataParallel"]

# Gradients travel in flat buckets of at most this many bytes, one all-sum each, in
# parameter order. Measured (`python benchmarks/distributed.py --sweep`: 2 ranks, ring
# over 127.0.0.1, set B = 100 tensors, 10.2M float32 = 38.8 MiB, median of 20 calls
# taking turns; one 2-core machine at load 4.5, so +-20%): one all-sum per tensor 103 ms,
# 1 MiB buckets 99 ms, 4 MiB 126 ms, 25 MiB 85-88 ms, everything in one bucket 77 ms;
# mlx.nn.average_gradients (32 MiB) 85 ms. Fewer, larger collectives win; 25 MiB (torch's
# default too) is within the noise of one bucket and bounds the flat copy's size.
BUCKET_BYTES = 25 << 20


class DistributedDataParallel(Module):
    """Wrap ``module`` so that its gradients are averaged over all ranks after backward.

    At wrap time every parameter and buffer is broadcast from rank 0 (one evaluation),
    so all ranks start identical. ``forward`` is ``module``'s. ``state_dict()`` and
    ``load_state_dict()`` are the wrapped module's, with no ``module.`` prefix, so a
    checkpoint loads into the plain model.

    Every backward that reaches any of the module's parameters reduces all of them, in
    flat buckets of ``bucket_cap_mb`` MiB (dense gradients, one all-sum each); a
    parameter that this rank's graph did not reach contributes zeros (so every rank runs
    the same collectives) and then has a zero gradient. A row-sparse gradient
    (:class:`lucid.SparseGrad`, from ``nn.Embedding(sparse=True)``) stays sparse: its
    rows and indices are all-gathered (N times the entries, values divided by N). The
    entry counts are exchanged first, a small evaluation; ranks with fewer entries pad
    with zero rows at one of their own indices, which changes no sum.

    Since the all-reduces are lazy, every rank must evaluate the same gradients: an
    optimizer over the same parameters on every rank does (ZeroRedundancyOptimizer,
    whose ranks own different parameters, evaluates all gradients first). A rank that
    evaluates a bucket the others skip pairs the wrong collectives.

    Differs from torch: no ``no_sync()``, ``find_unused_parameters`` or
    ``broadcast_buffers`` (buffers are broadcast once, at wrap time); the reduction
    happens when the backward ends, not overlapped with it.
    """

    def __init__(self, module: Module, bucket_cap_mb: float = BUCKET_BYTES / 2**20) -> None:
        if not isinstance(module, Module):
            raise TypeError(
                f"DistributedDataParallel: module must be an nn.Module; got {type(module).__name__}"
            )
        if isinstance(bucket_cap_mb, bool) or not (
            isinstance(bucket_cap_mb, (int, float)) and bucket_cap_mb > 0
        ):
            raise ValueError(
                f"DistributedDataParallel: bucket_cap_mb must be a positive number; got "
                f"{bucket_cap_mb!r}"
            )
        super().__init__()
        self.module = module
        self.bucket_bytes = int(bucket_cap_mb * 2**20)
        self._params = [p for p in module.parameters() if p.requires_grad]
        self._ids = {id(p) for p in self._params}
        if dist.get_world_size() == 1:  # a world of one: nothing to broadcast or reduce
            return
        _broadcast_state(module)
        ref = weakref.ref(self)

        def hook(leaf_grads: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
            ddp = ref()
            if ddp is None:
                _tensor._leaf_grad_hooks.remove(hook)
                return leaf_grads
            return ddp._reduce(leaf_grads)

        _tensor._leaf_grad_hooks.append(hook)

    @property
    def world_size(self) -> int:
        return dist.get_world_size()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def state_dict(self) -> dict[str, mx.array]:
        return self.module.state_dict()

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        return self.module.load_state_dict(state_dict, strict=strict)

    # ------------------------------------------------------------------ the reduction
    def _reduce(self, leaf_grads: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        """Replace the gradients of this module's parameters by their mean over ranks."""
        mine = {id(leaf): g for leaf, g in leaf_grads if id(leaf) in self._ids}
        n = dist.get_world_size()
        if not mine or n == 1:
            return leaf_grads
        dist._enter("DistributedDataParallel's gradient all-reduce")
        group = dist._world()
        dense: list[tuple[Parameter, mx.array]] = []
        sparse: list[tuple[Parameter, SparseGrad]] = []
        for p in self._params:
            g = mine.get(id(p))
            if isinstance(g, SparseGrad):
                sparse.append((p, g))
            else:
                g = mx.zeros(p.shape, p.dtype) if g is None else g.astype(p.dtype)
                dense.append((p, g))
        reduced: dict[int, Any] = {}
        for bucket in _buckets(dense, self.bucket_bytes):
            flat = mx.concatenate([g.reshape(-1) for _, g in bucket])
            total = mx.distributed.all_sum(flat, group=group) / n
            offset = 0
            for p, g in bucket:
                reduced[id(p)] = total[offset : offset + g.size].reshape(g.shape)
                offset += g.size
        if sparse:
            reduced.update(_gather_rows(sparse, group))
        others = [(leaf, g) for leaf, g in leaf_grads if id(leaf) not in self._ids]
        return others + [(p, reduced[id(p)]) for p in self._params]

    def extra_repr(self) -> str:
        return f"world_size={self.world_size}, bucket_cap_mb={self.bucket_bytes / 2**20:g}"


def _buckets(items: list[tuple[Parameter, mx.array]], cap: int) -> Iterator[list]:
    """Consecutive runs of gradients of one dtype, each at most ``cap`` bytes (a larger
    gradient alone)."""
    bucket: list[tuple[Parameter, mx.array]] = []
    size = 0
    for p, g in items:
        if bucket and (size + g.nbytes > cap or g.dtype != bucket[0][1].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append((p, g))
        size += g.nbytes
    if bucket:
        yield bucket


def _gather_rows(
    sparse: list[tuple[Parameter, SparseGrad]], group: mx.distributed.Group
) -> dict[int, SparseGrad]:
    """All-gather each row-sparse gradient's entries; values divided by the world size."""
    n = group.size()
    counts = mx.distributed.all_gather(mx.array([g.nnz for _, g in sparse]), group=group)
    most = mx.max(counts.reshape(n, len(sparse)), axis=0).tolist()
    out = {}
    for (p, g), top in zip(sparse, most, strict=True):
        index, values = g.indices.astype(mx.int32), g.values.astype(p.dtype)
        pad = top - g.nnz
        if pad:  # zero rows at an index this rank already touches: no sum changes
            at = index[:1] if g.nnz else mx.zeros((1,), mx.int32)
            index = mx.concatenate([index, mx.broadcast_to(at, (pad,))])
            values = mx.concatenate([values, mx.zeros((pad, values.shape[1]), values.dtype)])
        all_index = mx.distributed.all_gather(index, group=group)
        all_values = mx.distributed.all_gather(values, group=group) / n
        out[id(p)] = SparseGrad._trusted(all_index, all_values, g.shape)
    return out


def _broadcast_state(module: Module) -> None:
    """Every parameter and buffer takes rank 0's value (flat buckets, one evaluation)."""
    dist._enter("DistributedDataParallel's broadcast from rank 0")
    group = dist._world()
    tensors = list(module.parameters()) + list(module.buffers())
    rank0 = dist.get_rank() == 0
    items = [(t, t.data if rank0 else mx.zeros_like(t.data)) for t in tensors]
    new = []
    for bucket in _buckets(items, BUCKET_BYTES):
        flat = mx.distributed.all_sum(
            mx.concatenate([x.reshape(-1) for _, x in bucket]), group=group
        )
        offset = 0
        for t, x in bucket:
            t.data = flat[offset : offset + x.size].reshape(x.shape)
            offset += x.size
            new.append(t.data)
    mx.eval(new)

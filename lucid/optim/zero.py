"""ZeroRedundancyOptimizer: ZeRO stage 1, each rank keeps the optimizer state of a shard.

The parameters are split between the ranks whole (as torch does, so that a rule that
needs a whole matrix, such as Muon or Adafactor, still sees one): largest first, each to
the rank that holds the fewest elements so far. Each rank runs a local optimizer of the
given class over its shard only, so its state is about 1/N of the whole. A step is:

0. every gradient is evaluated (one evaluation on every rank: the lazy all-reduces of
   DDP run there, the same ones on every rank);
1. the local optimizer updates the shard (its own compiled step and evaluation);
2. every rank's new shard is all-gathered (one flat all-gather per dtype, each rank's
   part padded to the longest), and each parameter takes its owner's new value.

Afterwards every rank holds the same parameters, bit for bit. Gradients must already
agree between ranks (use :class:`lucid.nn.parallel.DistributedDataParallel`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import mlx.core as mx
import numpy as np

from .. import distributed as dist
from ..nn.parameter import Parameter
from ..sparse import SparseGrad
from ..tensor import Tensor
from .optimizer import Optimizer, _groups, _param_list
from .state_dict import SCHEDULER_KEYS

__all__ = ["ZeroRedundancyOptimizer"]


class ZeroRedundancyOptimizer:
    """Shard ``optimizer_class``'s state over the ranks of :mod:`lucid.distributed`.

    Args:
        params: parameters or parameter groups, as for any optimizer.
        optimizer_class: a :class:`lucid.optim.Optimizer` subclass (every lucid rule).
        **defaults: its hyperparameters (``lr=...``).

    ``param_groups`` holds every parameter (edit hyperparameters there: they reach the
    local optimizer at the next step); ``optim`` is this rank's local optimizer (``None``
    when the rank owns no parameter) and ``optim.state`` its state.
    ``consolidate_state_dict(to=r)`` collects every rank's state (every rank must call
    it); then ``state_dict()`` on rank ``r`` is the full state, in the layout of one
    ``optimizer_class`` over all ``params``. ``load_state_dict`` takes that full layout
    on every rank and keeps this rank's shard. With one process nothing is sharded and
    ``state_dict()`` needs no consolidation.
    """

    def __init__(
        self, params: Iterable[Any], optimizer_class: type[Optimizer], **defaults: Any
    ) -> None:
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError(
                "ZeroRedundancyOptimizer: optimizer_class must be a lucid.optim.Optimizer "
                f"subclass (e.g. optim.Adagrad); got {optimizer_class!r}"
            )
        name = "ZeroRedundancyOptimizer"
        raw = [dict(g) for g in _groups(name, params)]
        for i, g in enumerate(raw):
            g["params"] = _param_list(name, g.get("params", []), f"param group {i}")
        self.optimizer_class = optimizer_class
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        every = [p for g in raw for p in g["params"]]
        self.owner = _partition(every, self.world_size)  # parameter index -> rank
        mine = {id(p) for p, r in zip(every, self.owner, strict=True) if r == self.rank}
        local_groups = []
        self._local_of: list[int | None] = []  # global group -> local group (None: none)
        for g in raw:
            own = [p for p in g["params"] if id(p) in mine]
            self._local_of.append(len(local_groups) if own else None)
            if own:
                local_groups.append({**g, "params": own})
        probe = local_groups or [{"params": [Parameter(mx.zeros((1,)))]}]
        local = optimizer_class(probe, **defaults)  # validates everything, on every rank
        self.optim: Optimizer | None = local if local_groups else None
        self.defaults = dict(local.defaults)
        self.param_groups = [{**self.defaults, **g} for g in raw]
        self._params = every
        self._consolidated: dict[str, Any] | None = None

    # ------------------------------------------------------------------ the step
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter (not only this rank's shard), as
        :meth:`lucid.optim.Optimizer.zero_grad` does."""
        for p in self._params:
            if set_to_none or p.grad is None or isinstance(p.grad, SparseGrad):
                p.grad = None
            else:
                p.grad = Tensor(mx.zeros(p.shape, dtype=p.dtype))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update this rank's shard, then all-gather every shard; return ``closure()``."""
        loss = closure() if closure is not None else None
        self._sync_groups()
        if self.world_size > 1:
            self._settle_gradients()
        if self.optim is not None:
            self.optim.step()
        self._consolidated = None
        if self.world_size > 1:
            self._gather_parameters()
        return loss

    def _settle_gradients(self) -> None:
        """Evaluate every parameter's gradient, on every rank. DDP's all-reduces are
        lazy; each rank's local step would evaluate only those of its own shard, so the
        ranks would run different collectives and pair the wrong ones (measured: garbage
        or a hang). One evaluation of all of them, in the same graph on every rank,
        keeps the ranks in step."""
        pending = []
        for p in self._params:
            g = p.grad
            if isinstance(g, SparseGrad):
                pending += [g.indices, g.values]
            elif isinstance(g, Tensor):
                pending.append(g.data)
        if pending:
            mx.eval(pending)

    def _sync_groups(self) -> None:
        """Hyperparameters edited in ``param_groups`` reach the local groups."""
        if self.optim is None:
            return
        for g, li in zip(self.param_groups, self._local_of, strict=True):
            if li is not None:
                local = self.optim.param_groups[li]
                for k, v in g.items():
                    if k != "params":
                        local[k] = v

    def _gather_parameters(self) -> None:
        dist._enter("ZeroRedundancyOptimizer.step's all-gather of the parameters")
        group = dist._world()
        n = self.world_size
        new = []
        for dtype in dict.fromkeys(p.dtype for p in self._params):
            shards = [
                [
                    p
                    for p, r in zip(self._params, self.owner, strict=True)
                    if r == k and p.dtype == dtype
                ]
                for k in range(n)
            ]
            lengths = [sum(p.size for p in s) for s in shards]
            width = max(lengths)
            own = [p.data.reshape(-1) for p in shards[self.rank]]
            own.append(mx.zeros((width - lengths[self.rank],), dtype))
            gathered = mx.distributed.all_gather(mx.concatenate(own), group=group)
            # evaluated on every rank, also one that owns all of this dtype and takes
            # nothing from it: a rank that skipped it would pair its next collective
            # with this one on the others (measured: a segfault in MLX's ring)
            new.append(gathered)
            for k, shard in enumerate(shards):
                offset = k * width
                for p in shard:
                    if k != self.rank:
                        p.data = gathered[offset : offset + p.size].reshape(p.shape)
                        new.append(p.data)
                    offset += p.size
        mx.eval(new)

    # ------------------------------------------------------------------ state
    def _local_entries(self) -> dict[int, dict[str, mx.array]]:
        """This rank's state, keyed by global parameter index."""
        if self.optim is None:
            return {}
        local = self.optim.state_dict()["state"]
        owned = {i for i, r in enumerate(self.owner) if r == self.rank}
        order = [i for g in self.param_groups for i in self._indices(g) if i in owned]
        return {order[li]: entry for li, entry in local.items()}

    def _indices(self, group: dict[str, Any]) -> list[int]:
        ids = {id(p): i for i, p in enumerate(self._params)}
        return [ids[id(p)] for p in group["params"]]

    def consolidate_state_dict(self, to: int = 0) -> None:
        """Collect every rank's shard of the state on rank ``to`` (every rank calls this).

        Two all-gathers of each rank's state: a JSON header (keys, shapes, dtypes), then
        the arrays, one flat all-gather per dtype. Every rank receives them and all but
        ``to`` drop them, so this needs the full state's memory for a moment on each.
        """
        n = self.world_size
        if isinstance(to, bool) or not isinstance(to, int) or not 0 <= to < n:
            raise ValueError(f"consolidate_state_dict: to must be a rank in [0, {n}); got {to!r}")
        entries = self._local_entries()
        everything = entries if n == 1 else _gather_entries(entries, n)
        self._consolidated = (
            {"state": dict(sorted(everything.items())), "param_groups": self._saved_groups()}
            if self.rank == to
            else None
        )

    def _saved_groups(self) -> list[dict[str, Any]]:
        saved = []
        for g, li in zip(self.param_groups, self._local_of, strict=True):
            values = {k: v for k, v in g.items() if k != "params"}
            if callable(values.get("lr")) and li is not None and self.optim is not None:
                values["lr"] = self.optim._current_lr(self.optim.param_groups[li])
            saved.append({**values, "params": self._indices(g)})
        return saved

    def state_dict(self) -> dict[str, Any]:
        """The full state, in ``optimizer_class``'s layout over all parameters; needs
        :meth:`consolidate_state_dict` on this rank since the last step (one process:
        never)."""
        if self.world_size == 1:
            self.consolidate_state_dict(0)
        if self._consolidated is None:
            raise RuntimeError(
                f"ZeroRedundancyOptimizer.state_dict: rank {self.rank} holds no consolidated "
                "state; call consolidate_state_dict(to=<this rank>) on every rank first "
                "(again after each step)"
            )
        return self._consolidated

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a full state dict (as :meth:`state_dict` gives) and keep this rank's shard.
        The local optimizer validates its part; on any error nothing changes."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(
                "ZeroRedundancyOptimizer.load_state_dict: expected a dict with exactly the "
                "keys 'state' and 'param_groups'"
            )
        groups, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            raise ValueError(
                f"ZeroRedundancyOptimizer.load_state_dict: 'param_groups' must list "
                f"{len(self.param_groups)} groups; got {groups!r:.80}"
            )
        # the local optimizer numbers its parameters in order across its groups
        local_groups: list[dict[str, Any]] = []
        local_state: dict[int, Any] = {}
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups, strict=True)):
            ids = saved.get("params") if isinstance(saved, dict) else None
            if not isinstance(ids, list) or len(ids) != len(mine["params"]):
                raise ValueError(
                    f"ZeroRedundancyOptimizer.load_state_dict: param group {gi} must list "
                    f"{len(mine['params'])} parameters"
                )
            if self._local_of[gi] is None:
                continue
            local_ids = []
            for saved_id, i in zip(ids, self._indices(mine), strict=True):
                if self.owner[i] == self.rank:
                    local = sum(len(g["params"]) for g in local_groups) + len(local_ids)
                    local_ids.append(local)
                    found = state.get(saved_id, state.get(str(saved_id)))
                    if found is not None:
                        local_state[local] = found
            hyper = {k: v for k, v in saved.items() if k != "params"}
            local_groups.append({**hyper, "params": local_ids})
        if self.optim is not None:
            self.optim.load_state_dict({"state": local_state, "param_groups": local_groups})
        for saved, mine in zip(groups, self.param_groups, strict=True):
            for k, v in saved.items():
                known = k in self.defaults or k in SCHEDULER_KEYS
                # a schedule given as lr is code: it stays, as in Optimizer.load_state_dict
                if k != "params" and known and not (callable(mine.get(k)) and not callable(v)):
                    mine[k] = v
        self._consolidated = None

    def __repr__(self) -> str:
        inner = repr(self.optim) if self.optim is not None else "(no parameters on this rank)"
        return f"ZeroRedundancyOptimizer(rank {self.rank} of {self.world_size}, {inner})"


def _partition(params: list[Parameter], n: int) -> list[int]:
    """The owner of each parameter: largest first, each to the least-loaded rank."""
    load = [0] * n
    owner = [0] * len(params)
    for i in sorted(range(len(params)), key=lambda i: -params[i].size):
        r = min(range(n), key=lambda k: load[k])
        owner[i] = r
        load[r] += params[i].size
    return owner


def _gather_entries(
    entries: dict[int, dict[str, mx.array]], n: int
) -> dict[int, dict[str, mx.array]]:
    """Every rank's state entries, on every rank (see ``consolidate_state_dict``)."""
    group = dist._world()
    header = [[i, [[k, list(v.shape), str(v.dtype).rsplit(".", 1)[-1]] for k, v in e.items()]]
              for i, e in entries.items()]  # fmt: skip
    text = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    dist._enter("ZeroRedundancyOptimizer.consolidate_state_dict")
    sizes = mx.distributed.all_gather(mx.array([text.size], dtype=mx.int32), group=group).tolist()
    width = max(sizes)
    padded = mx.array(np.pad(text, (0, width - text.size)))
    texts = np.array(mx.distributed.all_gather(padded, group=group)).reshape(n, width)
    headers = [json.loads(texts[r, : sizes[r]].tobytes()) for r in range(n)]
    dtypes = sorted({d for h in headers for _, keys in h for _, _, d in keys})
    out: dict[int, dict[str, mx.array]] = {}
    for name in dtypes:
        dtype = getattr(mx, name)
        lengths = [
            sum(int(np.prod(s)) for _, keys in h for _, s, d in keys if d == name) for h in headers
        ]
        width = max(lengths)
        mine = [v.reshape(-1) for e in entries.values() for v in e.values() if v.dtype == dtype]
        mine.append(mx.zeros((width - sum(v.size for v in mine),), dtype))
        gathered = mx.distributed.all_gather(mx.concatenate(mine), group=group)
        mx.eval(gathered)
        for r, h in enumerate(headers):
            offset = r * width
            for i, keys in h:
                for key, shape, d in keys:
                    if d != name:
                        continue
                    size = int(np.prod(shape))
                    out.setdefault(int(i), {})[key] = gathered[offset : offset + size].reshape(
                        shape
                    )
                    offset += size
    # keep each entry's keys in the order its owner had them
    return {int(i): {key: out[int(i)][key] for key, _, _ in keys} for h in headers for i, keys in h}

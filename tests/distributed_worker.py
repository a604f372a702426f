"""One rank of the multi-process tests in test_distributed.py (and their single-process
references, imported from there).

Run as ``python tests/distributed_worker.py SCENARIO OUT_DIR`` with ``MLX_HOSTFILE`` and
``MLX_RANK`` set. Scenarios:

- ``train``: 10 steps of DDP + Adagrad (with a row-sparse embedding), then DDP +
  ZeroRedundancyOptimizer over Adagrad and over Adam, then 3 steps of ZeRO over every
  optimizer of the registry (two parameter groups), each rank on its half of every
  global batch; writes ``rank{r}.safetensors`` with the parameters, state sizes and, on
  rank 0, the consolidated optimizer state;
- ``dead``: rank 1 exits right after ``init``; rank 0 starts an all-reduce later;
- ``dies_during``: rank 1 exits while rank 0 already waits in an all-reduce;
- ``hang``: rank 1 stays alive but never joins; rank 0 waits in an all-reduce.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lucid  # noqa: E402
import lucid.distributed as dist  # noqa: E402
from lucid import nn, optim  # noqa: E402
from lucid.nn.parallel import DistributedDataParallel  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optim_registry import BY_NAME, SPECS  # noqa: E402

STEPS = 10
GLOBAL_BATCH = 16
FEATURES, WORDS, CLASSES = 8, 20, 3
FAULT_TIMEOUT = 3.0
#: the runs of the train scenario: (name, optimizer, whether ZeRO shards it, sparse embedding)
RUNS = [("ddp_adagrad", "Adagrad", False, True), ("zero_adagrad", "Adagrad", True, False),
        ("zero_adam", "Adam", True, False)]  # fmt: skip
LR = {"Adagrad": 0.1, "Adam": 0.01}
#: the family runs: ZeRO over every optimizer of the registry, a few steps each
FAMILY = [f"family/{spec.name}" for spec in SPECS]
FAMILY_STEPS = 3


class Net(nn.Module):
    """An embedding (row-sparse gradients when ``sparse``) next to dense features."""

    def __init__(self, sparse: bool) -> None:
        super().__init__()
        self.emb = nn.Embedding(WORDS, 6, sparse=sparse)
        self.hidden = nn.Linear(6 + FEATURES, 16)
        self.out = nn.Linear(16, CLASSES)

    def forward(self, words: lucid.Tensor, x: lucid.Tensor) -> lucid.Tensor:
        h = lucid.concatenate([self.emb(words), x], axis=1)
        return self.out(lucid.tanh(self.hidden(h)))


def batches() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        (
            rng.integers(0, WORDS, GLOBAL_BATCH).astype(np.int32),
            rng.standard_normal((GLOBAL_BATCH, FEATURES)).astype(np.float32),
            rng.integers(0, CLASSES, GLOBAL_BATCH).astype(np.int32),
        )
        for _ in range(STEPS)
    ]


def _groups(run: str, model: Net) -> tuple[type[optim.Optimizer], list[dict], dict[str, Any]]:
    """The optimizer class, parameter groups and defaults of a run."""
    if not run.startswith("family/"):
        _, name, _, _ = next(r for r in RUNS if r[0] == run)
        return getattr(optim, name), [{"params": list(model.parameters())}], {"lr": LR[name]}
    spec = BY_NAME[run.split("/", 1)[1]]
    defaults, second = spec.configs[0]
    if not spec.dense:  # SparseAdam: the embedding alone, one group (one rank owns it)
        return spec.cls, [{"params": [model.emb.weight]}], defaults
    first = [model.emb.weight, model.hidden.weight]
    rest = [model.out.weight] if spec.matrices_only else [model.hidden.bias, model.out.weight]
    return spec.cls, [{"params": first}, {"params": rest, **second}], defaults


def train(
    run: str, rank: int, world: int, wrap: bool, steps: int = STEPS
) -> tuple[nn.Module, Any, list[str]]:
    """Train one of :data:`RUNS` (or ``family/<optimizer>``: ZeRO over that optimizer of
    the registry, its first configuration, two parameter groups); rank ``rank`` of
    ``world`` takes its slice of every batch. ``wrap``: through DDP (and ZeRO where the
    run says so), else the plain model and optimizer."""
    family = run.startswith("family/")
    zero = family or next(r for r in RUNS if r[0] == run)[2]
    sparse = not BY_NAME[run[7:]].dense if family else next(r for r in RUNS if r[0] == run)[3]
    lucid.manual_seed(rank)  # ranks start apart: DDP broadcasts rank 0's parameters
    net = Net(sparse)
    cls, groups, defaults = _groups(run, net)
    model = DistributedDataParallel(net) if wrap else net
    params = [p for g in groups for p in g["params"]]
    if wrap and zero:
        opt = optim.ZeroRedundancyOptimizer(groups, cls, **defaults)
    else:
        opt = cls(groups, **defaults)
    loss_fn = nn.CrossEntropyLoss()
    part = GLOBAL_BATCH // world
    kinds = []
    for words, x, y in batches()[:steps]:
        rows = slice(rank * part, (rank + 1) * part)
        opt.zero_grad()
        loss = loss_fn(
            model(lucid.tensor(words[rows]), lucid.tensor(x[rows])), lucid.tensor(y[rows])
        )
        loss.backward()
        kinds = [type(p.grad).__name__ for p in params]
        opt.step()
    return model, opt, kinds


def state_elements(opt: optim.Optimizer | None) -> int:
    if opt is None:
        return 0
    return sum(v.size for s in opt.state.values() for k, v in s.items() if k != "step")


def flatten_state(state_dict: dict[str, Any], prefix: str) -> dict[str, mx.array]:
    return {
        f"{prefix}/{i}/{k}": v for i, entry in state_dict["state"].items() for k, v in entry.items()
    }


def groups_json(state_dict: dict[str, Any]) -> str:
    return json.dumps(state_dict["param_groups"], sort_keys=True)


def scenario_train(rank: int, world: int, out: Path) -> None:
    arrays: dict[str, mx.array] = {}
    for run, name, zero, _ in RUNS:
        model, opt, kinds = train(run, rank, world, wrap=True)
        arrays.update({f"{run}/param/{k}": v for k, v in model.state_dict().items()})
        arrays[f"{run}/sparse_grad"] = mx.array([k == "SparseGrad" for k in kinds])
        if zero:
            arrays[f"{run}/state_elements"] = mx.array(state_elements(opt.optim))
            opt.consolidate_state_dict(to=0)
            if rank == 0:
                full = opt.state_dict()
                arrays.update(flatten_state(full, f"{run}/state"))
                arrays[f"{run}/groups"] = mx.array(
                    np.frombuffer(groups_json(full).encode(), np.uint8)
                )
            # every rank loads the full state (rank 0's checkpoint) into a fresh ZeRO
            checkpoint = out / f"{run}.ckpt"
            if rank == 0:
                lucid.save(full, checkpoint)
            dist.barrier()
            full = lucid.load(checkpoint)
            fresh = optim.ZeroRedundancyOptimizer(
                list(model.parameters()), getattr(optim, name), lr=1.0
            )
            fresh.load_state_dict(full)
            same = all(
                mx.array_equal(a[k], b[k]).item()
                for a, b in zip(fresh.optim.state.values(), opt.optim.state.values(), strict=True)
                for k in a
            )
            arrays[f"{run}/reload_same"] = mx.array(
                same and fresh.param_groups[0]["lr"] == LR[name]
            )
    for run in FAMILY:
        model, opt, _ = train(run, rank, world, wrap=True, steps=FAMILY_STEPS)
        arrays.update({f"{run}/param/{k}": v for k, v in model.state_dict().items()})
        opt.consolidate_state_dict(to=0)
        if rank == 0:
            arrays.update(flatten_state(opt.state_dict(), f"{run}/state"))
    mx.save_safetensors(str(out / f"rank{rank}.safetensors"), arrays)


def scenario_fault(kind: str, rank: int) -> None:
    dist.init(timeout=FAULT_TIMEOUT)
    if rank == 1:
        if kind == "dead":
            os._exit(0)
        time.sleep(1.0 if kind == "dies_during" else 30.0)
        os._exit(0)
    if kind == "dead":
        time.sleep(1.0)  # rank 1 is gone (and known to be) before the collective starts
    mx.eval(dist.all_reduce(lucid.ones(4)).data)
    print("rank 0: the all-reduce returned", flush=True)


def main() -> None:
    kind, out = sys.argv[1], Path(sys.argv[2])
    rank = int(os.environ["MLX_RANK"])
    if kind == "train":
        dist.init(timeout=60)
        scenario_train(rank, dist.get_world_size(), out)
    else:
        scenario_fault(kind, rank)


if __name__ == "__main__":
    main()

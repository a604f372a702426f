"""lucid.distributed, DistributedDataParallel, ZeroRedundancyOptimizer, DistributedSampler.

The multi-process checks start two ranks of tests/distributed_worker.py on 127.0.0.1
(MLX's ring backend, a hostfile with two free ports), each with a timeout, and kill
both process groups when the test ends. References: one process of the same code
path with no wrapper (plain model and optimizer on the full batches).
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import lucid
from lucid import nn, optim
from lucid.nn.parallel import DistributedDataParallel
from lucid.utils.data import DataLoader, DistributedSampler, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import distributed_worker as worker  # noqa: E402

from benchmarks.distributed import run_local_ranks  # noqa: E402

WORKER = Path(worker.__file__).resolve()
PROCESS_TIMEOUT = 90  # seconds, per launch (the machine may be loaded)


def _launch(scenario: str, tmp: Path, script: Path = WORKER,
            args: tuple[str, ...] = ()) -> list[tuple[int, str, str, float]]:  # fmt: skip
    """Run both ranks of ``script scenario tmp`` (or of ``script *args``); (returncode,
    stdout, stderr, seconds) per rank."""
    argv = [sys.executable, str(script), *(args or (scenario, str(tmp)))]
    return run_local_ranks(argv, PROCESS_TIMEOUT)


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, mx.array]]:
    tmp = tmp_path_factory.mktemp("dist-train")
    results = _launch("train", tmp)
    for rank, (code, out, err, _) in enumerate(results):
        assert code == 0, f"rank {rank} exited with {code}:\n{out}\n{err}"
    return [mx.load(str(tmp / f"rank{r}.safetensors")) for r in range(2)]


RUN_NAMES = [r[0] for r in worker.RUNS]


# The ranks' mean of two half-batch means rounds differently from one full-batch mean
# (float32, ~1e-7 relative in each gradient), and each step moves a parameter by up to
# lr = 0.1: so rtol 1e-5 plus atol 1e-5 * lr for parameters that pass near 0 (measured:
# 1.4e-7 at most, on a weight of 3.4e-4)
ATOL = 1e-6


@pytest.mark.parametrize("run", RUN_NAMES)
def test_two_ranks_match_one_process_on_full_batches(trained, run):
    reference, _, _ = worker.train(run, rank=0, world=1, wrap=False)
    for rank in range(2):
        for name, value in reference.state_dict().items():
            got = trained[rank][f"{run}/param/{name}"]
            np.testing.assert_allclose(
                np.array(got), np.array(value), rtol=1e-5, atol=ATOL, err_msg=name
            )


@pytest.mark.parametrize("run", RUN_NAMES)
def test_ranks_hold_identical_parameters(trained, run):
    keys = [k for k in trained[0] if k.startswith(f"{run}/param/")]
    assert keys
    for k in keys:
        assert mx.array_equal(trained[0][k], trained[1][k]).item(), k


def test_ddp_keeps_row_sparse_gradients_sparse(trained):
    # the embedding's gradient (parameter 0) is all-gathered as rows, never densified
    for rank in range(2):
        assert trained[rank]["ddp_adagrad/sparse_grad"].tolist() == [
            True,
            False,
            False,
            False,
            False,
        ]


@pytest.mark.parametrize("run", [r[0] for r in worker.RUNS if r[2]])
def test_zero_shards_state_and_consolidates_to_the_full_state(trained, run):
    _, reference, _ = worker.train(run, rank=0, world=1, wrap=False)
    total = worker.state_elements(reference)
    shares = [trained[r][f"{run}/state_elements"].item() / total for r in range(2)]
    assert sum(shares) == pytest.approx(1.0)
    assert all(0.4 < s < 0.6 for s in shares), shares  # the model splits 224 : 187
    full = reference.state_dict()
    saved = {
        k[len(f"{run}/state/") :]: v for k, v in trained[0].items() if k.startswith(f"{run}/state/")
    }
    expected = worker.flatten_state(full, "")
    assert sorted(saved) == sorted(k[1:] for k in expected)
    for key, value in expected.items():
        np.testing.assert_allclose(
            np.array(saved[key[1:]]), np.array(value), rtol=1e-5, atol=1e-8, err_msg=key
        )
    groups = bytes(np.array(trained[0][f"{run}/groups"])).decode()
    assert groups == worker.groups_json(full)
    for rank in range(2):  # a fresh ZeRO that loads it re-shards it: each rank its part
        assert trained[rank][f"{run}/reload_same"].item()


@pytest.mark.parametrize("run", worker.FAMILY)
def test_zero_works_with_every_optimizer(trained, run):
    reference, opt, _ = worker.train(run, rank=0, world=1, wrap=False, steps=worker.FAMILY_STEPS)
    for name, value in reference.state_dict().items():
        for rank in range(2):
            got = trained[rank][f"{run}/param/{name}"]
            np.testing.assert_allclose(
                np.array(got), np.array(value), rtol=1e-5, atol=ATOL, err_msg=name
            )
        assert mx.array_equal(trained[0][f"{run}/param/{name}"], trained[1][f"{run}/param/{name}"])
    expected = worker.flatten_state(opt.state_dict(), run + "/state")
    assert sorted(k for k in trained[0] if k.startswith(run + "/state/")) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(
            np.array(trained[0][key]), np.array(value), rtol=1e-5, atol=ATOL, err_msg=key
        )


# ----------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    "scenario, message",
    [
        ("dead", "RuntimeError: lucid.distributed: rank 1 died"),
        ("dies_during", "lucid.distributed: rank 1 died"),
        ("hang", "lucid.distributed: rank 1 has not entered collective #1 within the timeout"),
    ],
)
def test_a_missing_peer_ends_rank_0_within_the_timeout(tmp_path, scenario, message):
    (code, out, err, seconds), _ = _launch(scenario, tmp_path)
    assert code != 0 and "returned" not in out, (code, out, err)
    assert message in err, err
    # the start (imports and init) plus the timeout: far from the 30 s rank 1 sleeps
    assert seconds < worker.FAULT_TIMEOUT + 15, seconds


# ----------------------------------------------------------------------------- the example


def test_example_trains_on_two_ranks(tmp_path):
    script = ROOT / "examples" / "train_distributed.py"
    results = _launch("", tmp_path, script, ("--epochs", "2"))
    accuracies = set()
    for rank, (code, out, err, _) in enumerate(results):
        assert code == 0, f"rank {rank}: {out}\n{err}"
        assert f"rank {rank} of 2: shard of 673 of 1347 training images" in out
        line = next(x for x in out.splitlines() if x.startswith(f"rank {rank}: test accuracy"))
        assert line.split("; ")[1] == "parameters identical on all ranks: True"
        accuracies.add(float(line.split()[4].rstrip("%;")))
    assert len(accuracies) == 1 and accuracies.pop() > 85


# ----------------------------------------------------------------------------- one process


@pytest.mark.parametrize("run", RUN_NAMES)
def test_world_of_one_changes_nothing(run):
    plain, plain_opt, _ = worker.train(run, rank=0, world=1, wrap=False)
    wrapped, opt, _ = worker.train(run, rank=0, world=1, wrap=True)
    assert list(wrapped.state_dict()) == list(plain.state_dict())  # no "module." prefix
    for name, value in plain.state_dict().items():
        assert mx.array_equal(wrapped.state_dict()[name], value).item(), name
    a, b = opt.state_dict(), plain_opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert worker.flatten_state(a, "").keys() == worker.flatten_state(b, "").keys()
    for key, value in worker.flatten_state(b, "").items():
        assert mx.array_equal(worker.flatten_state(a, "")[key], value).item(), key


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda sd: sd.pop("state"), "exactly the keys 'state' and 'param_groups'"),
        (lambda sd: sd["param_groups"].append({}), "'param_groups' must list 1 groups"),
        (lambda sd: sd["param_groups"][0]["params"].pop(), "param group 0 must list 2"),
        (lambda sd: sd["state"][0].pop("sum"), r"state keys \['step'\]"),
    ],
)
def test_zero_load_state_dict_refuses_bad_input_and_changes_nothing(edit, match):
    model = nn.Linear(3, 2)
    opt = optim.ZeroRedundancyOptimizer(model.parameters(), optim.Adagrad, lr=0.1)
    model(lucid.ones(4, 3)).sum().backward()
    opt.step()
    before = opt.state_dict()
    full = opt.state_dict()
    bad = {
        "state": {i: dict(e) for i, e in full["state"].items()},
        "param_groups": [dict(g, params=list(g["params"])) for g in full["param_groups"]],
    }
    edit(bad)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for i, entry in before["state"].items():
        for k, v in entry.items():
            assert mx.array_equal(after["state"][i][k], v).item()


def test_collectives_in_a_world_of_one():
    import lucid.distributed as dist

    x = lucid.tensor([1.0, -2.0])
    assert dist.get_world_size() == 1 and dist.get_rank() == 0 and dist.is_initialized()
    for op in ("sum", "mean", "max", "min"):
        assert dist.all_reduce(x, op=op).tolist() == [1.0, -2.0]
    assert dist.all_gather(x).tolist() == [1.0, -2.0]
    assert dist.broadcast(x).tolist() == [1.0, -2.0]
    dist.barrier()


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda d: d.all_reduce(lucid.ones(2), op="prod"), ValueError, "op must be one of"),
        (lambda d: d.all_reduce([1.0]), TypeError, "Tensor or an mx.array; got list"),
        (
            lambda d: d.broadcast(lucid.ones(2), src=1),
            ValueError,
            r"src must be a rank in \[0, 1\)",
        ),
        (lambda d: d.init(backend="tcp"), ValueError, "backend must be one of"),
        (lambda d: d.init(timeout=0), ValueError, "timeout must be a positive number"),
        (lambda d: DistributedDataParallel(lucid.ones(2)), TypeError, "must be an nn.Module"),
        (
            lambda d: DistributedDataParallel(nn.Linear(2, 2), bucket_cap_mb=0),
            ValueError,
            "bucket_cap_mb",
        ),
        (
            lambda d: optim.ZeroRedundancyOptimizer(nn.Linear(2, 2).parameters(), dict),
            TypeError,
            "optimizer_class",
        ),
        (
            lambda d: optim.ZeroRedundancyOptimizer(nn.Linear(2, 2).parameters(), optim.SGD, lr=-1),
            ValueError,
            "lr",
        ),
    ],
)
def test_bad_arguments_raise(call, error, match):
    import lucid.distributed as dist

    with pytest.raises(error, match=match):
        call(dist)


# ----------------------------------------------------------------------------- the sampler


def _parts(n: int, replicas: int, **kw) -> list[list[int]]:
    return [list(DistributedSampler(range(n), replicas, r, **kw)) for r in range(replicas)]


@pytest.mark.parametrize("n, replicas", [(10, 2), (10, 3), (7, 4), (3, 5), (12, 4)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_parts_are_disjoint_and_cover(n, replicas, shuffle):
    parts = _parts(n, replicas, shuffle=shuffle, seed=3)
    size = -(-n // replicas)  # ceil: torch pads by repeating the start of the order
    assert [len(p) for p in parts] == [size] * replicas
    flat = [i for p in parts for i in p]
    assert set(flat) == set(range(n))
    if n % replicas == 0:
        assert sorted(flat) == list(range(n))  # no padding: disjoint


@pytest.mark.parametrize("n, replicas", [(10, 3), (7, 4), (12, 4)])
def test_sampler_drop_last_drops_the_tail(n, replicas):
    parts = _parts(n, replicas, shuffle=True, seed=1, drop_last=True)
    flat = [i for p in parts for i in p]
    assert len(flat) == len(set(flat)) == n // replicas * replicas  # disjoint, tail dropped
    assert [len(p) for p in parts] == [n // replicas] * replicas


def test_sampler_order_depends_on_seed_and_epoch_only():
    def order(seed: int, epoch: int) -> list[list[int]]:
        samplers = [DistributedSampler(range(20), 2, r, seed=seed) for r in range(2)]
        for s in samplers:
            s.set_epoch(epoch)
        return [list(s) for s in samplers]

    assert order(0, 1) == order(0, 1)  # the same on every rank and every call
    assert order(0, 1) != order(0, 2) and order(0, 1) != order(1, 1)
    # torch's rule: rank r takes every R-th index of one order drawn from seed + epoch
    whole = np.random.default_rng(0 + 1).permutation(20)
    assert order(0, 1) == [whole[0::2].tolist(), whole[1::2].tolist()]
    assert _parts(5, 2, shuffle=False) == [[0, 2, 4], [1, 3, 0]]


def test_data_loader_takes_a_sampler():
    ds = TensorDataset(np.arange(10, dtype=np.float32))
    sampler = DistributedSampler(ds, num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(ds, batch_size=2, sampler=sampler)
    assert len(loader) == 3
    assert [b[0].tolist() for b in loader] == [[1.0, 3.0], [5.0, 7.0], [9.0]]
    with pytest.raises(ValueError, match="sampler and shuffle=True exclude each other"):
        DataLoader(ds, sampler=sampler, shuffle=True)
    with pytest.raises(TypeError, match="sampler must be an iterable of indices"):
        DataLoader(ds, sampler=3)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"num_replicas": 0}, "num_replicas must be a positive int"),
        ({"num_replicas": 2, "rank": 2}, r"rank must be an int in \[0, 2\)"),
        ({"seed": -1}, "seed must be a non-negative int"),
        ({"shuffle": 1}, "shuffle must be a bool"),
    ],
)
def test_sampler_bad_arguments_raise(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        DistributedSampler(range(4), **kw)

"""Out-of-range indices never reach MLX: every case raises IndexError naming the value.

MLX does not bounds-check, so a case that slips through may abort the interpreter (double
free) instead of failing. The bad-index cases therefore run in a worker subprocess (this
file run as a script), one table per process: the worker announces each case before it
runs it and reports its outcome after, so an abort is attributed to the case that was
running, and the remaining cases run again in a fresh worker.

Each case returns what it observed: the error raised (type and message) and, for the
cases that fail at ``optimizer.step()``, whether the parameters, the optimizer state and
the step counters are exactly as they were before the step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

import lucid
from lucid import bounds, nn, optim
from lucid.nn import functional as F
from lucid.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- the cases
# Each returns a dict: {"error": type name or None, "message": str, ...facts}.


def _raised(action: Callable[[], Any]) -> dict[str, Any]:
    try:
        result = action()
        if isinstance(result, lucid.Tensor):  # a lazy result: make MLX compute it
            mx.eval(result.data)
    except Exception as e:  # noqa: BLE001  (the parent asserts the type)
        return {"error": type(e).__name__, "message": str(e)}
    return {"error": None, "message": ""}


def _snapshot(params: list[nn.Parameter], opt: optim.Optimizer) -> list[np.ndarray]:
    state = opt.state_dict()["state"]
    arrays = [np.array(p.data) for p in params]
    for entry in state.values():
        arrays.extend(np.array(v) for _, v in sorted(entry.items()))
    return arrays


def _fails_at_step(
    params: list[nn.Parameter],
    good_loss: Callable[[], Any],
    bad_loss: Callable[[], Any],
) -> dict:
    """A good step (so that state and step counters exist), then a backward through a lazy
    bad index: the step must raise and change nothing. Memory safety first: the gradients,
    computed from clamped indices, are evaluated directly (bypassing every check) before
    the step. Then the error is gone and a good step works."""
    opt = optim.Adagrad(params, lr=0.5)
    good_loss().backward()
    opt.step()
    opt.zero_grad()
    before = _snapshot(params, opt)
    bad_loss().backward()
    mx.eval([p.grad.data if isinstance(p.grad, lucid.Tensor) else p.grad.values for p in params])
    out = _raised(opt.step)
    after = _snapshot(params, opt)
    out["unchanged"] = len(before) == len(after) and all(
        np.array_equal(a, b) for a, b in zip(before, after, strict=True)
    )
    opt.zero_grad()
    good_loss().backward()
    out["next_step_ok"] = _raised(opt.step)["error"] is None
    return out


def _pending(values: list[int]) -> mx.array:
    """Indices that are still unevaluated: a gather from an array, as a data pipeline does."""
    source = mx.array([*values, 0])
    return source[mx.arange(len(values))]


def case_embedding_dense_n():
    return _raised(lambda: nn.Embedding(10, 4)(np.array([1, 10])))


def case_embedding_dense_neg():
    return _raised(lambda: nn.Embedding(10, 4)([[0, -11]]))


def case_embedding_python_int():
    return _raised(lambda: nn.Embedding(10, 4)(12))


def case_embedding_sparse_n():
    return _raised(lambda: nn.Embedding(10, 4, sparse=True)(np.array([10, 0])))


def case_embedding_sparse_neg():
    return _raised(lambda: nn.Embedding(10, 4, sparse=True)(np.array([-11])))


def case_embedding_functional():
    w = nn.Parameter(np.zeros((5, 2), np.float32))
    return _raised(lambda: F.embedding(np.array([5]), w))


def case_embedding_lazy_item():
    emb = nn.Embedding(10, 4)
    return _raised(lambda: emb(_pending([3, 12])).sum().item())


def case_embedding_lazy_numpy():
    emb = nn.Embedding(10, 4, sparse=True)
    return _raised(lambda: emb(lucid.tensor(_pending([-11]))).numpy())


def case_embedding_lazy_float():
    emb = nn.Embedding(10, 4)
    return _raised(lambda: float(emb(mx.array([12])).sum()))


def case_embedding_lazy_tolist():
    emb = nn.Embedding(10, 4)
    return _raised(lambda: emb(mx.array([[1, 2], [30, 0]])).tolist())


def _embedding_step(sparse: bool, make_ids: Callable[[], Any]) -> dict:
    emb = nn.Embedding(10, 4, sparse=sparse)
    lin = nn.Linear(4, 1)
    params = [*emb.parameters(), *lin.parameters()]
    good = lambda: lin(emb(np.array([1, 2, 2]))).sum()  # noqa: E731
    return _fails_at_step(params, good, lambda: lin(emb(make_ids())).sum())


def case_embedding_dense_lazy_step():
    return _embedding_step(False, lambda: _pending([3, 12, 3]))


def case_embedding_sparse_lazy_step():
    return _embedding_step(True, lambda: _pending([3, -11, 3]))


def case_embedding_sparse_dataloader_step():
    """Ids from a DataLoader: the batch is a lazy gather; the column's known range is
    out of the table's, so the lookup takes the lazy path and the step raises."""
    ids = np.array([[1, 2], [3, 4], [5, 10]])
    batches = list(DataLoader(TensorDataset(ids), batch_size=3))
    return _embedding_step(True, lambda: batches[0][0])


def case_embedding_registry_flush():
    """More than LIMIT lazy lookups, none read: the registry checks them itself."""
    emb = nn.Embedding(10, 4)
    lookups = [_pending([1, 2])] * 5 + [_pending([99])] + [_pending([3])] * 100

    def run():
        for ids in lookups:
            emb(ids)

    return _raised(run)


def case_cross_entropy_target_c():
    return _raised(lambda: F.cross_entropy(lucid.randn(2, 3), np.array([0, 3])))


def case_cross_entropy_target_7():
    return _raised(lambda: nn.CrossEntropyLoss()(lucid.randn(2, 3), [7, 0]))


def case_cross_entropy_target_neg():
    return _raised(lambda: F.cross_entropy(lucid.randn(2, 3), np.array([-1, 0])))


def case_cross_entropy_weighted_smoothed():
    loss = nn.CrossEntropyLoss(weight=np.ones(3, np.float32), label_smoothing=0.1)
    return _raised(lambda: loss(lucid.randn(2, 3), np.array([1, 5])))


def case_cross_entropy_lazy_item():
    return _raised(lambda: F.cross_entropy(lucid.randn(2, 3), _pending([0, 7])).item())


def case_cross_entropy_lazy_step():
    model = nn.Linear(4, 3)
    x = lucid.randn(2, 4)
    return _fails_at_step(
        list(model.parameters()),
        lambda: F.cross_entropy(model(x), np.array([0, 2])),
        lambda: F.cross_entropy(model(x), lucid.tensor(_pending([7, 1]))),
    )


def case_getitem_list():
    return _raised(lambda: lucid.zeros(4)[[0, 4]])


def case_getitem_numpy():
    return _raised(lambda: lucid.zeros(4, 2)[np.array([-5, 0])])


def case_getitem_mx():
    return _raised(lambda: lucid.zeros(4)[_pending([7])].numpy())


def case_getitem_tensor():
    return _raised(lambda: lucid.zeros(4)[lucid.tensor(_pending([2, -9]))].sum().item())


def case_getitem_tuple_slice():
    return _raised(lambda: lucid.zeros(2, 3)[:, [0, 9]])


def case_getitem_tuple_none_ellipsis():
    return _raised(lambda: lucid.zeros(2, 3)[None, ..., np.array([5])])


def case_getitem_tuple_mx():
    return _raised(lambda: lucid.zeros(2, 3)[mx.array([2]), 1:, None].numpy())


def case_getitem_backward():
    """The backward scatter of a lazy bad index writes only in range; the error surfaces
    when the gradient is read."""
    x = lucid.tensor(np.ones((3, 2), np.float32), requires_grad=True)
    x[_pending([1, 8])].sum().backward()
    mx.eval(x.grad.data)  # bypasses the checks: must not touch memory out of range
    return _raised(lambda: x.grad.numpy())


def case_getitem_step():
    p = nn.Parameter(np.arange(6, dtype=np.float32))
    return _fails_at_step(
        [p], lambda: (p[np.array([0, 5])] ** 2).sum(), lambda: (p[_pending([0, 6])] ** 2).sum()
    )


def case_sparse_grad_host():
    return _raised(lambda: lucid.SparseGrad([0, 10], np.ones((2, 4), np.float32), (10, 4)))


def case_sparse_grad_negative():
    return _raised(lambda: lucid.SparseGrad(np.array([-1]), np.ones((1, 4), np.float32), (10, 4)))


def case_sparse_grad_lazy_step():
    emb = nn.Embedding(10, 4, sparse=True)

    class HandMade:  # a "loss" whose backward sets a hand-built SparseGrad
        def backward(self) -> None:
            values = mx.ones((2, 4))
            emb.weight.grad = lucid.SparseGrad(_pending([3, 12]), values, (10, 4))

    return _fails_at_step(list(emb.parameters()), lambda: emb(np.array([1, 2])).sum(), HandMade)


def case_dataset_index():
    ds = TensorDataset(np.zeros((5, 2), np.float32))
    return _raised(lambda: ds[[0, 5]])


CASES: dict[str, Callable[[], dict]] = {
    name.removeprefix("case_"): fn for name, fn in list(globals().items()) if name[:5] == "case_"
}

# --------------------------------------------------------------------------- the worker


def _worker(names: list[str]) -> None:
    for name in names:
        print(f"START {name}", flush=True)
        result = CASES[name]()
        print(f"RESULT {name} {json.dumps(result)}", flush=True)


def _run_all(names: list[str]) -> dict[str, dict]:
    """Run the cases in workers; an abort marks the running case and restarts after it."""
    results: dict[str, dict] = {}
    todo = list(names)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    while todo:
        proc = subprocess.run(
            [sys.executable, __file__, *todo], capture_output=True, text=True, env=env, timeout=120
        )
        started = None
        for line in proc.stdout.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "START":
                started = rest
            elif kind == "RESULT":
                name, _, payload = rest.partition(" ")
                results[name] = json.loads(payload)
                started = None
        if started is not None:  # it died in this case
            results[started] = {
                "error": f"worker died (exit code {proc.returncode})",
                "message": proc.stderr[-2000:],
            }
        elif proc.returncode != 0:
            pytest.fail(f"worker failed outside any case: {proc.stderr[-2000:]}")
        todo = [n for n in todo if n not in results]
    return results


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict]:
    return _run_all(list(CASES))


# case -> (fragments the message must contain); every case expects IndexError
EXPECTED: dict[str, list[str]] = {
    "embedding_dense_n": ["embedding()", "index 10", "10 rows", "-10 to 9"],
    "embedding_dense_neg": ["embedding()", "index -11", "10 rows"],
    "embedding_python_int": ["index 12", "10 rows"],
    "embedding_sparse_n": ["embedding()", "index 10", "10 rows"],
    "embedding_sparse_neg": ["index -11"],
    "embedding_functional": ["embedding()", "index 5", "5 rows"],
    "embedding_lazy_item": ["index 12", "10 rows", "lazily at Tensor.item()"],
    "embedding_lazy_numpy": ["index -11", "Tensor.numpy()"],
    "embedding_lazy_float": ["index 12", "Tensor.item()"],
    "embedding_lazy_tolist": ["index 30", "Tensor.tolist()"],
    "embedding_dense_lazy_step": ["embedding()", "index 12", "optimizer.step()"],
    "embedding_sparse_lazy_step": ["embedding()", "index -11", "optimizer.step()"],
    "embedding_sparse_dataloader_step": ["index 10", "optimizer.step()"],
    "embedding_registry_flush": ["index 99", f"more than {bounds.LIMIT}"],
    "cross_entropy_target_c": ["cross_entropy()", "target 3", "3 classes", "0 to 2", "-100"],
    "cross_entropy_target_7": ["cross_entropy()", "target 7", "3 classes"],
    "cross_entropy_target_neg": ["cross_entropy()", "target -1", "3 classes"],
    "cross_entropy_weighted_smoothed": ["target 5", "3 classes"],
    "cross_entropy_lazy_item": ["target 7", "Tensor.item()"],
    "cross_entropy_lazy_step": ["cross_entropy()", "target 7", "optimizer.step()"],
    "getitem_list": ["indexing", "index 4", "axis 0 with size 4"],
    "getitem_numpy": ["index -5", "axis 0 with size 4", "-4 to 3"],
    "getitem_mx": ["index 7", "axis 0", "Tensor.numpy()"],
    "getitem_tensor": ["index -9", "axis 0", "Tensor.item()"],
    "getitem_tuple_slice": ["index 9", "axis 1 with size 3"],
    "getitem_tuple_none_ellipsis": ["index 5", "axis 1 with size 3"],
    "getitem_tuple_mx": ["index 2", "axis 0 with size 2"],
    "getitem_backward": ["index 8", "axis 0 with size 3"],
    "getitem_step": ["index 6", "axis 0 with size 6", "optimizer.step()"],
    "sparse_grad_host": ["SparseGrad", "index 10", "(10, 4)", "0 to 9"],
    "sparse_grad_negative": ["SparseGrad", "index -1", "0 to 9"],
    "sparse_grad_lazy_step": ["SparseGrad", "index 12", "optimizer.step()"],
    "dataset_index": ["TensorDataset", "index 5", "size 5"],
}


def test_every_case_has_an_expectation() -> None:
    assert set(EXPECTED) == set(CASES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_index_raises_index_error(outcomes: dict[str, dict], name: str) -> None:
    result = outcomes[name]
    assert result["error"] == "IndexError", result
    for fragment in EXPECTED[name]:
        assert fragment in result["message"], (fragment, result["message"])
    if "unchanged" in result:  # the step cases
        assert result["unchanged"], "the failed step changed parameters or state"
        assert result["next_step_ok"], "the step after the error failed too"


# --------------------------------------------------------------------------- in process
# Valid indices at the edges, and what the checks cost in synchronisations and memory.


@pytest.mark.parametrize("sparse", [False, True])
def test_negative_embedding_indices_count_from_the_end(sparse: bool) -> None:
    emb = nn.Embedding(5, 3, sparse=sparse)
    table = np.array(emb.weight.data)
    for ids in (np.array([-1, 0, -5]), mx.array([-1, 0, -5]), [-1, 0, -5]):
        np.testing.assert_array_equal(emb(ids).numpy(), table[[4, 0, 0]])
    emb.weight.grad = None
    emb(np.array([-1, 4])).sum().backward()
    grad = emb.weight.grad
    dense = np.array(grad.to_dense() if sparse else grad.data)
    np.testing.assert_array_equal(dense[4], [2.0, 2.0, 2.0])  # -1 and 4 are one row
    if sparse:
        np.testing.assert_array_equal(np.array(grad.indices), [4, 4])


def test_ignore_index_inside_and_outside_the_classes_is_accepted() -> None:
    x = lucid.randn(3, 4)
    assert np.isfinite(F.cross_entropy(x, np.array([0, -100, 3])).item())
    assert np.isfinite(F.cross_entropy(x, mx.array([0, 7, 3]), ignore_index=7).item())
    assert np.isfinite(F.cross_entropy(x, [0, 1, 1], ignore_index=1).item())


def test_host_indices_add_no_pending_check() -> None:
    bounds.check_pending()
    emb = nn.Embedding(10, 2)
    emb(np.array([1, 9]))
    emb([[-1, 0]])
    F.cross_entropy(lucid.randn(2, 3), np.array([2, 0]))
    lucid.zeros(4)[[0, 3]]
    assert bounds.pending() == 0


def test_dataloader_batches_need_no_check() -> None:
    """A batch's integer column has a range known from the dataset: no clamp, no flag."""
    bounds.check_pending()
    ids = np.array([[1, 2], [3, 9], [0, 0], [4, 4]])
    labels = np.array([0, 2, 1, 1])
    emb, loss = nn.Embedding(10, 3), nn.CrossEntropyLoss()
    for xb, yb in DataLoader(TensorDataset(ids, labels), batch_size=2, shuffle=True, seed=0):
        loss(emb(xb).sum(axis=1), yb)
    assert bounds.pending() == 0


def test_pending_registry_stays_bounded() -> None:
    bounds.check_pending()
    emb = nn.Embedding(10, 2)
    for _ in range(3 * bounds.LIMIT):
        emb(_pending([1, 2, 9]))
        assert bounds.pending() <= bounds.LIMIT
    bounds.check_pending()
    assert bounds.pending() == 0


def test_lazy_check_adds_no_eval_when_the_loss_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flags ride in the evaluation of .item(); the step then has only its own."""
    emb = nn.Embedding(10, 2)
    opt = optim.Adagrad(emb.parameters(), lr=0.1)
    calls: list[int] = []
    real_eval = mx.eval
    monkeypatch.setattr(mx, "eval", lambda *a: (calls.append(1), real_eval(*a))[1])
    loss = emb(_pending([1, 2, 3])).sum()
    loss.backward()
    loss.item()  # the value and the flag: one evaluation
    assert len(calls) == 1 and bounds.pending() == 0
    opt.step()
    assert len(calls) == 2  # the step's single eval, no check


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_lazy_check_costs_one_small_eval_at_the_step(
    sparse: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One small evaluation before the step's own: the flags, and (sparse gradients) the
    looked-up rows and indices that the sparse step evaluates first anyway."""
    emb = nn.Embedding(10, 2, sparse=sparse)
    opt = optim.Adagrad(emb.parameters(), lr=0.1)
    emb(_pending([1, 2, 3])).sum().backward()
    evaluated: list[tuple] = []
    real_eval = mx.eval
    monkeypatch.setattr(mx, "eval", lambda *a: (evaluated.append(a), real_eval(*a))[1])
    opt.step()
    assert len(evaluated) == 2
    flags = [a for a in evaluated[0] if a.dtype == mx.bool_]
    assert flags and all(a.size == 1 for a in flags)
    others = [a for a in evaluated[0] if a.dtype != mx.bool_]
    assert len(others) == (2 if sparse else 0)  # indices and rows


if __name__ == "__main__":
    _worker(sys.argv[1:])

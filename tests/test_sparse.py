"""Row-sparse gradients: nn.Embedding(sparse=True), lucid.SparseGrad and Adagrad's
sparse step, against the dense path, torch's sparse Adagrad and a float64 NumPy rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import lucid
from lucid import nn, optim
from lucid.optim.optimizer import Optimizer
from lucid.sparse import SparseGrad, coalesce_fixed

ROOT = Path(__file__).resolve().parents[1]
N, D, BATCH = 40, 5, (6, 4)  # table rows, columns, index batch shape


def batches(steps: int, seed: int = 0, high: int = 12) -> list[np.ndarray]:
    """Index batches drawn from few rows, so every batch repeats indices."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, high, BATCH) for _ in range(steps)]


def start_table(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(N, D)).astype(np.float32)


def loss_of(out: lucid.Tensor) -> lucid.Tensor:
    return (out * out).sum() * 0.1 + (out * 0.3).sum()  # gradient 0.2 * out + 0.3


def train_lucid(sparse: bool, steps: int = 50, padding_idx: int | None = None, **hyper):
    emb = nn.Embedding(N, D, padding_idx=padding_idx, sparse=sparse)
    emb.weight.data = mx.array(start_table())
    opt = optim.Adagrad(emb.parameters(), **hyper)
    for idx in batches(steps):
        opt.zero_grad()
        loss_of(emb(idx)).backward()
        opt.step()
    return emb, opt


def grad_rule(out: np.ndarray) -> np.ndarray:
    return 0.2 * out + 0.3


# --------------------------------------------------------------------------- parity

HYPER = [
    dict(lr=0.1),
    dict(lr=0.05, lr_decay=0.01),
    dict(lr=0.1, initial_accumulator_value=0.3, eps=1e-6),
    dict(lr=0.1, maximize=True),
]


@pytest.mark.parametrize("hyper", HYPER, ids=[str(h) for h in HYPER])
def test_sparse_step_equals_dense_step(hyper):
    sparse, s_opt = train_lucid(True, **hyper)
    dense, d_opt = train_lucid(False, **hyper)
    np.testing.assert_allclose(np.array(sparse.weight.data), np.array(dense.weight.data), atol=1e-6)
    s_state, d_state = s_opt.state[sparse.weight], d_opt.state[dense.weight]
    np.testing.assert_allclose(np.array(s_state["sum"]), np.array(d_state["sum"]), rtol=1e-6)
    assert s_state["step"].item() == d_state["step"].item() == 50


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("hyper", HYPER, ids=[str(h) for h in HYPER])
def test_matches_torch_sparse_adagrad(hyper):
    torch = pytest.importorskip("torch")
    emb, _ = train_lucid(True, **hyper)
    ref = torch.nn.Embedding(N, D, sparse=True)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(start_table()))
    opt = torch.optim.Adagrad(ref.parameters(), **hyper)
    for idx in batches(50):
        opt.zero_grad()
        loss_of_t = ref(torch.from_numpy(idx))
        ((loss_of_t * loss_of_t).sum() * 0.1 + (loss_of_t * 0.3).sum()).backward()
        assert ref.weight.grad.is_sparse
        opt.step()
    np.testing.assert_allclose(np.array(emb.weight.data), ref.weight.detach().numpy(), atol=1e-5)


def numpy_lazy_adagrad(steps, lr, wd, decoupled, eps=1e-10):
    """float64 transcription of the documented rule with lazy decay: only rows a batch
    touches are decayed and updated; repeated rows have their gradients summed."""
    theta, G = start_table().astype(np.float64), np.zeros((N, D))
    for idx in batches(steps):
        flat = idx.reshape(-1)
        dense = np.zeros((N, D))
        np.add.at(dense, flat, grad_rule(theta[flat]))
        for r in np.unique(flat):
            g = dense[r]
            if decoupled:
                theta[r] = theta[r] * (1 - lr * wd)
            else:
                g = g + wd * theta[r]
            G[r] += g * g
            theta[r] = theta[r] - lr * g / (np.sqrt(G[r]) + eps)
    return theta, G


@pytest.mark.parametrize("decoupled", [True, False], ids=["decoupled", "coupled"])
def test_lazy_weight_decay_against_numpy(decoupled):
    emb, opt = train_lucid(
        True, steps=30, lr=0.1, weight_decay=0.2, decoupled_weight_decay=decoupled
    )
    theta, G = numpy_lazy_adagrad(30, 0.1, 0.2, decoupled)
    np.testing.assert_allclose(np.array(emb.weight.data), theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(opt.state[emb.weight]["sum"]), G, rtol=1e-5, atol=1e-6)
    untouched = slice(12, N)  # batches() draws rows 0..11: the rest never decays
    np.testing.assert_array_equal(np.array(emb.weight.data)[untouched], start_table()[untouched])


def test_coupled_decay_gathers_rows_when_the_lookup_is_stale():
    # a second step on the same gradient: θ has changed, so the rows recorded at lookup
    # no longer apply and the step must read θ itself
    hyper = dict(lr=0.1, weight_decay=0.5, decoupled_weight_decay=False)
    results = []
    for sparse in (True, False):
        emb = nn.Embedding(N, D, sparse=sparse)
        emb.weight.data = mx.array(start_table())
        opt = optim.Adagrad(emb.parameters(), **hyper)
        idx = np.arange(N).reshape(8, 5)  # every row, so lazy and dense decay agree
        loss_of(emb(idx)).backward()
        opt.step()
        opt.step()
        results.append(np.array(emb.weight.data))
    np.testing.assert_allclose(results[0], results[1], atol=1e-6)


# --------------------------------------------------------------------------- gradients


def test_backward_gives_a_sparse_gradient_equal_to_the_dense_one():
    idx = batches(1)[0]
    grads = []
    for sparse in (True, False):
        emb = nn.Embedding(N, D, sparse=sparse)
        emb.weight.data = mx.array(start_table())
        loss_of(emb(idx)).backward()
        grads.append(emb.weight.grad)
    sparse_grad, dense_grad = grads
    assert isinstance(sparse_grad, SparseGrad)
    assert sparse_grad.shape == (N, D) and sparse_grad.nnz == idx.size
    assert sparse_grad.values.shape == (idx.size, D)  # never a table-sized array
    np.testing.assert_allclose(np.array(sparse_grad.to_dense()), dense_grad.numpy(), atol=1e-6)


def test_padding_idx_rows_get_no_gradient_and_never_change():
    pad = 3
    idx_batches = batches(20)
    assert any((b == pad).any() for b in idx_batches)
    emb, opt = train_lucid(True, steps=20, padding_idx=pad, lr=0.1)
    dense, _ = train_lucid(False, steps=20, padding_idx=pad, lr=0.1)
    np.testing.assert_array_equal(np.array(emb.weight.data)[pad], start_table()[pad])
    np.testing.assert_array_equal(np.array(opt.state[emb.weight]["sum"])[pad], np.zeros(D))
    np.testing.assert_allclose(np.array(emb.weight.data), np.array(dense.weight.data), atol=1e-6)
    emb.zero_grad()
    loss_of(emb(idx_batches[0])).backward()
    np.testing.assert_array_equal(np.array(emb.weight.grad.to_dense())[pad], np.zeros(D))


def test_sparse_plus_dense_use_of_one_table_densifies_correctly():
    idx = batches(1)[0]
    grads = []
    for sparse in (True, False):
        emb = nn.Embedding(N, D, sparse=sparse)
        emb.weight.data = mx.array(start_table())
        (loss_of(emb(idx)) + (emb.weight * emb.weight).sum() * 0.5).backward()
        grads.append(emb.weight.grad)
    assert isinstance(grads[0], lucid.Tensor)  # sparse + dense = dense
    np.testing.assert_allclose(grads[0].numpy(), grads[1].numpy(), atol=1e-6)


@pytest.mark.parametrize("order", ["sparse-then-dense", "dense-then-sparse"])
def test_accumulating_sparse_and_dense_across_backward_calls(order):
    idx = batches(1)[0]
    emb = nn.Embedding(N, D, sparse=True)
    emb.weight.data = mx.array(start_table())
    parts = [lambda: loss_of(emb(idx)), lambda: (emb.weight * 2.0).sum()]
    for make in parts if order == "sparse-then-dense" else parts[::-1]:
        make().backward()
    expected = np.zeros((N, D), np.float32)
    np.add.at(expected, idx.reshape(-1), grad_rule(start_table()[idx.reshape(-1)]))
    np.testing.assert_allclose(emb.weight.grad.numpy(), expected + 2.0, atol=1e-5)


def test_sparse_plus_sparse_concatenates():
    a, b = batches(2)
    emb = nn.Embedding(N, D, sparse=True)
    loss_of(emb(a)).backward()
    loss_of(emb(b)).backward()
    g = emb.weight.grad
    assert isinstance(g, SparseGrad) and g.nnz == a.size + b.size
    ref = nn.Embedding(N, D)
    ref.weight.data = emb.weight.data
    loss_of(ref(a)).backward()
    loss_of(ref(b)).backward()
    np.testing.assert_allclose(np.array(g.to_dense()), ref.weight.grad.numpy(), atol=1e-6)


# --------------------------------------------------------------------------- SparseGrad


def test_to_dense_and_coalesce_sum_repeats():
    idx = np.array([4, 1, 4, 0, 1, 4])
    vals = np.arange(18, dtype=np.float32).reshape(6, 3)
    g = SparseGrad(idx, vals, (6, 3))
    expected = np.zeros((6, 3), np.float32)
    np.add.at(expected, idx, vals)
    np.testing.assert_array_equal(np.array(g.to_dense()), expected)
    c = g.coalesce()
    np.testing.assert_array_equal(np.array(c.indices), [0, 1, 4])
    np.testing.assert_array_equal(np.array(c.values), expected[[0, 1, 4]])


def test_coalesce_fixed_keeps_the_shape_and_masks_padding():
    idx = mx.array([4, 1, 4, 0, 1, 4])
    vals = mx.arange(18, dtype=mx.float32).reshape(6, 3)
    index, summed, valid, _ = coalesce_fixed(idx, vals)
    assert summed.shape == (6, 3)
    np.testing.assert_array_equal(np.array(valid), [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(np.array(index)[:3], [0, 1, 4])
    np.testing.assert_array_equal(np.array(summed)[3:], 0)
    np.testing.assert_array_equal(
        np.array(summed)[:3], np.array(SparseGrad(idx, vals, (6, 3)).coalesce().values)
    )


@pytest.mark.parametrize(
    ("indices", "values", "shape", "match"),
    [
        ([0, 1], np.zeros((2, 3)), (4, 3, 1), "2-D"),
        ([0.0, 1.0], np.zeros((2, 3)), (4, 3), "integer"),
        ([0, 1], np.zeros((3, 3)), (4, 3), r"\(nnz, D\)"),
    ],
)
def test_sparse_grad_validates(indices, values, shape, match):
    with pytest.raises(ValueError, match=match):
        SparseGrad(indices, values, shape)


def test_zero_grad_clears_a_sparse_gradient():
    emb = nn.Embedding(N, D, sparse=True)
    opt = optim.Adagrad(emb.parameters())
    loss_of(emb(batches(1)[0])).backward()
    assert isinstance(emb.weight.grad, SparseGrad)
    opt.zero_grad()
    assert emb.weight.grad is None


# --------------------------------------------------------------------------- optimizer


class PlainSGD(Optimizer):
    """A rule without sparse support, to check the base class refuses SparseGrad."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))

    def step_hyperparameters(self, group, t):
        return {"lr": group["lr"]}

    @staticmethod
    def update(param, grad, state, hyper):
        return param - hyper["lr"] * grad, state


def test_optimizer_without_sparse_support_refuses_and_changes_nothing():
    emb = nn.Embedding(N, D, sparse=True)
    other = nn.Parameter(mx.ones((3,)))
    opt = PlainSGD([other, emb.weight])
    (loss_of(emb(batches(1)[0])) + other.sum()).backward()
    before = np.array(other.data)
    with pytest.raises(TypeError, match=r"params\[1\].*PlainSGD does not support sparse"):
        opt.step()
    np.testing.assert_array_equal(np.array(other.data), before)
    assert opt.state[other]["step"].item() == 0


def test_two_evals_per_sparse_step_and_one_trace_with_lr_changing(monkeypatch):
    """A step with row-sparse gradients makes two evaluations: the looked-up rows first
    (so the table's scatter can write in place), then everything else at once."""
    emb = nn.Embedding(N, D, sparse=True)
    lin = nn.Linear(D, 1)  # a dense parameter in the same group: one eval for both kinds
    opt = optim.Adagrad([*emb.parameters(), *lin.parameters()], lr=0.1)
    calls = []
    real_eval = mx.eval
    monkeypatch.setattr(mx, "eval", lambda *a: (calls.append(1), real_eval(*a))[1])
    for i, idx in enumerate(batches(12)):
        opt.param_groups[0]["lr"] = 0.1 / (1 + i)
        opt.zero_grad()
        lin(emb(idx)).sum().backward()
        before = len(calls)
        opt.step()
        assert len(calls) == before + 2
    assert opt.trace_count == 2  # one dense trace, one sparse trace, over 12 steps


def test_state_dict_round_trip_with_sparse_training():
    hyper = dict(lr=0.1, weight_decay=0.05)
    emb, opt = train_lucid(True, steps=10, **hyper)
    saved_state, saved_table = opt.state_dict(), mx.array(emb.weight.data)
    assert set(saved_state["state"][0]) == {"step", "sum"}
    assert saved_state["state"][0]["sum"].shape == (N, D)  # G stays a dense table

    resumed = nn.Embedding(N, D, sparse=True)
    resumed.weight.data = saved_table
    resumed_opt = optim.Adagrad(resumed.parameters(), **hyper)
    resumed_opt.load_state_dict(saved_state)
    for model, o in ((emb, opt), (resumed, resumed_opt)):
        for idx in batches(10, seed=5):
            o.zero_grad()
            loss_of(model(idx)).backward()
            o.step()
    np.testing.assert_array_equal(np.array(emb.weight.data), np.array(resumed.weight.data))


def test_an_empty_lookup_advances_the_step_only():
    emb = nn.Embedding(N, D, sparse=True)
    opt = optim.Adagrad(emb.parameters(), weight_decay=0.1)
    before = np.array(emb.weight.data)
    emb(np.zeros((0,), np.int32)).sum().backward()
    opt.step()
    np.testing.assert_array_equal(np.array(emb.weight.data), before)
    assert opt.state[emb.weight]["step"].item() == 1


# --------------------------------------------------------------------------- example


def test_sparse_ctr_example_learns():
    pytest.importorskip("tqdm")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sparse_ctr.py"), "--quick"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    auc = float(result.stdout.rsplit("test AUC ", 1)[1].split()[0])
    assert auc > 0.65, result.stdout


def test_benchmark_section_runs_quick_and_agrees_with_torch():
    pytest.importorskip("torch")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.common import Settings
    from benchmarks.sparse import section_sparse

    sec = section_sparse(Settings.quick_settings())
    assert sec.parity_ok, sec.data
    assert set(sec.data["results"]) == {"lucid sparse (SparseGrad)", "torch sparse", "lucid dense"}
    assert sec.data["peak_bytes"] < 20_000 * 16 * 4  # less than the table: rows-sized


LOOPS = {
    # the loss is never read: the pending forward lookup would pin the table, and MLX
    # would copy it in the step's scatter, unless the step settles the lookup first
    "loss-never-read": lambda loss: None,
    "loss-read-first": lambda loss: loss.item() and None,
    "loss-evaluated-after": lambda loss: loss,
}


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.Adagrad(ps, lr=0.1),
        lambda ps: optim.Adam(ps, lr=0.01),
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
    ],  # fmt: skip
    ids=["Adagrad", "Adam", "SGD-momentum"],
)
def test_sparse_step_stays_in_place_however_the_loop_is_written(loop: str, make) -> None:
    """Peak memory during the step stays far below the table's size in every loop shape:
    nothing copies the table or its state (memory, not time)."""
    rows, dim = 100_000, 32
    table_bytes = rows * dim * 4
    emb, lin = nn.Embedding(rows, dim, sparse=True), nn.Linear(dim, 1)
    opt = make([*emb.parameters(), *lin.parameters()])
    rng = np.random.default_rng(0)
    peaks = []
    for _ in range(4):
        opt.zero_grad()
        loss = lin(emb(rng.integers(0, rows, 256))).sum()  # the shape that fell into it
        loss.backward()
        kept = LOOPS[loop](loss)
        mx.eval([p.data for p in emb.parameters()])
        mx.reset_peak_memory()
        base = mx.get_active_memory()
        opt.step()
        peaks.append(mx.get_peak_memory() - base)
        if kept is not None:
            mx.eval(kept.data)
    worst = max(peaks[1:])
    assert worst < table_bytes / 10, f"peak extra {worst} B, table {table_bytes} B"

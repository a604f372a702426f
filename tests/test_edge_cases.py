"""Edge cases of the optimizer, sparse gradients and checkpoints, each once a bug.

References: torch where it has the same behaviour, the dense path for the sparse one,
float64 NumPy for precision.
"""

from __future__ import annotations

import json
import os
import struct

import mlx.core as mx
import numpy as np
import pytest
import torch

import lucid
from lucid import nn
from lucid.optim import Adagrad
from lucid.serialization import CheckpointError


def _grad(p: nn.Parameter, value: float = 1.0) -> None:
    p.grad = lucid.Tensor(mx.full(p.shape, value, dtype=p.dtype))


# ---------------------------------------------------------------------------- optimizer


def test_float64_parameters_are_updated_in_float64() -> None:
    with mx.stream(mx.cpu):  # float64 runs on the CPU backend only
        start = np.array([1 + 1e-12, -2.5], dtype=np.float64)
        p = nn.Parameter(mx.array(start, dtype=mx.float64))
        opt = Adagrad([p], lr=0.1)
        p.grad = lucid.Tensor(mx.array([0.3, -0.7], dtype=mx.float64))
        opt.step()
        g = np.array([0.3, -0.7])
        # the hyperparameters enter the compiled step as float32 scalars (documented)
        lr, eps = float(np.float32(0.1)), float(np.float32(1e-10))
        expected = start - lr * g / (np.sqrt(g * g) + eps)
        assert p.dtype == mx.float64
        np.testing.assert_allclose(np.array(p.data), expected, rtol=1e-15, atol=0)


def test_numpy_scalar_hyperparameters_are_accepted_and_saved(tmp_path) -> None:
    p = nn.Parameter([1.0, 2.0])
    opt = Adagrad([p], lr=np.float32(0.5), weight_decay=np.float64(0.0))
    _grad(p)
    opt.step()
    lucid.save(opt.state_dict(), tmp_path / "opt.ckpt")
    assert lucid.load(tmp_path / "opt.ckpt")["param_groups"][0]["lr"] == 0.5


def test_hyperparameter_errors_name_the_group() -> None:
    opt = Adagrad(
        [
            nn.Parameter([1.0]),
        ]
    )
    with pytest.raises(ValueError, match=r"param group 1: .*lr .* -1"):
        opt.add_param_group({"params": [nn.Parameter([2.0])], "lr": -1})


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda s: s.__setitem__("step", 0), id="int-step"),
        pytest.param(lambda s: s.pop("sum"), id="missing-sum"),
        pytest.param(lambda s: s.__setitem__("extra", mx.zeros(3)), id="extra-key"),
    ],
)
def test_bad_state_is_refused_before_any_group_steps(corrupt) -> None:
    a, b = nn.Parameter([1.0, 2.0, 3.0]), nn.Parameter([4.0, 5.0, 6.0])
    opt = Adagrad([{"params": [a]}, {"params": [b]}], lr=0.1)
    _grad(a), _grad(b)
    opt.step()
    corrupt(opt.state[b])
    before = np.array(a.data), np.array(opt.state[a]["sum"]), int(opt.state[a]["step"].item())
    _grad(a), _grad(b)
    with pytest.raises((ValueError, TypeError), match=r"param group 1, params\[0\]"):
        opt.step()
    np.testing.assert_array_equal(np.array(a.data), before[0])
    np.testing.assert_array_equal(np.array(opt.state[a]["sum"]), before[1])
    assert int(opt.state[a]["step"].item()) == before[2]


def test_a_step_counter_read_from_state_belongs_to_its_parameter() -> None:
    a, b = nn.Parameter([1.0]), nn.Parameter([1.0])
    oa, ob = Adagrad([a]), Adagrad([b])
    for o, p in ((oa, a), (ob, b)):
        _grad(p)
        o.step()
    counter = oa.state[a]["step"]
    counter += 5  # an in-place write on an mx.array
    assert ob.state[b]["step"].item() == 1
    _grad(b)
    ob.step()
    assert ob.state[b]["step"].item() == 2


def test_load_state_dict_gives_fresh_state_from_the_loaded_hyperparameters() -> None:
    p = nn.Parameter([1.0, 2.0, 3.0])
    opt = Adagrad([p], initial_accumulator_value=0.0)
    saved = Adagrad([nn.Parameter([0.0, 0.0, 0.0])], initial_accumulator_value=0.5).state_dict()
    saved["state"] = {}  # never stepped in the saved run
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["initial_accumulator_value"] == 0.5
    np.testing.assert_array_equal(np.array(opt.state[p]["sum"]), [0.5, 0.5, 0.5])


# ---------------------------------------------------------------------------- sparse


def _embedding_run(sparse: bool, indices: list[list[int]], dtype=mx.float32):
    lucid.manual_seed(0)
    emb = nn.Embedding(6, 3, sparse=sparse)
    emb.weight.data = emb.weight.data.astype(dtype)
    opt = Adagrad(emb.parameters(), lr=0.1, initial_accumulator_value=0.1)
    for idx in indices:
        opt.zero_grad()
        out = emb(lucid.tensor(np.array(idx, dtype=np.int32)))
        (
            out * lucid.tensor(np.arange(out.size, dtype=np.float32).reshape(out.shape))
        ).sum().backward()
        opt.step()
    return emb, opt


def test_negative_indices_are_the_same_rows_sparse_and_dense() -> None:
    steps = [[5, -1, 2], [-6, 0, -1], [1, 1, -2]]
    dense, d_opt = _embedding_run(False, steps)
    sparse, s_opt = _embedding_run(True, steps)
    np.testing.assert_allclose(np.array(sparse.weight.data), np.array(dense.weight.data), rtol=1e-6)
    np.testing.assert_allclose(
        np.array(s_opt.state[sparse.weight]["sum"]),
        np.array(d_opt.state[dense.weight]["sum"]),
        rtol=1e-6,
    )


def test_a_half_precision_sparse_embedding_steps() -> None:
    emb, opt = _embedding_run(True, [[0, 1, 1], [2, 0, 5]], dtype=mx.float16)
    assert emb.weight.dtype == mx.float16
    assert opt.state[emb.weight]["sum"].dtype == mx.float16


def test_zero_grad_without_none_keeps_sparse_training_sparse() -> None:
    emb = nn.Embedding(4, 2, sparse=True)
    opt = Adagrad(emb.parameters())
    emb(lucid.tensor(np.array([1, 2], dtype=np.int32))).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert emb.weight.grad is None
    emb(lucid.tensor(np.array([3], dtype=np.int32))).sum().backward()
    assert isinstance(emb.weight.grad, lucid.SparseGrad)


def test_varying_batch_sizes_trace_the_sparse_step_once_per_power_of_two() -> None:
    emb = nn.Embedding(50, 4, sparse=True)
    opt = Adagrad(emb.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    for n in range(17, 33):  # 16 batch sizes, one power-of-two bucket (32)
        opt.zero_grad()
        emb(lucid.tensor(rng.integers(0, 50, n).astype(np.int32))).sum().backward()
        opt.step()
    assert opt.trace_count == 1


def test_sparse_parity_with_torch_for_varying_batch_sizes() -> None:
    """Padding the entries changes nothing: compare with torch for odd batch sizes."""
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((20, 3)).astype(np.float32)
    emb = nn.Embedding(20, 3, sparse=True)
    emb.weight.data = mx.array(w0)
    t_emb = torch.nn.Embedding(20, 3, sparse=True)
    t_emb.weight.data = torch.tensor(w0)
    opt, t_opt = Adagrad(emb.parameters(), lr=0.1), torch.optim.Adagrad(t_emb.parameters(), lr=0.1)
    for n in (3, 5, 7, 9, 1, 6):
        idx = rng.integers(0, 20, n)
        coef = rng.standard_normal((n, 3)).astype(np.float32)
        opt.zero_grad(), t_opt.zero_grad()
        (emb(lucid.tensor(idx.astype(np.int32))) * lucid.tensor(coef)).sum().backward()
        (t_emb(torch.tensor(idx)) * torch.tensor(coef)).sum().backward()
        opt.step(), t_opt.step()
    np.testing.assert_allclose(
        np.array(emb.weight.data), t_emb.weight.detach().numpy(), rtol=1e-6, atol=1e-7
    )


# ---------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_gets_the_mode_an_ordinary_file_would(tmp_path) -> None:
    umask = os.umask(0o022)
    try:
        lucid.save({"x": mx.ones(2)}, tmp_path / "new.ckpt")
        assert (tmp_path / "new.ckpt").stat().st_mode & 0o777 == 0o644
        (tmp_path / "old.ckpt").write_bytes(b"")
        os.chmod(tmp_path / "old.ckpt", 0o640)
        lucid.save({"x": mx.ones(2)}, tmp_path / "old.ckpt")
        assert (tmp_path / "old.ckpt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


def test_a_long_file_name_saves(tmp_path) -> None:
    path = tmp_path / ("c" * 240)
    lucid.save({"x": mx.ones(2)}, path)
    assert mx.array_equal(lucid.load(path)["x"], mx.ones(2)).item()


def test_a_dimension_beyond_int32_is_refused(tmp_path) -> None:
    meta = json.dumps({"format": "lucid.checkpoint.v1", "tree": {"__array__": "a0"}})
    header = json.dumps(
        {
            "__metadata__": {"lucid": meta},
            "a0": {"dtype": "F32", "shape": [2**31, 0], "data_offsets": [0, 0]},
        }
    ).encode()
    path = tmp_path / "huge.ckpt"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(CheckpointError, match="bad header entry"):
        lucid.load(path)


def test_a_fifo_or_folder_is_refused_without_blocking(tmp_path) -> None:
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path):
        with pytest.raises(CheckpointError, match="not a regular file"):
            lucid.load(path)

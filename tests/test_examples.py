"""Every example script runs in its quick mode and prints what it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
EXAMPLES = ROOT / "examples"

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

# script, quick-mode arguments ("{tmp}": a fresh folder), a pattern the output must contain
CASES = [
    ("quickstart.py", [], r"learned param \[.*\] \(data made with \[1\.25, 1\.75, 3\.25\]"),
    (
        "linear_regression.py",
        ["--steps", "200"],
        r"recovered w = \[\+(1\.99|2\.00)\d, -(2\.99|3\.00)\d",
    ),
    (
        "compare_optimizers.py",
        ["--steps", "40", "--out", "{tmp}/plot.png"],
        r"lowest final loss: (Adam|AdamW|Adagrad), \d+x lower than SGD",
    ),
]
# sparse_ctr.py: in test_sparse.py; train_distributed.py (2 processes): in
# test_distributed.py; mlx_transformer.py: in test_examples_mlx.py
TESTED_BELOW = {"train_digits.py", "sparse_ctr.py", "train_distributed.py", "mlx_transformer.py"}


def run(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(("script", "args", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_example_runs(script: str, args: list[str], pattern: str, tmp_path: Path):
    result = run(script, [a.format(tmp=tmp_path) for a in args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(pattern, result.stdout), result.stdout


def test_every_example_is_tested():
    assert {p.name for p in EXAMPLES.glob("*.py")} == {c[0] for c in CASES} | TESTED_BELOW


def test_train_digits_trains_saves_reloads_and_resumes(tmp_path: Path):
    out = tmp_path / "loss.png"
    result = run("train_digits.py", ["--epochs", "2", "--out", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    said = {
        key.strip(): value.strip()
        for key, value in (line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    }
    assert said["train loss right before saving"] == said["fresh model, after loading"]
    assert said["fresh model, before loading"] != said["fresh model, after loading"]
    assert said["reloaded optimizer state equals the saved one"] == "True"
    assert "max parameter difference 0.0e+00" in result.stdout
    assert re.search(r"test accuracy (\d+\.\d\d)%", result.stdout)
    assert out.stat().st_size > 10_000
    assert (tmp_path / "checkpoints" / "digits.ckpt").exists()

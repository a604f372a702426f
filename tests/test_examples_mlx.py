"""examples/mlx_transformer.py: an mlx.nn model trained by lucid.optim.AdamW, in a short run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import lucid

SCRIPT = Path(__file__).parents[1] / "examples" / "mlx_transformer.py"


def test_mlx_transformer_trains_and_saves(tmp_path: Path) -> None:
    ckpt = tmp_path / "lm.lucid"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "40", "--save", str(ckpt)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    fell = re.search(r"loss fell from (\d+\.\d+) to (\d+\.\d+)", result.stdout)
    assert fell, result.stdout
    first, last = map(float, fell.groups())
    assert last < 0.85 * first, result.stdout  # 40 steps: about 3.5 to 2.4
    assert "(15 with weight decay, 15 without)" in result.stdout

    saved = lucid.load(ckpt)
    optim = saved["optimizer"]
    assert [g["weight_decay"] for g in optim["param_groups"]] == [0.1, 0.0]
    assert len(optim["state"]) == len(saved["model"]) == 30
    assert {s["step"].item() for s in optim["state"].values()} == {40.0}

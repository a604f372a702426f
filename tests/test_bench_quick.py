"""The benchmark suite in --quick mode: it completes and its results are right.

Only results are asserted (parity with the NumPy reference, no retrace, a complete
report), never timings: those depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import run  # noqa: E402

OPTIMIZER_SECTIONS = ["A", "B", "C"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    sections = run.main(["--quick", "--warm-kernel-cache", "--out", str(out)])
    return {sec.key: sec for sec in sections}, out.read_text()


def test_every_section_ran(quick):
    sections, _ = quick
    assert list(sections) == ["A", "B", "C", "sparse", "mlp"]


@pytest.mark.parametrize("key", OPTIMIZER_SECTIONS)
def test_optimizer_section_matches_numpy(quick, key):
    sec = quick[0][key]
    results = sec.data["results"]
    assert "lucid.optim.Adagrad" in results
    assert len(results) == 7  # lucid, 2 x mlx, 3 x torch, numpy
    for name, r in results.items():
        assert "error" not in r, f"{name}: {r.get('error')}"
        assert r["parity"], f"{name}: {r['worst']:.1f} x the tolerance away from NumPy"
        assert math.isfinite(r["ms"]) and r["ms"] > 0
    assert sec.parity_ok
    assert "parity ok" in sec.notes


@pytest.mark.parametrize("key", OPTIMIZER_SECTIONS)
def test_lucid_does_not_retrace_when_lr_changes(quick, key):
    assert quick[0][key].data["retraced"] is False


@pytest.mark.parametrize("key", OPTIMIZER_SECTIONS)
def test_lucid_memory_was_measured(quick, key):
    extra = quick[0][key].data["results"]["lucid.optim.Adagrad"]["extra_bytes"]
    assert isinstance(extra, int) and extra >= 0


def test_mlp_losses_agree(quick):
    sec = quick[0]["mlp"]
    results = sec.data["results"]
    assert len(results) == 3
    curves = [r["losses"] for r in results.values()]
    assert all(len(c) == len(curves[0]) for c in curves)
    assert curves[0][-1] < curves[0][0]  # it trains
    assert sec.parity_ok


def test_report_written(quick):
    _, text = quick
    assert text.startswith("# lucid benchmarks")
    for heading in ["## A:", "## B:", "## C:", "## mlp:", "| machine", "torch"]:
        assert heading in text
    assert "FAIL" not in text


def test_only_runs_one_section():
    sections = run.main(["--quick", "--warm-kernel-cache", "--only", "C"])
    assert [s.key for s in sections] == ["C"]


def test_only_rejects_unknown_section():
    with pytest.raises(SystemExit):
        run.main(["--quick", "--only", "Z"])

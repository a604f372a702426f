"""The example notebooks run top to bottom without an error, and are committed clean.

The kernel is this very interpreter: a kernelspec written into a temporary folder
points at ``sys.executable``, so the test needs no ``ipykernel install`` and finds
lucid wherever the test run finds it (a fresh clone after ``pip install -e .[test,examples]``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("ipykernel.kernelspec")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).parents[1] / "examples" / "notebooks").glob("*.ipynb"))
KERNEL = "lucid-test-python"


@pytest.fixture(scope="module")
def kernel_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("kernels")
    kernelspec.write_kernel_spec(root / KERNEL)  # argv: [sys.executable, -m, ipykernel_launcher]
    return [str(root)]


def test_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"adagrad_quickstart.ipynb", "compare_optimizers.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name


def test_notebooks_match_their_builder():
    """The committed files are exactly what ``examples/notebooks/build.py`` writes."""
    folder = NOTEBOOKS[0].parent
    spec = importlib.util.spec_from_file_location("build_notebooks", folder / "build.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    for name, cells in builder.NOTEBOOKS.items():
        expected = nbformat.writes(builder.build(cells))
        assert (folder / f"{name}.ipynb").read_text().rstrip("\n") == expected.rstrip("\n"), name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, kernel_dirs: list[str], tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # the kernel inherits this environment
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=kernel_dirs)
    )
    assert km.kernel_spec.argv[0] == sys.executable
    client = nbclient.NotebookClient(
        nb, km=km, timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors

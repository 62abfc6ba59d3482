"""The notebooks in notebooks/ run top to bottom, and are committed without outputs.

Each notebook is executed with nbclient by a kernel of this very interpreter (a kernelspec
written for the test, so a `python3` kernel installed elsewhere on the machine cannot be
picked up instead), in a temporary working directory, with a per-cell timeout. They use
small settings (about a minute each on 2 CPU cores); see notebooks/README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds, per cell; a whole notebook takes about a minute
KERNEL_NAME = "cnnbuilder-test-python"


def test_there_are_notebooks():
    names = [p.name for p in NOTEBOOKS]
    for expected in ("01_quickstart.ipynb", "02_resnet_vs_densenet.ipynb",
                     "03_gradients_and_depth.ipynb", "04_tuning.ipynb", "05_custom_recipe.ipynb"):
        assert expected in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {index} has outputs"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"
    assert nb.metadata.get("kernelspec", {}).get("language") == "python"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def _kernel_manager(directory: Path):
    """A KernelManager whose only kernelspec runs ipykernel with sys.executable."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernels = directory / "kernels"
    write_kernel_spec(kernels / KERNEL_NAME, overrides={"display_name": "cnnbuilder tests"})
    spec = json.loads((kernels / KERNEL_NAME / "kernel.json").read_text())
    assert Path(spec["argv"][0]).resolve() == Path(sys.executable).resolve()
    specs = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    # One more cell: the kernel must be this interpreter (the project's environment).
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = NotebookClient(nb, km=_kernel_manager(tmp_path), timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error

    executable = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    if any("show(fig)" in c.source for c in nb.cells if c.cell_type == "code"):
        images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                  if "image/png" in o.get("data", {})]
        assert images, f"{path.name} draws figures but displayed none"
    # The notebook wrote into its working directory only, never into the checkout.
    assert not (NOTEBOOK_DIR / "runs").exists()

"""The notebooks execute top to bottom on the CPU and draw their figures, so they cannot rot unnoticed.

attention_maps.ipynb runs from notebooks/ with no checkpoints given, so it fits its own tiny stand-ins into a
temporary runs directory; results.ipynb then runs from the project root on that directory (and on an empty one).
Parameters are set the papermill way: a cell inserted after the one tagged ``parameters``.
"""

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
IMAGES = 2


def execute(name: str, cwd: Path, **parameters) -> nbformat.NotebookNode:
    """The executed notebook (outputs included); a cell that raises fails the test with its traceback."""
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items())))
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(cwd)}}).execute()
    kernel_prefix = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    assert kernel_prefix == sys.prefix, f"the kernel ran {kernel_prefix}'s Python, not this one ({sys.prefix})"
    return nb


def images(cell: nbformat.NotebookNode) -> int:
    return sum(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def text(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/markdown", "")
                   for c in nb.cells for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def attention_maps(tmp_path_factory) -> tuple[Path, nbformat.NotebookNode]:
    """attention_maps.ipynb run from notebooks/ with absent checkpoints: the runs directory it filled, the notebook."""
    runs = tmp_path_factory.mktemp("notebook-runs")
    absent = str(runs / "absent.ckpt")
    nb = execute("attention_maps.ipynb", ROOT / "notebooks", MLM_CKPT=absent, VIT_CKPT=absent, RUNS_DIR=str(runs),
                 MLM_STEPS=6, VIT_EPOCHS=1, IMAGES=IMAGES)
    return runs, nb


def test_attention_maps_fits_stand_ins_and_draws_every_figure(attention_maps):
    runs, nb = attention_maps
    assert (runs / "notebook-mlm" / "checkpoints" / "last.ckpt").is_file()
    assert (runs / "notebook-vit" / "checkpoints" / "best.ckpt").is_file()
    drawn = [images(c) for c in nb.cells if c.cell_type == "code"]
    # bert-tiny: 2 layers of heads, the rollout, the masks; the ViT: the confusion matrix, one figure per digit
    assert [n for n in drawn if n] == [2, 1, 1, 1, IMAGES], drawn
    assert "[MASK]" in text(nb)


def test_results_draws_learning_curves_of_those_runs_and_the_summaries(attention_maps):
    runs, _ = attention_maps
    nb = execute("results.ipynb", ROOT, RUNS_DIR=str(runs))
    assert [n for n in (images(c) for c in nb.cells) if n] == [1, 1]  # the curves, the comparison
    shown = text(nb)
    assert "notebook-mlm/version_0" in shown and "notebook-vit/version_0" in shown
    assert "| Result | Data |" in shown and "No runs under" not in shown


def test_results_without_runs_says_so_and_still_compares_the_summaries(tmp_path):
    nb = execute("results.ipynb", ROOT / "notebooks", RUNS_DIR=str(tmp_path))
    assert [n for n in (images(c) for c in nb.cells) if n] == [1]
    assert "No runs under" in text(nb)


@pytest.mark.parametrize("name", ["attention_maps.ipynb", "results.ipynb"])
def test_notebooks_are_committed_without_outputs(name):
    """Outputs (PNGs, paths, timings) would make every diff huge and stale; clear them before committing."""
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")

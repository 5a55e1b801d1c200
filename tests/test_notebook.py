"""notebooks/compare_runs.ipynb runs from top to bottom against a small MLflow store (so it never rots)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import nbformat
from nbclient import NotebookClient

from conftest import REPO
from sweep_support import EXPERIMENT, add_run, new_store

NOTEBOOK = REPO / "notebooks" / "compare_runs.ipynb"


def parameters_cell(notebook: nbformat.NotebookNode) -> int:
    (index,) = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    return index


def test_the_notebook_is_parameterised_by_its_first_code_cell() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    index = parameters_cell(notebook)
    assert index == next(i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code")
    assert all(name in notebook.cells[index].source for name in ("TRACKING_URI", "EXPERIMENT", "SWEEPS"))
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # committed clean


def test_the_notebook_shows_the_table_and_curves_of_a_sweep(workdir: Path) -> None:
    uri = new_store(workdir)
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    for skip, accuracies in (("skip", [0.80, 0.84]), ("rskip_ln-r2", [0.90, 0.94])):
        for seed, acc in enumerate(accuracies):
            tags = {"sweep": "nb", "sweep_cell": f"skip={skip}", "seed": str(seed), "task": "ClassificationTask",
                    "net": "resnet20", "data": "digits", "skip": skip}  # fmt: skip
            add_run(client, experiment_id, tags=tags, metrics={"test/acc": [acc], "val/acc": [acc - 0.2, acc - 0.1]})

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    overrides = f"TRACKING_URI = {uri!r}\nEXPERIMENT = {EXPERIMENT!r}\nSWEEPS = ['nb']"
    notebook.cells.insert(parameters_cell(notebook) + 1, nbformat.v4.new_code_cell(overrides))
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "| resnet20 | rskip_ln-r2 | 0.9200 ± 0.0283 (n=2) | 0.8200 ± 0.0283 (n=2) |" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the curves of val/acc, and the two runs side by side


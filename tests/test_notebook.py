"""notebooks/compare_runs.ipynb runs from top to bottom against a small MLflow store (so it never rots)."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import lightning
import mlflow
import nbformat
import torch
from nbclient import NotebookClient

from conftest import REPO
from skipln.models.resnet import ResNet
from skipln.skip import Plain, RecursiveSkipLN
from skipln.tasks.classification import ClassificationTask
from sweep_support import EXPERIMENT, add_run, new_store

NOTEBOOK = REPO / "notebooks" / "compare_runs.ipynb"


#: The strategy of each fake run's tag, as the CLI stores it in a checkpoint's config.
SKIPS = {"skip": {"class_path": "skipln.skip.Plain"}, "rskip_ln-r2": {"class_path": "skipln.skip.RecursiveSkipLN", "init_args": {"recursions": 2}}}


def write_checkpoint(path: Path, skip: dict[str, Any]) -> None:
    """A checkpoint as `main.py fit` writes one: the task's config in its hparams, the weights of that network."""
    net = {"class_path": "skipln.models.resnet.ResNet", "init_args": {"depth": 8, "block": "basic", "in_channels": 1, "width": 4, "skip": skip}}
    hparams = {"_class_path": "skipln.tasks.classification.ClassificationTask", "_instantiator": "lightning.pytorch.cli.instantiate_module",
               "num_classes": 10, "net": net, "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}}  # fmt: skip
    strategy = {"skipln.skip.Plain": Plain, "skipln.skip.RecursiveSkipLN": RecursiveSkipLN}[skip["class_path"]](**skip.get("init_args", {}))
    built = ClassificationTask(ResNet(**{**net["init_args"], "skip": strategy}), optimizer=partial(torch.optim.SGD, lr=0.1), num_classes=10)
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": built.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": lightning.__version__}, path)


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
            run_id = add_run(client, experiment_id, tags=tags, metrics={"test/acc": [acc], "val/acc": [acc - 0.2, acc - 0.1]})
            write_checkpoint(workdir / "mlruns" / experiment_id / run_id / "checkpoints" / "last.ckpt", SKIPS[skip])

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
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert re.search(r"\(seed \d\): ResNet with (Plain\(\)|RecursiveSkipLN\(recursions=2.*\)), [\d,]+ parameters", printed)


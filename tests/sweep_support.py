"""Tiny modules and a fast MLflow store for the sweep, report and notebook tests.

The classes are named by ``class_path`` from the command line of a real ``main.py`` run, so
they live in an importable module (not in a test file, not in the entry script).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule, LightningModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MaxMetric
from torchmetrics.classification import BinaryAccuracy

EXPERIMENT = "skipln"


class Blobs(LightningDataModule):
    """Two Gaussian blobs in 4 dimensions: 32 training, 16 validation and 16 test points."""

    name = "blobs"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        labels = torch.arange(64) % 2
        points = torch.randn(64, 4, generator=generator) + 2.0 * labels[:, None].float()
        self.splits = {
            "train": TensorDataset(points[:32], labels[:32]),
            "val": TensorDataset(points[32:48], labels[32:48]),
            "test": TensorDataset(points[48:], labels[48:]),
        }

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["train"], batch_size=8, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=16)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=16)


class Linear(nn.Module):
    """A logistic regression that names itself like the project's networks do."""

    name = "linear"

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x).squeeze(-1)


class TinyClassifier(LightningModule):
    """Logs what :class:`skipln.tasks.classification.ClassificationTask` logs, in a fraction of a second.

    Logs ``start_step`` (the global step a fit starts from: 0, or the step it resumed at).

    Args:
        lr: SGD learning rate.
        explode_at_step: raise in this training step (a crashing run), if given.
        nan_at_step: return a NaN loss from this step on (a diverging run), if given.
        die_at_step: SIGKILL the process in this step (a killed run), once: only while the file
            ``die_marker`` does not exist, which it then creates.
    """

    def __init__(self, lr: float = 0.5, explode_at_step: int | None = None, nan_at_step: int | None = None,
                 die_at_step: int | None = None, die_marker: str | None = None) -> None:  # fmt: skip
        super().__init__()
        self.net = Linear()
        self.lr = lr
        self.explode_at_step = explode_at_step
        self.nan_at_step = nan_at_step
        self.die_at_step = die_at_step
        self.die_marker = die_marker
        self.val_acc = BinaryAccuracy()
        self.test_acc = BinaryAccuracy()
        self.val_acc_best = MaxMetric()

    def _loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        x, y = batch
        logits = self.net(x)
        return F.binary_cross_entropy_with_logits(logits, y.float()), logits, y

    def on_train_start(self) -> None:
        if self.logger is not None:
            self.logger.log_metrics({"start_step": float(self.global_step)}, step=self.global_step)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if self.explode_at_step is not None and self.global_step >= self.explode_at_step:
            raise RuntimeError("TinyClassifier: exploded on purpose")
        if self.die_at_step is not None and self.global_step >= self.die_at_step and self.die_marker is not None:
            marker = Path(self.die_marker)
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        loss, _, _ = self._loss(batch)
        if self.nan_at_step is not None and self.global_step >= self.nan_at_step:
            loss = loss * float("nan")
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, logits, y = self._loss(batch)
        self.val_acc(logits, y)
        self.log("val/loss", loss)
        self.log("val/acc", self.val_acc)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, logits, y = self._loss(batch)
        self.test_acc(logits, y)
        self.log("test/loss", loss)
        self.log("test/acc", self.test_acc)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


# --- a fast MLflow store -------------------------------------------------------------------


@lru_cache(maxsize=1)
def _template_store() -> Path:
    """An empty SQLite store with MLflow's tables, made once per test process.

    Creating the tables runs MLflow's migrations (several seconds); copying the file is instant.
    """
    import mlflow

    folder = Path(tempfile.mkdtemp(prefix="skipln-mlflow-template-"))
    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    client.search_experiments()
    return folder / "mlflow.db"


def new_store(root: Path) -> str:
    """A fresh, empty MLflow store at ``root/mlruns/mlflow.db``; returns its tracking URI."""
    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    target = root / "mlruns" / "mlflow.db"
    shutil.copyfile(_template_store(), target)
    return f"sqlite:///{target}"


def add_run(
    client: object,
    experiment_id: str,
    *,
    tags: Mapping[str, str],
    metrics: Mapping[str, Sequence[float]] = {},
    status: str = "FINISHED",
) -> str:
    """Create a run with ``tags`` and metric histories (value i at step i); end it with ``status``."""
    from mlflow.entities import Metric

    run = client.create_run(experiment_id, tags=dict(tags))  # type: ignore[attr-defined]
    run_id = run.info.run_id
    history = [
        Metric(key, float(value), timestamp=1_000 + step, step=step)
        for key, values in metrics.items()
        for step, value in enumerate(values)
    ]
    if history:
        client.log_batch(run_id, metrics=history)  # type: ignore[attr-defined]
    if status != "RUNNING":
        client.set_terminated(run_id, status)  # type: ignore[attr-defined]
    return run_id

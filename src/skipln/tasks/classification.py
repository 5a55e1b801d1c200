"""Image classification around any network: cross-entropy, top-k accuracy, optimizer and schedule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from skipln.errors import ConfigError
from skipln.optim import Schedule
from skipln.tasks.base import SkipLNTask
from skipln.tasks.compiling import check_compile
from skipln.tasks.hparams import save_task_hyperparameters
from skipln.tasks.metric_states import persist_metric_states
from skipln.validation import is_int

Batch = tuple[Tensor, Tensor]


def accuracy_name(k: int) -> str:
    """``acc`` for top-1, ``acc_top5`` for top-5."""
    return "acc" if k == 1 else f"acc_top{k}"


class ClassificationTask(SkipLNTask):
    """Trains, evaluates and predicts with a classifier ``net`` (images → logits).

    Logs ``train/loss`` and ``train/acc`` per step and per epoch (Lightning suffixes them
    ``_step`` and ``_epoch``); ``val/loss``, ``val/acc``, ``val/acc_best`` (the best
    ``val/acc`` so far), ``test/loss`` and ``test/acc`` per epoch; and ``<stage>/acc_top<k>``
    for every other ``k`` in ``top_k``. Accuracy is the fraction of correct samples
    (micro-averaged), synchronised across processes under DDP.

    Args:
        net: the network; its output is ``(N, num_classes)`` logits.
        optimizer: builds the optimizer from the network's parameters (``class_path`` in
            YAML, e.g. ``torch.optim.SGD`` with ``init_args: {lr: 0.1, momentum: 0.9}``).
        num_classes: number of classes; must match the network's and the data's.
        schedule: multiplies the learning rate at every optimizer step; none when ``None``.
        top_k: the top-k accuracies to report; must include 1 (``acc``), e.g. ``[1, 5]``
            for CIFAR-100.
        label_smoothing: cross-entropy label smoothing, in [0, 1).
        compile: compile the network with ``torch.compile`` (``nn.Module.compile``, in place, so
            checkpoints keep their parameter names) in :meth:`configure_model`, before the first
            stage. The first steps then pay the compilation (tens of seconds; on CPU it needs a
            C++ compiler); a run option, not stored in checkpoints.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable,
        num_classes: int,
        schedule: Schedule | None = None,
        top_k: Sequence[int] = (1,),
        label_smoothing: float = 0.0,
        compile: bool = False,
    ) -> None:
        super().__init__()
        top_k = _validate(net, num_classes, top_k, label_smoothing)
        # The network's config (under the CLI) travels in the checkpoint, so the checkpoint alone
        # rebuilds it; `compile` is a run option (see skipln.tasks.hparams).
        save_task_hyperparameters(self, ignore=["compile"])
        self.net = net
        self.optimizer = optimizer
        self.schedule = schedule
        self.num_classes = num_classes
        self.top_k = top_k
        self.label_smoothing = label_smoothing
        # Not `self.compile`: that would hide LightningModule.compile (nn.Module's) on the instance.
        self.compile_net = check_compile("ClassificationTask", compile)

        def metrics(stage: str) -> MetricCollection:
            return MetricCollection(
                {accuracy_name(k): MulticlassAccuracy(num_classes, top_k=k, average="micro") for k in top_k},
                prefix=f"{stage}/",
            )

        self.train_metrics = metrics("train")
        self.val_metrics = metrics("val")
        self.test_metrics = metrics("test")
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_acc_best = MaxMetric()
        # Checkpoints carry the epoch's running training metrics and the best so far, so a resumed
        # run (even from mid-epoch) logs what the uninterrupted run would have.
        persist_metric_states(self.train_metrics, self.train_loss, self.val_acc_best)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is None:
            return
        data_classes = getattr(datamodule, "num_classes", None)
        if data_classes is not None and data_classes != self.num_classes:
            raise ConfigError(
                f"the data ({type(datamodule).__name__}) has {data_classes} classes but the model was built for "
                f"{self.num_classes}: set model.init_args.num_classes and model.init_args.net.init_args.num_classes "
                f"to {data_classes}."
            )
        data_channels = getattr(datamodule, "in_channels", None)
        net_channels = getattr(self.net, "in_channels", None)
        if data_channels is not None and net_channels is not None and data_channels != net_channels:
            raise ConfigError(
                f"the data ({type(datamodule).__name__}) has {data_channels}-channel images but the network takes "
                f"{net_channels}: set model.init_args.net.init_args.in_channels to {data_channels}."
            )

    def _shared_step(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return loss, logits, y

    def on_train_epoch_start(self) -> None:
        # Not called when a run resumes mid-epoch: then the restored running metrics are the epoch's so far.
        self.train_loss.reset()
        self.train_metrics.reset()

    def forward_batch(self, batch: Batch) -> Tensor:
        return self.net(batch[0])

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, logits, y = self._shared_step(batch)
        self.train_loss(loss, weight=y.numel())
        self.train_metrics(logits, y)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, logits, y = self._shared_step(batch)
        # Weighted by the batch's size: the epoch value is the mean over samples, the same however
        # the set is split into batches and across processes (a last, smaller batch counts less).
        self.val_loss(loss, weight=y.numel())
        self.val_metrics(logits, y)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self._trainer is not None and self._trainer.sanity_checking:
            return  # the sanity check's validation must not count towards the best accuracy
        self.val_acc_best(self.val_metrics["acc"].compute())
        # A plain tensor, so Lightning must reduce it: it is already the same on every rank.
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        loss, logits, y = self._shared_step(batch)
        self.test_loss(loss, weight=y.numel())
        self.test_metrics(logits, y)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """The predicted class of each image; ``batch`` is images or ``(images, labels)``."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).argmax(dim=-1)


def _validate(net: nn.Module, num_classes: int, top_k: Sequence[int], label_smoothing: float) -> list[int]:
    if not isinstance(net, nn.Module):
        raise ConfigError(f"ClassificationTask: 'net' must be a torch.nn.Module, got {type(net).__name__}")
    if not is_int(num_classes) or num_classes < 2:
        raise ConfigError(f"ClassificationTask: 'num_classes' must be an integer >= 2, got {num_classes!r}")
    net_classes = getattr(net, "num_classes", None)
    if isinstance(net_classes, int) and net_classes != num_classes:
        raise ConfigError(
            f"ClassificationTask: num_classes={num_classes} but the network {type(net).__name__} outputs "
            f"{net_classes} classes; set model.init_args.num_classes and model.init_args.net.init_args.num_classes "
            f"to the same value."
        )
    ks = list(top_k)
    if not ks or any(not is_int(k) or not 1 <= k <= num_classes for k in ks) or len(set(ks)) != len(ks):
        raise ConfigError(
            f"ClassificationTask: 'top_k' must be distinct integers in [1, num_classes={num_classes}], got {top_k!r}"
        )
    if 1 not in ks:
        raise ConfigError(
            f"ClassificationTask: 'top_k' must include 1 (val/acc, the top-1 accuracy, is what val/acc_best "
            f"tracks), got {top_k!r}; e.g. [1, 5]"
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"ClassificationTask: 'label_smoothing' must be in [0, 1), got {label_smoothing!r}")
    return sorted(ks)


__all__ = ["ClassificationTask", "accuracy_name"]

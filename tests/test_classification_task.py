"""Specification of skipln.tasks.classification.ClassificationTask."""

from __future__ import annotations

import functools

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from skipln.errors import ConfigError
from skipln.models.resnet import ResNet
from skipln.optim import MultiStep
from skipln.skip import Admin, needs_profiling
from skipln.tasks.classification import ClassificationTask

SGD = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)


class TinyImages(LightningDataModule):
    """32 random 8×8 images with random labels: enough to check wiring, not learning."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, batch_size: int = 16) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(32, in_channels, 8, 8, generator=generator)
        labels = torch.randint(0, num_classes, (32,), generator=generator)
        self.data = TensorDataset(images, labels)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size)


def tiny_trainer(**kwargs) -> Trainer:
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        **kwargs,
    }
    return Trainer(**options)


def make_task(num_classes: int = 10, **kwargs) -> ClassificationTask:
    seed_everything(0, verbose=False)
    return ClassificationTask(ResNet(8, "basic", num_classes=num_classes), optimizer=SGD, num_classes=num_classes, **kwargs)


def test_training_decreases_the_loss_on_a_tiny_batch() -> None:
    task = make_task()
    images, labels = TinyImages().data.tensors
    batch = (images[:16], labels[:16])
    task.eval()
    with torch.no_grad():
        before = nn.functional.cross_entropy(task(batch[0]), batch[1]).item()
    data = TinyImages()
    data.data = TensorDataset(*batch)
    tiny_trainer(max_steps=15, limit_val_batches=0).fit(task, datamodule=data)
    task.eval()
    with torch.no_grad():
        after = nn.functional.cross_entropy(task(batch[0]), batch[1]).item()
    assert after < 0.5 * before


def test_fit_validate_and_test_log_the_documented_metric_names() -> None:
    task = make_task(num_classes=10, top_k=[1, 5])
    data = TinyImages()
    trainer = tiny_trainer(max_epochs=1)
    trainer.fit(task, datamodule=data)
    names = set(trainer.callback_metrics)
    expected = {"train/loss_step", "train/loss_epoch", "train/acc_step", "train/acc_epoch", "train/acc_top5_epoch"}
    expected |= {"val/loss", "val/acc", "val/acc_top5", "val/acc_best"}
    assert expected <= names
    trainer.test(task, datamodule=data, verbose=False)
    assert {"test/loss", "test/acc", "test/acc_top5"} <= set(trainer.callback_metrics)


def test_accuracy_is_the_fraction_of_correct_samples_not_a_class_average() -> None:
    task = make_task(num_classes=3)
    logits = torch.tensor([[5.0, 0, 0]] * 9 + [[0, 5.0, 0]])
    labels = torch.tensor([0] * 9 + [2])  # 9 of 10 right; the macro average over classes would say 1/2
    assert task.val_metrics(logits, labels)["val/acc"].item() == pytest.approx(0.9)


def test_val_acc_best_keeps_the_best_epoch() -> None:
    task = make_task(num_classes=3)
    right, wrong = torch.tensor([[5.0, 0, 0]]), torch.tensor([[0, 5.0, 0]])
    for logits in (right, wrong):
        task.val_metrics.reset()
        task.val_metrics(logits, torch.tensor([0]))
        task.val_acc_best(task.val_metrics["acc"].compute())
    assert task.val_acc_best.compute().item() == 1.0


def test_schedule_becomes_a_per_step_lambda_lr() -> None:
    task = make_task(schedule=MultiStep(milestones=[0.5], gamma=0.1))
    trainer = tiny_trainer(max_steps=4, limit_val_batches=0)
    trainer.fit(task, datamodule=TinyImages())
    config = trainer.lr_scheduler_configs[0]
    assert isinstance(config.scheduler, torch.optim.lr_scheduler.LambdaLR)
    assert config.interval == "step"
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05 * 0.1)


def test_a_strategy_that_needs_profiling_is_profiled_before_the_first_update() -> None:
    seed_everything(0, verbose=False)
    net = ResNet(8, "preact", skip=Admin())
    assert needs_profiling(net)
    task = ClassificationTask(net, optimizer=SGD, num_classes=10)
    tiny_trainer(max_steps=1, limit_val_batches=0).fit(task, datamodule=TinyImages())
    assert not needs_profiling(net)


def test_without_schedule_the_injected_optimizer_is_used_as_is() -> None:
    task = make_task()
    optimizer = task.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == 0.05
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(p.numel() for p in task.net.parameters())


def test_predict_returns_the_predicted_classes() -> None:
    task = make_task(num_classes=4)
    task.eval()
    images = torch.randn(5, 3, 8, 8)
    predicted = task.predict_step((images, torch.zeros(5, dtype=torch.long)), 0)
    assert predicted.shape == (5,) and predicted.dtype == torch.int64
    assert torch.equal(predicted, task(images).argmax(dim=1))
    assert torch.equal(task.predict_step(images, 0), predicted)


def test_data_with_another_number_of_classes_is_refused_at_setup() -> None:
    task = make_task(num_classes=10)
    with pytest.raises(ConfigError, match=r"100 classes.*built for 10.*num_classes"):
        tiny_trainer(max_steps=1).fit(task, datamodule=TinyImages(num_classes=100))


def test_data_with_another_number_of_channels_is_refused_at_setup() -> None:
    task = make_task()
    with pytest.raises(ConfigError, match=r"1-channel.*in_channels to 1"):
        tiny_trainer(max_steps=1).fit(task, datamodule=TinyImages(in_channels=1))


def test_network_with_another_number_of_classes_is_refused() -> None:
    with pytest.raises(ConfigError, match="outputs 100 classes"):
        ClassificationTask(ResNet(8, "basic", num_classes=100), optimizer=SGD, num_classes=10)


@pytest.mark.parametrize(
    ("top_k", "message"),
    [([5], "must include 1"), ([1, 11], r"\[1, num_classes=10\]"), ([], "distinct integers"), ([1, 1], "distinct")],
)
def test_invalid_top_k_is_refused(top_k: list[int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_task(top_k=top_k)


def test_label_smoothing_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="label_smoothing"):
        make_task(label_smoothing=1.0)


def test_hyperparameters_leave_out_the_network_and_optimizer() -> None:
    task = make_task(top_k=[1, 5], label_smoothing=0.1)
    assert dict(task.hparams) == {"num_classes": 10, "schedule": None, "top_k": [1, 5], "label_smoothing": 0.1}

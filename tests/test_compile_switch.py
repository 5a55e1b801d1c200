"""Specification of the tasks' ``compile`` switch (torch.compile of the network)."""

from __future__ import annotations

import functools

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from skipln.errors import ConfigError
from skipln.models.resnet import ResNet
from skipln.models.transformer import Transformer
from skipln.tasks.classification import ClassificationTask
from skipln.tasks.translation import TranslationTask

SGD = functools.partial(torch.optim.SGD, lr=0.05)


def tiny_resnet() -> ResNet:
    return ResNet(8, "basic", num_classes=4, in_channels=1, width=4)


def test_compile_is_off_by_default_and_leaves_the_network_eager() -> None:
    task = ClassificationTask(tiny_resnet(), SGD, num_classes=4)
    task.configure_model()
    assert getattr(task.net, "_compiled_call_impl", None) is None


@pytest.mark.parametrize("make", [
    lambda: ClassificationTask(tiny_resnet(), SGD, num_classes=4, compile=True),
    lambda: TranslationTask(Transformer(32, encoder_layers=1, decoder_layers=1, dim=8, ffn_dim=16, heads=2), SGD, compile=True),
])
def test_compile_compiles_the_network_in_place_and_keeps_its_parameter_names(make) -> None:  # type: ignore[no-untyped-def]
    task = make()
    names = list(task.state_dict())
    task.configure_model()
    assert getattr(task.net, "_compiled_call_impl", None) is not None
    assert list(task.state_dict()) == names  # checkpoints of compiled and eager runs are interchangeable


def test_compile_is_a_run_option_not_stored_in_checkpoints() -> None:
    task = ClassificationTask(tiny_resnet(), SGD, num_classes=4, compile=True)
    assert "compile" not in task.hparams


@pytest.mark.parametrize("make", [
    lambda: ClassificationTask(tiny_resnet(), SGD, num_classes=4, compile="yes"),
    lambda: TranslationTask(Transformer(32, encoder_layers=1, decoder_layers=1, dim=8, ffn_dim=16, heads=2), SGD, compile=1),
])
def test_a_compile_value_that_is_not_a_bool_is_rejected_with_the_argument_named(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="'compile' must be true or false"):
        make()


@pytest.mark.slow
def test_a_compiled_classification_task_trains_a_step(tmp_path) -> None:  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(8, 1, 8, 8, generator=generator), torch.randint(0, 4, (8,), generator=generator))
    task = ClassificationTask(tiny_resnet(), SGD, num_classes=4, compile=True)
    before = [p.detach().clone() for p in task.net.parameters()]
    trainer = Trainer(
        accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(task, DataLoader(data, batch_size=4))
    assert trainer.global_step == 2
    assert getattr(task.net, "_compiled_call_impl", None) is not None
    assert any(not torch.equal(b, p) for b, p in zip(before, task.net.parameters(), strict=True))

"""Each private attribute skipln.compat reaches into still behaves as the installed libraries' code does.

A test here failing after an upgrade names the access that broke; fix it in skipln/compat.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from skipln import compat


class Regression(LightningModule):
    """The smallest model that trains: one linear layer on 8 random batches of 4."""

    def __init__(self, schedule_reads_steps: bool = False) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.schedule_reads_steps = schedule_reads_steps

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", nn.functional.mse_loss(self.layer(batch[0]), batch[1]))

    def configure_optimizers(self) -> Any:
        if self.schedule_reads_steps:
            # As our schedules do: this builds the train loader before the fit loop restores its state.
            assert self.trainer.estimated_stepping_batches > 0
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader:
        return loader()

    def val_dataloader(self) -> DataLoader:
        return loader()


class StatefulLoader(DataLoader):
    """A loader Lightning saves and restores the state of (it has state_dict and load_state_dict)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"position": 5}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded = state


def loader(cls: type[DataLoader] = DataLoader) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    return cls(TensorDataset(torch.randn(32, 2, generator=generator), torch.randn(32, 1, generator=generator)), batch_size=4)


class Probe(Callback):
    """Records ``read(trainer)`` after every training batch."""

    def __init__(self, read: Any) -> None:
        self.read, self.seen = read, []

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        self.seen.append(self.read(trainer))


def fit(tmp_path: Path, probe: Callback, model: LightningModule | None = None, **trainer: Any) -> Trainer:
    settings = {"max_epochs": 1, "limit_val_batches": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                "enable_model_summary": False, "num_sanity_val_steps": 0, "default_root_dir": tmp_path, **trainer}  # fmt: skip
    instance = Trainer(callbacks=[probe], **settings)
    instance.fit(model or Regression())
    return instance


def test_setting_the_sigterm_flag_stops_the_fit_after_that_step(tmp_path: Path) -> None:
    class StopAtThirdBatch(Callback):
        def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == 2:
                compat.set_received_sigterm(trainer, True)
                assert trainer.received_sigterm

    trainer = Trainer(callbacks=[StopAtThirdBatch()], max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(SIGTERMException):
        trainer.fit(Regression())
    assert trainer.global_step == 3


def test_accumulating_is_true_on_the_batches_that_do_not_step(tmp_path: Path) -> None:
    probe = Probe(compat.accumulating)
    fit(tmp_path, probe, accumulate_grad_batches=2, limit_train_batches=4)
    assert probe.seen == [True, False, True, False]


def test_epoch_batches_done_marks_the_last_batch_of_a_limited_epoch(tmp_path: Path) -> None:
    probe = Probe(compat.epoch_batches_done)
    fit(tmp_path, probe, limit_train_batches=3)
    assert probe.seen == [False, False, True]


def test_epoch_batches_done_marks_the_last_batch_of_the_loader(tmp_path: Path) -> None:
    probe = Probe(compat.epoch_batches_done)
    fit(tmp_path, probe)
    assert probe.seen == [False] * 7 + [True]


def test_validation_due_follows_val_check_interval(tmp_path: Path) -> None:
    probe = Probe(compat.validation_due)
    fit(tmp_path, probe, val_check_interval=2, limit_train_batches=6)
    assert probe.seen == [False, True, False, True, False, True]


def test_validation_due_is_none_before_the_loader_starts(tmp_path: Path) -> None:
    assert compat.validation_due(Trainer(logger=False, default_root_dir=tmp_path)) is None


def test_a_resumed_loader_state_waits_until_a_schedule_built_the_loader_early(tmp_path: Path) -> None:
    """Lightning issue #20550: the state is dropped unless handed over; if this fails, check whether it is fixed."""

    class Stateful(Regression):
        def train_dataloader(self) -> DataLoader:
            return loader(StatefulLoader)

    checkpoint = tmp_path / "mid-epoch.ckpt"

    class SaveAfterSecondBatch(Callback):
        def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == 1:
                trainer.save_checkpoint(checkpoint)

    first = Trainer(max_epochs=1, limit_train_batches=4, logger=False, enable_progress_bar=False, num_sanity_val_steps=0,
                    limit_val_batches=0, callbacks=[SaveAfterSecondBatch()], default_root_dir=tmp_path)  # fmt: skip
    first.fit(Stateful(schedule_reads_steps=True))

    class HandOver(Callback):
        pending: bool | None = None

        def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
            HandOver.pending = compat.has_pending_loader_states(trainer)
            compat.load_pending_loader_states(trainer)

    second = Trainer(max_epochs=1, limit_train_batches=4, logger=False, enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0,
                     callbacks=[HandOver()], default_root_dir=tmp_path)  # fmt: skip
    second.fit(Stateful(schedule_reads_steps=True), ckpt_path=checkpoint)
    assert HandOver.pending is True  # without the hand-over the loader would start afresh
    assert second.train_dataloader.loaded == {"position": 5}


def test_no_loader_state_waits_in_a_fresh_fit(tmp_path: Path) -> None:
    assert compat.has_pending_loader_states(Trainer(logger=False, default_root_dir=tmp_path)) is False


def test_uses_distributed_sampler_reads_the_trainer_argument(tmp_path: Path) -> None:
    assert compat.uses_distributed_sampler(Trainer(logger=False, default_root_dir=tmp_path)) is True
    assert compat.uses_distributed_sampler(Trainer(logger=False, use_distributed_sampler=False, default_root_dir=tmp_path)) is False


def test_an_mlflow_logger_starts_its_run_only_when_asked_for_it(tmp_path: Path) -> None:
    logger = MLFlowLogger(experiment_name="compat", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not compat.logger_started(logger) and compat.logger_given_run_id(logger) is None
    run_id = logger.run_id
    assert compat.logger_started(logger) and compat.logger_given_run_id(logger) == run_id


def test_an_mlflow_logger_given_a_run_id_reports_it_before_starting(tmp_path: Path) -> None:
    logger = MLFlowLogger(experiment_name="compat", run_id="0123abcd", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert compat.logger_given_run_id(logger) == "0123abcd" and not compat.logger_started(logger)


def test_compiled_in_place_tells_a_compiled_module_from_an_eager_one() -> None:
    module = nn.Linear(2, 2)
    assert not compat.compiled_in_place(module)
    module.compile()  # lazy: nothing is compiled before the first call
    assert compat.compiled_in_place(module)


def test_parser_actions_lists_the_options_of_a_parser() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--depth", type=int)
    assert ["--depth"] in [action.option_strings for action in compat.parser_actions(parser)]

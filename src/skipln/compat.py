"""Every access to a library's private attributes, in one place, each behind one small function.

Lightning, MLflow's Lightning logger, torch and argparse keep some state we need only in private
attributes. Each is read or written here and nowhere else, and ``tests/test_compat.py`` checks
each against the installed release (a renamed attribute fails there, by name, not deep inside a
resume). ``pyproject.toml`` pins Lightning to the minor version those tests passed on.
"""

from __future__ import annotations

import argparse

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import MLFlowLogger
from torch import nn


# -- Lightning: the SIGTERM flag ----------------------------------------------------------------


def set_received_sigterm(trainer: Trainer, value: bool) -> None:
    """Set the flag behind ``trainer.received_sigterm``: True stops the fit after this step, as SIGTERM does.

    Lightning's signal handler sets it and its loops stop on it; there is no public setter.
    """
    trainer._signal_connector.received_sigterm = value  # noqa: SLF001


def uses_distributed_sampler(trainer: Trainer) -> bool:
    """The Trainer's ``use_distributed_sampler`` argument (Lightning keeps it on its accelerator connector only)."""
    return bool(trainer._accelerator_connector.use_distributed_sampler)  # noqa: SLF001


# -- Lightning: the training loop's position -------------------------------------------------


def has_pending_loader_states(trainer: Trainer) -> bool:
    """Whether a resumed checkpoint's data loader state is waiting to be handed to the loader."""
    return bool(trainer.fit_loop._combined_loader_states_to_load)  # noqa: SLF001


def load_pending_loader_states(trainer: Trainer) -> None:
    """Hand a resumed checkpoint's data loader state to the training loader now."""
    trainer.fit_loop._load_combined_loader_states()  # noqa: SLF001


def accumulating(trainer: Trainer) -> bool:
    """Whether the current batch only accumulates gradients (no optimizer step after it)."""
    return bool(trainer.fit_loop.epoch_loop._should_accumulate())  # noqa: SLF001


def epoch_batches_done(trainer: Trainer) -> bool:
    """Whether the current batch is the epoch's last one (by the loader or by ``limit_train_batches``)."""
    loop = trainer.fit_loop.epoch_loop
    return bool(loop.batch_progress.is_last_batch or loop._num_ready_batches_reached())  # noqa: SLF001


def validation_due(trainer: Trainer) -> bool | None:
    """Whether validation runs after the current training batch; None before the loader has started."""
    fetcher = trainer.fit_loop._data_fetcher  # noqa: SLF001
    if fetcher is None:
        return None
    return bool(trainer.fit_loop.epoch_loop._should_check_val_fx(fetcher))  # noqa: SLF001


# -- MLflow's Lightning logger -------------------------------------------------------------------


def logger_started(logger: MLFlowLogger) -> bool:
    """Whether the logger has created or joined its run (reading ``run_id`` would start one)."""
    return bool(logger._initialized)  # noqa: SLF001


def logger_given_run_id(logger: MLFlowLogger) -> str | None:
    """The run id the logger was given (``run_id=``) or has started, without starting a run."""
    return logger._run_id  # noqa: SLF001


# -- torch ---------------------------------------------------------------------------------------


def compiled_in_place(module: nn.Module) -> bool:
    """Whether ``module.compile()`` has run: ``nn.Module.compile`` keeps the compiled call in a private slot."""
    return module._compiled_call_impl is not None  # noqa: SLF001


# -- argparse ------------------------------------------------------------------------------------


def parser_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """A parser's actions (its options and subcommands); argparse keeps them in a private list."""
    return list(parser._actions)  # noqa: SLF001


__all__ = [
    "accumulating",
    "compiled_in_place",
    "epoch_batches_done",
    "has_pending_loader_states",
    "load_pending_loader_states",
    "logger_given_run_id",
    "logger_started",
    "parser_actions",
    "set_received_sigterm",
    "uses_distributed_sampler",
    "validation_due",
]

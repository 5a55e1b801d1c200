"""Callbacks every skipln run uses (configured in ``configs/defaults.yaml``)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer

from skipln.errors import ConfigError, SkipLNError
from skipln.fit_records import fit_runs
from skipln.run_vocabulary import DIVERGED, FAILURE_REASON_TAG, FAILURE_TAG
from skipln.tracking import mlflow_loggers
from skipln.validation import is_int


class DivergenceError(SkipLNError, RuntimeError):
    """Training produced a non-finite loss."""

    exit_code = 1
    failure = DIVERGED


class DivergenceGuard(Callback):
    """Stops (or skips) training steps whose loss is not finite.

    The paper trains models meant to blow up (xSkip with λ ≠ 1 at depth 110). With
    ``on_nonfinite: stop`` the run ends at the first non-finite loss with a message that names
    the step, the MLflow run and the strategy; the run is tagged ``failure: diverged`` and
    ``failure_reason`` (the message), and ends
    FAILED (Lightning finalizes the logger with "failed") with its metrics so far, and the
    checkpoints already written are left as they are — the weights that produced the
    non-finite loss are never saved. With ``on_nonfinite: skip`` the step's gradients are
    dropped before the optimizer sees them (parameters with no gradient are not updated, not
    even by momentum or weight decay), the skip is counted in ``train/nonfinite_steps``, and
    training stops anyway after ``max_skips`` of them.

    ``configs/defaults.yaml`` configures one guard (``stop``); one added on the command line
    replaces it (see :func:`skipln.cli.keep_last_of_each`). In ``skip`` mode the forward pass of a
    skipped step has still run: BatchNorm running statistics it updated stay updated.

    The check runs in ``on_before_backward``, before any update, on every rank: the loss of
    data-parallel ranks may differ, so the decision is reduced across ranks.
    """

    def __init__(self, on_nonfinite: Literal["stop", "skip"] = "stop", max_skips: int = 100) -> None:
        if on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"DivergenceGuard: 'on_nonfinite' must be 'stop' or 'skip', got {on_nonfinite!r}")
        if not is_int(max_skips) or max_skips < 0:
            raise ConfigError(f"DivergenceGuard: 'max_skips' must be an integer >= 0, got {max_skips!r}")
        self.on_nonfinite = on_nonfinite
        self.max_skips = max_skips
        self.skipped = 0
        self._skip_this_step = False

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        bad = torch.tensor(0.0 if torch.isfinite(loss.detach()).all() else 1.0, device=loss.device)
        bad = trainer.strategy.reduce(bad, reduce_op="max")
        if not bool(bad):
            return
        if self.on_nonfinite == "skip" and self.skipped < self.max_skips:
            self.skipped += 1
            self._skip_this_step = True
            pl_module.log("train/nonfinite_steps", float(self.skipped), on_step=True, on_epoch=False, sync_dist=False)
            rank_zero_warn(f"non-finite loss at step {trainer.global_step}: skipping it ({self.skipped}/{self.max_skips})")
            return
        message = self._message(trainer, pl_module, loss)
        for client, run_id in fit_runs(trainer):
            client.set_tag(run_id, FAILURE_REASON_TAG, message)
            client.set_tag(run_id, FAILURE_TAG, DivergenceError.failure)
        raise DivergenceError(message)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        if self._skip_this_step:
            optimizer.zero_grad(set_to_none=True)
            self._skip_this_step = False

    def _message(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> str:
        value = loss.detach().float().cpu()
        value_text = "nan" if torch.isnan(value).any() else ("inf" if value.numel() == 1 and math.isinf(value.item()) else "non-finite")
        run = next((f"MLflow run {logger.run_id}" for logger in mlflow_loggers(trainer) if logger.run_id), "this run")
        skip = getattr(getattr(pl_module, "net", None), "skip", None)
        strategy = f" with skip strategy {skip!r}" if skip is not None else ""
        skipped = f" after skipping {self.skipped} non-finite steps" if self.skipped else ""
        return (
            f"training diverged: the loss is {value_text} at step {trainer.global_step} (epoch {trainer.current_epoch}) "
            f"of {run}{strategy}{skipped}. Checkpoints written before this step are kept. To continue past such steps, "
            "add `--trainer.callbacks+=skipln.callbacks.DivergenceGuard --trainer.callbacks.on_nonfinite=skip`; to avoid "
            "them, lower the learning rate or add gradient clipping (`trainer.gradient_clip_val`)."
        )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))

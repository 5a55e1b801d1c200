"""What every skipln task does the same way: compile on request, profile a strategy, optimize, load.

A task sets ``net``, ``optimizer``, ``schedule`` and ``compile_net`` in its ``__init__`` and
says how one batch runs through the network (:meth:`SkipLNTask.forward_batch`); the rest is here.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from skipln.checkpoints import check_weights_fit
from skipln.optim import Schedule
from skipln.skip import needs_profiling, profile
from skipln.tasks.compiling import compile_once
from skipln.tasks.metric_states import fill_missing_metric_states


class SkipLNTask(LightningModule):
    """The hooks the classification and translation tasks share."""

    net: nn.Module
    optimizer: OptimizerCallable
    schedule: Schedule | None
    compile_net: bool
    _profile_pending: bool = False

    def forward_batch(self, batch: Any) -> Any:
        """The network's forward pass on one training batch (what a strategy that profiles needs)."""
        raise NotImplementedError

    def configure_model(self) -> None:
        """Compile the network (once) when ``compile`` is set."""
        if self.compile_net:
            compile_once(self.net)

    def on_fit_start(self) -> None:
        # Strategies such as Admin finish their initialisation from one forward pass on real data;
        # false for every other strategy, and for a network restored from a profiled checkpoint.
        self._profile_pending = needs_profiling(self.net)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._profile_pending:
            profile(self.net, lambda: self.forward_batch(batch))
            self._profile_pending = False

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        fill_missing_metric_states(self, checkpoint)
        check_weights_fit(self, checkpoint)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.net.parameters())
        if self.schedule is None:
            return optimizer
        scheduler = self.schedule.build(optimizer, self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


__all__ = ["SkipLNTask"]

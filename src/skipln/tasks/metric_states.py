"""The tasks' running metric states in checkpoints, so that a resumed run logs what the uninterrupted one would."""

from __future__ import annotations

from typing import Any

from torch import nn
from torchmetrics import Metric


def persist_metric_states(*metrics: Metric) -> None:
    """Save these metrics' running states in checkpoints (torchmetrics leaves them out by default).

    For the metrics that must survive a resume: epoch aggregates of training (a mid-epoch resume
    would otherwise average only the batches after it) and running bests (``val/acc_best``).
    Evaluation metrics are reset at every evaluation and are better left out.
    """
    for metric in metrics:
        metric.persistent(True)


def fill_missing_metric_states(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Let a checkpoint written before its metrics' states were saved load strictly: keep the module's own.

    Call it from ``LightningModule.on_load_checkpoint``.
    """
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        return
    for name, child in module.named_modules():
        if isinstance(child, Metric):
            for key, value in child.state_dict(prefix=f"{name}.").items():
                state.setdefault(key, value)


__all__ = ["fill_missing_metric_states", "persist_metric_states"]

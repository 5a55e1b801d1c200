"""The state each process of a run keeps for itself, which a checkpoint must carry to resume exactly.

Under DDP the model's ``state_dict`` is rank 0's, but every rank draws its own dropout and
augmentation and sums its own share of the epoch's training metrics. :func:`checkpoint_state`
collects each rank's random state and running metric states when a checkpoint is written;
:func:`restore_rank_state` gives each rank its own back on resume.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import Metric

from skipln.random_state import get_random_state, set_random_state


def checkpoint_state(trainer: Trainer | None) -> dict[str, Any]:
    """This process's random state, and under DDP every rank's (``ranks``, in rank order).

    Collective under DDP: every rank calls it while the checkpoint is assembled, as saving is.
    """
    state: dict[str, Any] = {"random_state": get_random_state()}
    if trainer is not None and trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        own = {"random_state": state["random_state"], "metrics": _metric_states(trainer.lightning_module)}
        ranks: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(ranks, own)
        state["ranks"] = ranks
    return state


def restore_rank_state(trainer: Trainer, state: dict[str, Any], random_state: bool = True) -> None:
    """Give this rank what :func:`checkpoint_state` kept of it: metric states, and the random state if ``random_state``.

    With another number of processes than wrote the checkpoint, each rank keeps its own seeding
    and the epoch's training metrics restart from rank 0's share (in the model's state_dict).
    """
    ranks = state.get("ranks")
    if ranks is not None and len(ranks) == trainer.world_size:
        own = ranks[trainer.global_rank]
        _load_metric_states(trainer.lightning_module, own["metrics"])
        if random_state:
            set_random_state(own["random_state"])
    elif trainer.world_size == 1 and ranks is None:
        if random_state:
            set_random_state(state["random_state"])
    else:
        rank_zero_warn(
            f"ResumeState: the checkpoint was written by {len(ranks) if ranks else 1} process(es), this fit runs "
            f"{trainer.world_size}: each rank keeps its own seeding and the epoch's training metrics restart "
            "from rank 0's share (data order is still restored)"
        )


def _metric_states(module: nn.Module) -> dict[str, dict[str, Any]]:
    """The states a checkpoint keeps of ``module``'s torchmetrics (the persistent ones), by module name."""
    return {
        name: {key: value.detach().cpu() if isinstance(value, torch.Tensor) else value for key, value in metric.state_dict().items()}
        for name, metric in module.named_modules()
        if isinstance(metric, Metric) and metric.state_dict()
    }


def _load_metric_states(module: nn.Module, states: dict[str, dict[str, Any]]) -> None:
    metrics = dict(module.named_modules())
    for name, state in states.items():
        metrics[name].load_state_dict(state)


__all__ = ["checkpoint_state", "restore_rank_state"]

"""A sweep's bookkeeping in MLflow: the tags on its runs, and what to do with each run.

MLflow is the sweep's memory: each (cell, seed) is one run whose ``sweep_state`` tag says how
far it got (``fitting`` → ``fitted`` → ``tested``, or ``diverged``), so the same command run
again knows what is left. A search adds one ``search`` run per cell (its best values, once
``searched``) with a nested ``trial`` run per value tried.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skipln.run_vocabulary import (
    ARGS_TAG,
    AXIS_TAG_PREFIX,
    CELL_INDEX_TAG,
    CELL_TAG,
    DIVERGED,
    FAILURE_TAG,
    FITTED,
    MAX_TAG,
    RESULT,
    STAGE_TAG,
    STATE_TAG,
    SWEEP_TAG,
    TESTED,
    VALUE_TAG_PREFIX,
)
from skipln.sweep.grid import Cell, SearchAxis
from skipln.sweep.store import read_yaml, search_all

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run


def sweep_runs(client: MlflowClient, experiment_id: str, sweep: str, stage: str = RESULT) -> list[Run]:
    """The sweep's runs of one ``stage``, oldest first (runs made before stages were tagged are results)."""
    runs = search_all(client, experiment_id, f"tags.{SWEEP_TAG} = '{sweep}'")
    return [run for run in runs if run.data.tags.get(STAGE_TAG, RESULT) == stage]


def diverged(run: Run) -> bool:
    """Whether the run was stopped by the DivergenceGuard (a result, not an accident)."""
    return run.data.tags.get(FAILURE_TAG) == DIVERGED or run.data.tags.get(STATE_TAG) == DIVERGED


class Action(str, Enum):
    NEW = "new"  # no run yet: create it, fit, test
    RESUME = "resume"  # interrupted or failed, has last.ckpt: fit from it, test
    RESTART = "restart"  # interrupted or failed without a checkpoint: fit from scratch into the same run, test
    TEST = "test"  # fitted but not (successfully) tested
    SKIP = "skip"  # fitted and tested, or diverged

    @property
    def fits(self) -> bool:
        return self in (Action.NEW, Action.RESUME, Action.RESTART)


def decide(run: Run | None, *, has_last_checkpoint: bool, retry_diverged: bool = False) -> Action:
    """What a sweep does with the run of one (cell, seed), from its status and the sweep's tags.

    A run that diverged is a result, not an accident: it is kept as it is unless
    ``retry_diverged`` — retrying the same seed would diverge again.
    """
    if run is None:
        return Action.NEW
    state = run.data.tags.get(STATE_TAG)
    if state == TESTED and run.info.status == "FINISHED":
        return Action.SKIP
    if state == DIVERGED and not retry_diverged:
        return Action.SKIP
    if state in (FITTED, TESTED):
        return Action.TEST
    return Action.RESUME if has_last_checkpoint else Action.RESTART


def fingerprint(items: Sequence[str]) -> str:
    """A short hash of a run's arguments (without the sweep's own: seed, run id, checkpoint)."""
    return _digest(list(items))


def config_hash(items: Sequence[str], root: Path, defaults: Path | None) -> str:
    """A short hash of the parsed contents of the config files a run reads (comments do not count)."""
    files = ([defaults] if defaults is not None and defaults.is_file() else []) + [
        root / item for item in items if not item.startswith("--")
    ]
    return _digest([read_yaml(file) for file in files])


def _digest(value: Any) -> str:
    # Both hashes are stored on runs and compared on resumption: the encoding must never change.
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_tags(cell: Cell, items: Sequence[str]) -> dict[str, str]:
    """The tags every run of a cell starts with: its sweep, cell, labels and arguments."""
    labels = {f"{AXIS_TAG_PREFIX}{axis}": label for axis, label in cell.labels.items()}
    return {SWEEP_TAG: cell.sweep, CELL_TAG: cell.key, CELL_INDEX_TAG: str(cell.index), **labels, ARGS_TAG: shlex.join(items)[:MAX_TAG]}


def value_tags(axes: Iterable[SearchAxis], values: Mapping[str, Any]) -> dict[str, str]:
    """Searched values as tags: ``sweep.<axis>`` rounded for reading, ``sweep_value.<axis>`` exact (JSON keeps
    ``0.001`` and ``3`` apart from ``"3"``)."""
    tags = {f"{AXIS_TAG_PREFIX}{axis.axis}": axis.label(values[axis.axis]) for axis in axes}
    return tags | {f"{VALUE_TAG_PREFIX}{axis.axis}": json.dumps(values[axis.axis]) for axis in axes}


def checkpoint_to_test(checkpoints: Path, root: Path) -> Path | None:
    """The best checkpoint the run's ModelCheckpoint recorded in ``last.ckpt``; else ``last.ckpt``; else None."""
    last = checkpoints / "last.ckpt"
    if not last.is_file():
        return None
    import torch  # only here: reading a checkpoint's callback state is the sweep's one use of torch

    try:
        state = torch.load(last, map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # an unreadable last.ckpt: `test` on it reports what is wrong with it
        return last
    callbacks = state.get("callbacks") if isinstance(state, dict) else None
    for callback in (callbacks or {}).values():
        best = callback.get("best_model_path") if isinstance(callback, dict) else None
        if best:
            # Lightning records it as the child saw it: relative to the child's working directory.
            path = Path(best) if Path(best).is_absolute() else root / best
            if path.is_file():
                return path
    return last


"""Which unfinished run ``fit --ckpt_path last`` resumes, and from which checkpoint.

See :func:`find_last_checkpoint` for the rule. :class:`skipln.resume.ResumeState` writes the tags
it reads (``fit_state``, ``checkpoint_dir``, ``fit_host``/``fit_pid``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skipln.checkpoints import read_checkpoint
from skipln.errors import ConfigError
from skipln.processes import process_alive
from skipln.run_vocabulary import (
    CHECKPOINT_DIR_TAG,
    DIVERGED,
    FAILURE_TAG,
    FIT_FINISHED,
    FIT_RUNNING,
    FIT_STATE_TAG,
    HOST_TAG,
    LAST_CHECKPOINT,
    PID_TAG,
)

#: Config keys that say where and how a run is shown, not what it trains: they may differ on resume.
IGNORED_CONFIG_KEYS = frozenset(
    {
        "ckpt_path",
        "weights_only",
        "trainer.logger.run_id",
        "trainer.logger.run_name",
        "trainer.logger.tracking_uri",  # the store searched; only its spelling may differ
        "trainer.enable_progress_bar",
        "trainer.enable_model_summary",
    }
)

#: Statuses of a run that did not end normally.
UNFINISHED = ("RUNNING", "FAILED", "KILLED")


@dataclass(frozen=True)
class Resumable:
    """An unfinished run and the checkpoint to resume it from."""

    run_id: str
    checkpoint: Path


def find_last_checkpoint(
    client: Any,
    experiment_name: str,
    config: Mapping[str, str],
    default_root_dir: str | os.PathLike[str],
    run_id: str | None = None,
) -> Resumable:
    """What ``fit --ckpt_path last`` resumes: the newest unfinished run of this config, at its newest checkpoint.

    The rule: among the runs of the experiment whose fit did not finish (tag ``fit_state`` is
    not ``finished``; for runs without it, status RUNNING, FAILED or KILLED), newest first, the
    first that

    - did not diverge (a diverged run is a result: resuming it would diverge again),
    - is not running right now (a RUNNING run whose process is alive on this machine, or that
      was started on another machine, is left alone),
    - was made with the same config: every param it logged equals the config now, except
      :data:`IGNORED_CONFIG_KEYS` (so a changed ``max_epochs`` or learning rate is a new run), and
    - has a checkpoint that loads: ``last.ckpt`` in its checkpoint folder, else the newest
      other ``*.ckpt`` there.

    With ``run_id`` that run is taken (if it did not finish), whatever its config.

    Args:
        client: an ``mlflow.MlflowClient`` on the run's store.
        experiment_name: the MLflow experiment.
        config: the run's config, flattened as its params are (``skipln.tracking.flatten_config``).
        default_root_dir: the Trainer's ``default_root_dir``, where checkpoints go unless a run
            recorded its folder (tag ``checkpoint_dir``).
        run_id: resume this run.

    Raises:
        ConfigError: nothing to resume; the message says what was found and what to do.
    """
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ConfigError(
            f"--ckpt_path last: the MLflow experiment '{experiment_name}' does not exist in this store, so there is no "
            "run to resume. Drop --ckpt_path to start a new run, or give a checkpoint file."
        )
    if run_id is not None:
        run = client.get_run(run_id)
        if not _unfinished(run):
            raise ConfigError(
                f"--ckpt_path last: run {run_id} finished its fit, there is nothing to resume. To train it further, "
                "give one of its checkpoints as --ckpt_path <file>."
            )
        checkpoint = _newest_checkpoint(_checkpoint_dir(run, default_root_dir))
        if checkpoint is None:
            raise ConfigError(
                f"--ckpt_path last: run {run_id} has no checkpoint in {_checkpoint_dir(run, default_root_dir)}; "
                "drop --ckpt_path to train it from the start."
            )
        return Resumable(run_id, checkpoint)

    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1000)
    notes: list[str] = []
    for run in runs:
        info, tags = run.info, run.data.tags
        if not _unfinished(run):
            continue
        if tags.get(FAILURE_TAG) == DIVERGED:
            notes.append(f"run {info.run_id} diverged (kept as a result)")
            continue
        if (info.status == "RUNNING" or tags.get(FIT_STATE_TAG) == FIT_RUNNING) and _may_be_alive(tags):
            notes.append(f"run {info.run_id} is RUNNING (pid {tags.get(PID_TAG)} on {tags.get(HOST_TAG)})")
            continue
        difference = _config_difference(run.data.params, config)
        if difference is not None:
            notes.append(f"run {info.run_id} ({info.status}) was made with another config: {difference}")
            continue
        checkpoint = _newest_checkpoint(_checkpoint_dir(run, default_root_dir))
        if checkpoint is None:
            notes.append(f"run {info.run_id} ({info.status}) has no checkpoint in {_checkpoint_dir(run, default_root_dir)}")
            continue
        return Resumable(info.run_id, checkpoint)
    found = "; ".join(notes[:3]) + ("; …" if len(notes) > 3 else "") if notes else "no run of it is unfinished"
    raise ConfigError(
        f"--ckpt_path last: no interrupted run of this config to resume in experiment '{experiment_name}' ({found}). "
        "Drop --ckpt_path to start a new run, or give a checkpoint file (--ckpt_path <run>/checkpoints/last.ckpt) to "
        "continue a run with a changed config."
    )


def _unfinished(run: Any) -> bool:
    """Whether the run's fit did not end normally: its ``fit_state`` tag says so, else (older runs) its status.

    The tag, not the status, decides where it exists: a ``test`` into an interrupted run ends the run
    FINISHED, but its fit is still unfinished.
    """
    state = run.data.tags.get(FIT_STATE_TAG)
    return state != FIT_FINISHED if state is not None else run.info.status in UNFINISHED


def _checkpoint_dir(run: Any, default_root_dir: str | os.PathLike[str]) -> Path:
    recorded = run.data.tags.get(CHECKPOINT_DIR_TAG)
    if recorded:
        return Path(recorded)
    # Where ModelCheckpoint puts them under an MLflow logger on a database store.
    return Path(default_root_dir) / run.info.experiment_id / run.info.run_id / "checkpoints"


def _newest_checkpoint(folder: Path) -> Path | None:
    """``last.ckpt`` if it loads as a training checkpoint, else the newest other ``*.ckpt`` that does."""
    if not folder.is_dir():
        return None
    others = sorted((p for p in folder.glob("*.ckpt") if p.name != LAST_CHECKPOINT), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in [folder / LAST_CHECKPOINT, *others]:
        checkpoint = read_checkpoint(path) if path.is_file() else None
        if checkpoint is not None and "loops" in checkpoint and "state_dict" in checkpoint:
            return path
    return None


def _config_difference(params: Mapping[str, str], config: Mapping[str, str]) -> str | None:
    """The first config value that differs from what the run logged, as ``key: then → now``; None if none."""
    # Keys only one side has (a param a newer version added, or one another stage logged) do not count.
    for key in sorted(set(params) & set(config) - IGNORED_CONFIG_KEYS):
        if params[key] != config[key]:
            return f"{key}: {_short(params[key])} → {_short(config[key])}"
    return None


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _may_be_alive(tags: Mapping[str, str]) -> bool:
    """Whether the process recorded for a RUNNING run may still run it (unknown on another machine: yes)."""
    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
    if not host or not pid or not pid.isdigit():
        return False  # never started training (or made before these tags): nothing is running it
    return host != socket.gethostname() or (int(pid) != os.getpid() and process_alive(int(pid)))


__all__ = ["Resumable", "find_last_checkpoint"]

"""What a fit writes on its MLflow run: where it runs and keeps its checkpoints, how it ended, how to resume it.

:class:`skipln.resume.ResumeState` calls these at the fit's start, at its end, and when it is
interrupted or fails; ``--ckpt_path last`` (:mod:`skipln.resumable_runs`) reads them back.
Only rank 0 writes, and only to runs that have started.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer

from skipln import compat
from skipln.errors import find_user_error
from skipln.run_vocabulary import (
    CHECKPOINT_DIR_TAG,
    FAILURE_REASON_TAG,
    FAILURE_TAG,
    FIT_FAILED,
    FIT_FINISHED,
    FIT_INTERRUPTED,
    FIT_RUNNING,
    FIT_STATE_TAG,
    HOST_TAG,
    INTERRUPTED_TAG,
    PID_TAG,
    RESUME_COMMAND_TAG,
    RESUMED_FROM_TAG,
    RESUMES_TAG,
)
from skipln.tracking import mlflow_loggers


def fit_runs(trainer: Trainer) -> list[tuple[Any, str]]:
    """The MLflow client and run of every MLflow logger (on rank 0; none elsewhere)."""
    if not trainer.is_global_zero:
        return []
    # Only runs already started: reading `run_id` starts one, and an error before the run began (bad
    # data in prepare_data) must not leave an empty FAILED run behind.
    started = [logger for logger in mlflow_loggers(trainer) if compat.logger_started(logger)]
    return [(logger.experiment, logger.run_id) for logger in started if logger.run_id is not None]


def record_fit_start(trainer: Trainer, checkpoint_dir: Path) -> None:
    """Tag the run with where its checkpoints are and who runs it; on resume, reopen it."""
    from mlflow.entities import RunTag  # mlflow is imported only when a run logs to it

    for client, run_id in fit_runs(trainer):
        run = client.get_run(run_id)
        tags = run.data.tags
        ckpt_path = trainer.ckpt_path
        new_tags = {
            CHECKPOINT_DIR_TAG: str(checkpoint_dir.absolute()),
            HOST_TAG: socket.gethostname(),
            PID_TAG: str(os.getpid()),
            FIT_STATE_TAG: FIT_RUNNING,
        }
        if ckpt_path:
            if tags.get(FIT_STATE_TAG) == FIT_RUNNING and tags.get(PID_TAG) != str(os.getpid()):
                # The process that ran it never said how it ended: it was killed outright (SIGKILL, out of memory).
                new_tags[INTERRUPTED_TAG] = (
                    f"the process that ran it (pid {tags.get(PID_TAG, '?')} on {tags.get(HOST_TAG, '?')}) ended "
                    "without closing the run (killed outright, e.g. SIGKILL or out of memory)"
                )
            new_tags[RESUMED_FROM_TAG] = f"{ckpt_path} (step {trainer.global_step}, epoch {trainer.current_epoch})"
            new_tags[RESUMES_TAG] = str(int(tags.get(RESUMES_TAG, "0") or 0) + 1)
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in new_tags.items()])
        if not ckpt_path:
            continue
        if RESUME_COMMAND_TAG in tags:
            client.delete_tag(run_id, RESUME_COMMAND_TAG)
        if run.info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")


def record_fit_end(trainer: Trainer) -> None:
    for client, run_id in fit_runs(trainer):
        client.set_tag(run_id, FIT_STATE_TAG, FIT_FINISHED)


def record_failure(trainer: Trainer, exception: BaseException) -> None:
    """``fit_state`` failed; a cause the user can act on (a full disk, bad data found late) is kept with the run."""
    user_error = find_user_error(exception)
    for client, run_id in fit_runs(trainer):
        client.set_tag(run_id, FIT_STATE_TAG, FIT_FAILED)
        if user_error is not None:
            client.set_tag(run_id, FAILURE_TAG, user_error.failure)
            client.set_tag(run_id, FAILURE_REASON_TAG, str(user_error))


def record_interruption(trainer: Trainer, what: str, resume_command: str) -> None:
    for client, run_id in fit_runs(trainer):
        client.set_tag(run_id, INTERRUPTED_TAG, what)
        client.set_tag(run_id, RESUME_COMMAND_TAG, resume_command)
        client.set_tag(run_id, FIT_STATE_TAG, FIT_INTERRUPTED)


__all__ = ["fit_runs", "record_failure", "record_fit_end", "record_fit_start", "record_interruption"]

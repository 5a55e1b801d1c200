"""Interrupting a run and resuming it exactly: checkpoints at any step, random state, MLflow status.

:class:`ResumeState` is one callback (in ``configs/defaults.yaml``) that makes a ``fit`` safe
to stop at any moment:

- **Periodic mid-epoch checkpoints.** Every ``every_n_train_steps`` optimizer steps (and/or
  every ``every_seconds``) it writes ``last.ckpt`` beside the run's other checkpoints, so a
  process killed outright (SIGKILL, out of memory, a lost machine) loses at most that much work.
  And at the end of every epoch, so that ``last.ckpt`` is always the newest state (Lightning's
  own ``save_last`` writes it only beside a new best checkpoint).
- **SIGTERM.** Lightning's signal connector turns SIGTERM into a stop after the current
  batch; this callback writes ``last.ckpt`` of exactly that step before the process exits, tags
  the MLflow run ``interrupted`` (what, at which step) and ``resume_command`` (how to go on),
  and the CLI ends the run KILLED with exit status 143 (``128 + SIGTERM``).
- **Random state.** Its ``state_dict`` holds the torch (CPU and CUDA), numpy and Python random
  states, so dropout and augmentation continue with the numbers the uninterrupted run would
  have drawn. The data loader's position in the epoch travels in the checkpoint too
  (:class:`skipln.data.resumable.ResumableDataLoader`).
- **Resume bookkeeping.** A ``fit`` started from a checkpoint continues the MLflow run that
  wrote it (the CLI's doing); this callback marks it RUNNING again, records ``resumed_from``
  and the number of ``resumes``, and notes when the previous process died without closing the
  run (it was still RUNNING). The run ends FINISHED like any other.

:func:`find_last_checkpoint` is how ``fit --ckpt_path last`` finds what to resume when the
run is not named (see its docstring for the rule).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torchmetrics import Metric

from skipln import compat
from skipln.callbacks import DivergenceError
from skipln.errors import ConfigError, find_user_error
from skipln.processes import process_alive
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
from skipln.validation import is_int

#: The exit status of a run stopped by SIGTERM (the shell's convention, 128 + signal number).
SIGTERM_EXIT_CODE = 128 + int(signal.SIGTERM)
#: The exit status of a run stopped by Ctrl+C (SIGINT).
SIGINT_EXIT_CODE = 128 + int(signal.SIGINT)

LAST_CHECKPOINT = "last.ckpt"


class ResumeState(Callback):
    """Writes resumable checkpoints (periodically and on SIGTERM), carries the random state, tags the run.

    Args:
        every_n_train_steps: write ``last.ckpt`` every this many optimizer steps (``null``: never
            by steps). A step that validation or the epoch's end follows is saved after them
            (Lightning skips both when it resumes from the end of such a step).
        every_seconds: write ``last.ckpt`` when at least this many seconds passed since the last
            one (``null``: never by time).
        every_epoch: write ``last.ckpt`` at the end of every training epoch (after its
            validation), as fairseq writes ``checkpoint_last.pt``. Lightning's
            ``ModelCheckpoint(save_last=True)`` writes it only when it also saves a top-k
            checkpoint, so without this a fit's ``last.ckpt`` would hold its best epoch, not its last.
        dirpath: where ``last.ckpt`` goes; default: the first ``ModelCheckpoint``'s folder (the
            run's ``checkpoints/``), else ``<default_root_dir>/checkpoints``.
        restore_random_state: put the checkpoint's random state back on resume (single process
            only: under DDP each rank keeps its own seeding).
    """

    def __init__(
        self,
        every_n_train_steps: int | None = None,
        every_seconds: float | None = 300.0,
        every_epoch: bool = True,
        dirpath: str | None = None,
        restore_random_state: bool = True,
    ) -> None:
        if every_n_train_steps is not None and (not is_int(every_n_train_steps) or every_n_train_steps < 1):
            raise ConfigError(f"ResumeState: 'every_n_train_steps' must be an integer >= 1 or null, got {every_n_train_steps!r}")
        if every_seconds is not None and not every_seconds > 0:
            raise ConfigError(f"ResumeState: 'every_seconds' must be > 0 or null, got {every_seconds!r}")
        self.every_n_train_steps = every_n_train_steps
        if not isinstance(every_epoch, bool):
            raise ConfigError(f"ResumeState: 'every_epoch' must be true or false, got {every_epoch!r}")
        self.every_seconds = every_seconds
        self.every_epoch = every_epoch
        self.dirpath = dirpath
        self.restore_random_state = restore_random_state
        #: What stopped this process's fit ("SIGTERM", "SIGINT"), for the CLI to end the run KILLED.
        self.interruption: str | None = None
        #: The command line that started this process (set by the CLI), to tell the user how to resume.
        self.command: Sequence[str] | None = None
        self._pending_random_state: dict[str, Any] | None = None
        self._save_due = False
        self._held_sigterm = False
        self._last_save_time = time.monotonic()
        self._last_save_step = -1
        self._previous_sigint: Any = None
        self._received_sigint = False

    # -- where --------------------------------------------------------------------------

    def checkpoint_dir(self, trainer: Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                return Path(callback.dirpath)
        return Path(trainer.default_root_dir) / "checkpoints"

    def last_path(self, trainer: Trainer) -> Path:
        """The file ``ModelCheckpoint(save_last=True)`` writes in the same folder (``last.ckpt``), so there is one."""
        for callback in self._last_savers(trainer):
            return Path(callback.last_model_path or callback.format_checkpoint_name({}, callback.CHECKPOINT_NAME_LAST))
        return self.checkpoint_dir(trainer) / LAST_CHECKPOINT

    def _last_savers(self, trainer: Trainer) -> list[ModelCheckpoint]:
        folder = self.checkpoint_dir(trainer).absolute()
        return [
            c
            for c in trainer.checkpoint_callbacks
            if isinstance(c, ModelCheckpoint) and c.save_last and c.dirpath and Path(c.dirpath).absolute() == folder
        ]

    def _adopt(self, trainer: Trainer, path: Path) -> None:
        # ModelCheckpoint overwrites only a last.ckpt it wrote itself (another is kept, and it writes
        # last-v1.ckpt): tell it this one is its own, so `last.ckpt` stays the newest state.
        for callback in self._last_savers(trainer):
            callback.last_model_path = str(path)

    # -- saving -------------------------------------------------------------------------

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._catch_sigint(trainer)
        self._last_save_time = time.monotonic()
        self._last_save_step = trainer.global_step
        if compat.has_pending_loader_states(trainer):
            # Lightning hands the checkpoint's data loader state over when it builds the train loader;
            # a schedule that asks for `estimated_stepping_batches` in configure_optimizers makes it build
            # the loader before the state is read, and the state would be dropped (Lightning issue
            # #20550, open in 2.6). Hand it over now (the loader has not started its epoch yet: it
            # starts at the first batch).
            compat.load_pending_loader_states(trainer)
        if self._pending_random_state is not None:
            # Here, not in load_state_dict: the data loaders have been built and the sanity check
            # skipped by now, and nothing else draws random numbers before the next batch.
            set_random_state(self._pending_random_state)
            self._pending_random_state = None
        if trainer.ckpt_path and Path(trainer.ckpt_path).absolute().parent == self.checkpoint_dir(trainer).absolute():
            # Resumed into its own folder: the last.ckpt there is this run's, whoever wrote it.
            path = self.last_path(trainer)
            if path.is_file():
                self._adopt(trainer, path)
        self._record_fit(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.received_sigterm:
            # Lightning stops at the end of this step (SIGTERMException); save the state it stops in.
            self._save_due = True
        elif self._periodic_due(trainer):
            self._save_due = True
        if not self._save_due:
            return
        if _resumes_exactly_after_this_batch(trainer):
            self._save(trainer)
            self._release_sigterm(trainer)
        elif trainer.received_sigterm:
            # After this batch come validation or the epoch's end, which Lightning skips when it resumes
            # from here (or an unfinished gradient accumulation, which it drops); and validation would
            # stop at its first batch. Go on to the next point that resumes exactly, save, then stop.
            self._hold_sigterm(trainer)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and trainer.received_sigterm:
            self._save_due = True
            self._hold_sigterm(trainer)  # finish validation: a checkpoint mid-validation does not resume exactly

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._save_if_due(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_epoch and not trainer.sanity_checking:
            self._save_due = True
        self._save_if_due(trainer)

    def _save_if_due(self, trainer: Trainer) -> None:
        if self._save_due or trainer.received_sigterm:
            self._save(trainer)
        self._release_sigterm(trainer)

    def _hold_sigterm(self, trainer: Trainer) -> None:
        compat.set_received_sigterm(trainer, False)  # given back by _release_sigterm
        self._held_sigterm = True

    def _release_sigterm(self, trainer: Trainer) -> None:
        if self._held_sigterm:
            # The state is saved: let Lightning stop now.
            compat.set_received_sigterm(trainer, True)
            self._held_sigterm = False

    def _periodic_due(self, trainer: Trainer) -> bool:
        if trainer.global_step == self._last_save_step:
            return False
        due = self.every_n_train_steps is not None and trainer.global_step % self.every_n_train_steps == 0
        if self.every_seconds is not None:
            elapsed = time.monotonic() - self._last_save_time >= self.every_seconds
            # Every rank must take the same decision: saving is collective.
            due = due or bool(trainer.strategy.broadcast(elapsed))
        return due

    def _save(self, trainer: Trainer) -> None:
        path = self.last_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # a full training checkpoint, not weights only
        self._adopt(trainer, path)
        self._last_save_time = time.monotonic()
        self._last_save_step = trainer.global_step
        self._save_due = False

    # -- random state -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"random_state": get_random_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("random_state")
        if state is not None and self.restore_random_state:
            self._pending_random_state = state

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.world_size > 1 and self.restore_random_state:
            # A checkpoint holds rank 0's state only; giving it to every rank would correlate their dropout.
            self.restore_random_state = False
            rank_zero_info("ResumeState: under DDP the random state is not restored on resume (data order still is)")

    # -- interruption -------------------------------------------------------------------

    def _catch_sigint(self, trainer: Trainer) -> None:
        """Make the first Ctrl+C stop the fit as SIGTERM does: after the current step, with a checkpoint of it.

        Python's own KeyboardInterrupt strikes anywhere — inside the optimizer's update, half the
        parameters changed — so no state of that moment resumes exactly. A second Ctrl+C gets the
        previous handler back: the KeyboardInterrupt, for whoever cannot wait for the step to end.
        """
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread

        def stop_after_this_step(signum: int, frame: Any) -> None:
            self._received_sigint = True
            signal.signal(signal.SIGINT, self._previous_sigint)
            compat.set_received_sigterm(trainer, True)
            rank_zero_warn("Ctrl+C: stopping after this step, with a checkpoint of it (press Ctrl+C again to stop at once)")

        # None: a handler not set from Python; Python's own then raises KeyboardInterrupt as usual.
        self._previous_sigint = signal.signal(signal.SIGINT, stop_after_this_step) or signal.default_int_handler

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            self.interruption = "SIGTERM" if isinstance(exception, SIGTERMException) and not self._received_sigint else "SIGINT"
            last = self.last_path(trainer)
            if self._last_save_step == trainer.global_step:
                saved = f"checkpoint {last} holds this step"
            else:
                saved = f"the newest checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        else:
            # A cause the user can act on (a full disk, bad data found late) is kept with the run.
            user_error = find_user_error(exception)
            for client, run_id in self._runs(trainer):
                client.set_tag(run_id, FIT_STATE_TAG, FIT_FAILED)
                if user_error is not None:
                    client.set_tag(run_id, FAILURE_TAG, user_error.failure)
                    client.set_tag(run_id, FAILURE_REASON_TAG, str(user_error))
            return
        text = f"{self.interruption} at step {trainer.global_step} (epoch {trainer.current_epoch}) on {socket.gethostname()}; {saved}"
        for client, run_id in self._runs(trainer):
            client.set_tag(run_id, INTERRUPTED_TAG, text)
            client.set_tag(run_id, RESUME_COMMAND_TAG, self.resume_command())
            client.set_tag(run_id, FIT_STATE_TAG, FIT_INTERRUPTED)
        rank_zero_warn(f"training interrupted: {text}. Resume with: {self.resume_command()}")

    def resume_command(self) -> str:
        """The command that started this fit, with ``--ckpt_path last``."""
        import shlex

        args = list(self.command) if self.command is not None else ["fit", "--config", "<your configs>"]
        kept, skip_next = [], False
        for arg in args:
            if skip_next:
                skip_next = False
                continue
            if arg == "--ckpt_path":
                skip_next = True
                continue
            if arg.startswith("--ckpt_path="):
                continue
            kept.append(arg)
        return shlex.join(["python", "main.py", *kept, "--ckpt_path", "last"])

    # -- MLflow bookkeeping ---------------------------------------------------------------

    def _record_fit(self, trainer: Trainer) -> None:
        """Tag the run with where its checkpoints are and who runs it; on resume, reopen it."""
        from mlflow.entities import RunTag  # mlflow is imported only when a run logs to it

        for client, run_id in self._runs(trainer):
            run = client.get_run(run_id)
            tags = run.data.tags
            ckpt_path = trainer.ckpt_path
            if ckpt_path and tags.get(FIT_STATE_TAG) == FIT_RUNNING and tags.get(PID_TAG) != str(os.getpid()):
                # The process that ran it never said how it ended: it was killed outright (SIGKILL, out of memory).
                client.set_tag(
                    run_id,
                    INTERRUPTED_TAG,
                    f"the process that ran it (pid {tags.get(PID_TAG, '?')} on {tags.get(HOST_TAG, '?')}) ended "
                    "without closing the run (killed outright, e.g. SIGKILL or out of memory)",
                )
            new_tags = {
                CHECKPOINT_DIR_TAG: str(self.checkpoint_dir(trainer).absolute()),
                HOST_TAG: socket.gethostname(),
                PID_TAG: str(os.getpid()),
                FIT_STATE_TAG: FIT_RUNNING,
            }
            if ckpt_path:
                new_tags[RESUMED_FROM_TAG] = f"{ckpt_path} (step {trainer.global_step}, epoch {trainer.current_epoch})"
                new_tags[RESUMES_TAG] = str(int(tags.get(RESUMES_TAG, "0") or 0) + 1)
            client.log_batch(run_id, tags=[RunTag(key, value) for key, value in new_tags.items()])
            if not ckpt_path:
                continue
            if RESUME_COMMAND_TAG in tags:
                client.delete_tag(run_id, RESUME_COMMAND_TAG)
            if run.info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for client, run_id in self._runs(trainer):
            client.set_tag(run_id, FIT_STATE_TAG, FIT_FINISHED)

    def _runs(self, trainer: Trainer) -> list[tuple[Any, str]]:
        """The MLflow client and run of every MLflow logger (on rank 0; none elsewhere)."""
        if not trainer.is_global_zero:
            return []
        # Only runs already started: reading `run_id` starts one, and an error before the run began (bad
        # data in prepare_data) must not leave an empty FAILED run behind.
        started = [logger for logger in mlflow_loggers(trainer) if compat.logger_started(logger)]
        return [(logger.experiment, logger.run_id) for logger in started if logger.run_id is not None]


def _resumes_exactly_after_this_batch(trainer: Trainer) -> bool:
    """Whether a checkpoint taken at the end of the current training batch resumes exactly.

    Lightning resumes such a checkpoint at the next batch: it skips the validation that follows
    a validation batch and the end of the epoch after its last batch (measured: a resume from
    there logs other metrics than the uninterrupted run), and it does not keep accumulated
    gradients. Those points are covered by the checkpoints after validation and at the epoch's end.
    """
    validation = compat.validation_due(trainer)
    if validation is None or compat.accumulating(trainer) or compat.epoch_batches_done(trainer):
        return False
    return not validation


# -- random state -------------------------------------------------------------------------


def get_random_state() -> dict[str, Any]:
    """The global random states that dropout and augmentation draw from."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    # Tensors and plain numbers only, so `torch.load(weights_only=True)` (Lightning's default) reads it.
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: Mapping[str, Any]) -> None:
    """Put back what :func:`get_random_state` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# -- metric states ------------------------------------------------------------------------


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


# -- finding what to resume ---------------------------------------------------------------


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
        if tags.get(FAILURE_TAG) == DivergenceError.failure:
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
        if path.is_file() and _is_training_checkpoint(path):
            return path
    return None


def _is_training_checkpoint(path: Path) -> bool:
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # a truncated or foreign file: not resumable
        return False
    return isinstance(checkpoint, dict) and "loops" in checkpoint and "state_dict" in checkpoint


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
    if host != socket.gethostname():
        return True
    if int(pid) == os.getpid():
        return False
    return process_alive(int(pid))


__all__ = [
    "ResumeState",
    "Resumable",
    "fill_missing_metric_states",
    "find_last_checkpoint",
    "get_random_state",
    "persist_metric_states",
    "set_random_state",
]

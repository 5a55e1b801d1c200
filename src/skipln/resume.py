"""Interrupting a run and resuming it exactly: checkpoints at any step, random state, MLflow status.

:class:`ResumeState` is one callback (in ``configs/defaults.yaml``) that makes a ``fit`` safe to
stop at any moment: it writes ``last.ckpt`` periodically and at every epoch's end, stops every
rank at one step that resumes exactly on SIGTERM, Ctrl+C, a lost DDP process or a tracking
server gone too long, carries each rank's random state in the checkpoint, and keeps the MLflow
run's status and tags (:mod:`skipln.fit_records`). docs/reliability.md §2 states each guarantee
and the test that shows it. Which run ``fit --ckpt_path last`` resumes is
:func:`skipln.resumable_runs.find_last_checkpoint`'s rule.
"""

from __future__ import annotations

import shlex
import signal
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from skipln import compat
from skipln.errors import ConfigError
from skipln.fit_records import record_failure, record_fit_end, record_fit_start, record_interruption
from skipln.processes import lost_process
from skipln.rank_state import checkpoint_state, restore_rank_state
from skipln.run_vocabulary import LAST_CHECKPOINT
from skipln.tracking_server import TRACKING_OUTAGE_EXIT_CODE, ServerMLFlowLogger, send_missing
from skipln.validation import check_bool, is_int

#: The exit status of a run stopped by SIGTERM (the shell's convention, 128 + signal number).
SIGTERM_EXIT_CODE = 128 + int(signal.SIGTERM)
#: The exit status of a run stopped by Ctrl+C (SIGINT).
SIGINT_EXIT_CODE = 128 + int(signal.SIGINT)
#: :attr:`ResumeState.interruption` when another process of a DDP run died.
LOST_PROCESS = "lost process"
#: :attr:`ResumeState.interruption` when the tracking server did not answer for ``max_outage_seconds``.
TRACKING_OUTAGE = "tracking server unreachable"
#: The reasons to stop, as the ranks exchange them (the highest wins).
_STOP_CODES = {TRACKING_OUTAGE: 1, "SIGINT": int(signal.SIGINT), "SIGTERM": int(signal.SIGTERM)}


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
        restore_random_state: put the checkpoint's random state back on resume (under DDP each
            rank's own, when the number of processes is the one that wrote the checkpoint).
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
        self.every_seconds = every_seconds
        self.every_epoch = check_bool("every_epoch", every_epoch, "ResumeState")
        self.dirpath = dirpath
        self.restore_random_state = restore_random_state
        #: What stopped this process's fit ("SIGTERM", "SIGINT", LOST_PROCESS, TRACKING_OUTAGE), for the CLI.
        self.interruption: str | None = None
        #: What the CLI prints when the fit was interrupted (where it stopped, how to resume).
        self.message: str | None = None
        #: The command line that started this process (set by the CLI), to tell the user how to resume.
        self.command: Sequence[str] | None = None
        self._trainer: Trainer | None = None
        self._loaded_state: dict[str, Any] | None = None
        self._save_due = False
        self._last_save_time = time.monotonic()
        self._last_save_step = -1
        #: The signal this rank received, and the one the ranks agreed to stop on.
        self._signal: signal.Signals | None = None
        self._stop: str | None = None
        self._previous_handlers: dict[signal.Signals, Any] = {}

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
        self._catch_signals()
        self._last_save_time = time.monotonic()
        self._last_save_step = trainer.global_step
        if compat.has_pending_loader_states(trainer):
            # Lightning hands the checkpoint's data loader state over when it builds the train loader;
            # a schedule that asks for `estimated_stepping_batches` in configure_optimizers makes it build
            # the loader before the state is read, and the state would be dropped (Lightning issue
            # #20550, open in 2.6). Hand it over now (the loader has not started its epoch yet: it
            # starts at the first batch).
            compat.load_pending_loader_states(trainer)
        if self._loaded_state is not None:
            # Here, not in load_state_dict: the data loaders have been built and the sanity check
            # skipped by now, and nothing else draws random numbers before the next batch.
            restore_rank_state(trainer, self._loaded_state, random_state=self.restore_random_state)
            self._loaded_state = None
        folder = self.checkpoint_dir(trainer)
        if trainer.ckpt_path and Path(trainer.ckpt_path).absolute().parent == folder.absolute():
            # Resumed into its own folder: the last.ckpt there is this run's, whoever wrote it.
            path = self.last_path(trainer)
            if path.is_file():
                self._adopt(trainer, path)
        record_fit_start(trainer, folder)
        for logger in _server_loggers(trainer):
            journal = logger.keep_journal(folder)
            if trainer.ckpt_path and trainer.is_global_zero:
                sent = send_missing(logger.experiment, logger.run_id, journal)
                if sent:
                    rank_zero_info(f"ResumeState: sent {sent} metric values the tracking server had not received ({journal})")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._agree(trainer)
        if self.every_n_train_steps is not None and trainer.global_step % self.every_n_train_steps == 0:
            self._save_due = True
        if trainer.global_step == self._last_save_step and self._stop is None:
            self._save_due = False  # this step is saved already
        if (self._save_due or self._stop is not None) and _resumes_exactly_after_this_batch(trainer):
            self._save_and_maybe_stop(trainer)
        # Otherwise validation or the epoch's end follows, which Lightning skips when it resumes from
        # here (or an unfinished gradient accumulation, which it drops): save and stop after them.

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._agree(trainer)
            if self._save_due or self._stop is not None:
                self._save_and_maybe_stop(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._agree(trainer)
        if self.every_epoch or self._save_due or self._stop is not None:
            self._save_and_maybe_stop(trainer)

    def _agree(self, trainer: Trainer) -> None:
        """Decide, as every rank does, whether the fit stops and whether a timed save is due.

        Saving is collective and Lightning stops every rank at the same step only if all decide
        alike; a signal may reach one rank only (Lightning's launcher is rank 0), and only rank 0
        watches the tracking server. So the ranks combine what each saw in one all-reduce (MAX)
        per call: the reason to stop (:data:`_STOP_CODES`) and whether ``every_seconds`` passed.
        """
        reason = self._signal.name if self._signal is not None else None
        if reason is None and any(logger.outage_too_long() for logger in _server_loggers(trainer)):
            reason = TRACKING_OUTAGE
        code = _STOP_CODES[reason] if reason is not None else 0
        elapsed = self.every_seconds is not None and time.monotonic() - self._last_save_time >= self.every_seconds
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            seen = torch.tensor([code, int(elapsed)], device=trainer.strategy.root_device)
            torch.distributed.all_reduce(seen, op=torch.distributed.ReduceOp.MAX)
            code, elapsed = int(seen[0]), bool(seen[1])
        if code and self._stop is None:
            self._stop = next(name for name, c in _STOP_CODES.items() if c == code)
        if elapsed and trainer.global_step != self._last_save_step:
            self._save_due = True

    def _save_and_maybe_stop(self, trainer: Trainer) -> None:
        self._save(trainer)
        if self._stop is not None:
            # Every rank at once (they agreed): Lightning raises SIGTERMException at the end of this
            # step, or at the start of the next one after validation or the epoch's end.
            compat.set_received_sigterm(trainer, True)

    def _save(self, trainer: Trainer) -> None:
        path = self.last_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # a full training checkpoint, not weights only
        self._adopt(trainer, path)
        self._last_save_time = time.monotonic()
        self._last_save_step = trainer.global_step
        self._save_due = False

    # -- each rank's random and metric state ----------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        return checkpoint_state(self._trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded_state = dict(state_dict) if state_dict.get("random_state") is not None else None

    # -- interruption -------------------------------------------------------------------

    def _catch_signals(self) -> None:
        """Note SIGTERM and the first Ctrl+C; the ranks stop together where the next step resumes exactly.

        Python's own KeyboardInterrupt strikes anywhere — inside the optimizer's update, half the
        parameters changed — so no state of that moment resumes exactly. Lightning's own SIGTERM
        handler issues a ``torch.distributed.broadcast`` from inside the handler, which can fall in
        the middle of DDP's gradient all-reduce and break the process group (measured with gloo:
        the other rank aborts, "Connection reset by peer"; Lightning issue #20806). So while
        training runs, a handler here only notes the signal and :meth:`_agree` spreads it. A
        second Ctrl+C gets the previous handler back: the KeyboardInterrupt, for whoever cannot
        wait for the step to end. Lightning's own handlers are back once training ends.
        """
        if self._previous_handlers or threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread

        def note(signum: int, frame: Any) -> None:
            if self._signal is None:
                self._signal = signal.Signals(signum)
            if signum == signal.SIGINT:
                signal.signal(signal.SIGINT, self._previous_handlers[signal.SIGINT])
                rank_zero_warn("Ctrl+C: stopping after this step, with a checkpoint of it (press Ctrl+C again to stop at once)")

        for signum in (signal.SIGTERM, signal.SIGINT):
            # None: a handler not set from Python; Python's own then acts as usual.
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            self._previous_handlers[signum] = signal.signal(signum, note) or default

    def _restore_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous_handlers.items():
                signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore_signals()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore_signals()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore_signals()  # before Lightning's teardown puts the original handlers back
        lost = lost_process(exception) if trainer.world_size > 1 else None
        if isinstance(exception, KeyboardInterrupt):
            self.interruption = "SIGINT"
        elif isinstance(exception, SIGTERMException):  # ours, or Lightning's own handler before training started
            self.interruption = self._stop if self._stop is not None else "SIGTERM"
        elif lost is not None:
            # Another rank died (SIGKILL, out of memory, a lost node): nothing here is broken, and the
            # run resumes from its newest checkpoint like one killed outright.
            self.interruption = LOST_PROCESS
        else:
            record_failure(trainer, exception)
            return
        last = self.last_path(trainer)
        if self._last_save_step == trainer.global_step:
            saved = f"checkpoint {last} holds this step"
        else:
            saved = f"the newest checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        what = f"another process of this run ended ({lost})" if lost is not None else self.interruption
        if self.interruption == TRACKING_OUTAGE:
            what = "; ".join(_outage_report(logger) for logger in _server_loggers(trainer)) or TRACKING_OUTAGE
        text = f"{what} at step {trainer.global_step} (epoch {trainer.current_epoch}) on {socket.gethostname()}; {saved}"
        if self.interruption == TRACKING_OUTAGE:
            # The run cannot be tagged now; it stays RUNNING, which is how `--ckpt_path last` finds it.
            self.message = f"training stopped: {text}. Once the server is back, resume with: {self.resume_command()}"
            return
        self.message = f"training interrupted: {text}. Resume with: {self.resume_command()}"
        record_interruption(trainer, text, self.resume_command())
        if lost is None:
            rank_zero_warn(self.message)

    def exit_code(self, global_rank: int) -> int:
        """The exit status of this process after :attr:`interruption` stopped its fit.

        SIGTERM 143 and Ctrl+C 130 (128 + the signal) on rank 0, whose status a scheduler or shell
        sees; 75 (``EX_TEMPFAIL``) when the tracking server was away too long. The other ranks
        stopped with it and exit 0: Lightning's launcher SIGKILLs every process as soon as one of
        its children exits non-zero, which could cut rank 0's bookkeeping short.
        A process whose peer died exits 1.
        """
        if self.interruption == LOST_PROCESS:
            return 1
        if global_rank != 0:
            return 0
        if self.interruption == TRACKING_OUTAGE:
            return TRACKING_OUTAGE_EXIT_CODE
        return SIGINT_EXIT_CODE if self.interruption == "SIGINT" else SIGTERM_EXIT_CODE

    def resume_command(self) -> str:
        """The command that started this fit, with ``--ckpt_path last``."""
        args = list(self.command) if self.command is not None else ["fit", "--config", "<your configs>"]
        given = [i for i, arg in enumerate(args) if arg == "--ckpt_path" or arg.startswith("--ckpt_path=")]
        dropped = {*given, *(i + 1 for i in given if args[i] == "--ckpt_path")}
        kept = [arg for i, arg in enumerate(args) if i not in dropped]
        return shlex.join(["python", "main.py", *kept, "--ckpt_path", "last"])

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        record_fit_end(trainer)


def _resumes_exactly_after_this_batch(trainer: Trainer) -> bool:
    """Whether a checkpoint taken at the end of the current training batch resumes exactly.

    Lightning resumes such a checkpoint at the next batch: it skips the validation that follows
    a validation batch and the end of the epoch after its last batch (measured: a resume from
    there logs other metrics than the uninterrupted run), and it does not keep accumulated
    gradients. Those points are covered by the checkpoints after validation and at the epoch's end.
    """
    # validation_due is None before the loader has started.
    return compat.validation_due(trainer) is False and not compat.accumulating(trainer) and not compat.epoch_batches_done(trainer)


def _server_loggers(trainer: Trainer) -> list[ServerMLFlowLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, ServerMLFlowLogger)]


def _outage_report(logger: ServerMLFlowLogger) -> str:
    return (
        f"the MLflow tracking server at {logger.tracking_uri} has not answered for {logger.unreachable_seconds():.0f} s "
        f"(max_outage_seconds: {logger.max_outage_seconds:g}); the metrics it has not received are kept in {logger.journal} "
        "and sent when the run resumes"
    )


__all__ = ["ResumeState"]

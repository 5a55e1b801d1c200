"""Small LightningModules and callbacks that tests name by class_path (they must live in an importable module)."""

from __future__ import annotations

import errno
import importlib.util
import io
import os
import sys
import time
import signal as signal_module
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch

from lightning.pytorch import Callback
from lightning.pytorch.demos.boring_classes import BoringModel

from skipln.checkpoint_io import AtomicCheckpointIO
from skipln.skip import SkipStrategy


class SkipHolder(BoringModel):
    """A BoringModel that takes a strategy, to exercise config validation through the CLI."""

    def __init__(self, skip: SkipStrategy) -> None:
        super().__init__()
        self.skip = skip


class NonFiniteAtStep(BoringModel):
    """Its loss turns NaN at training batches ``bad_steps`` (a diverging run).

    With ``skip`` it holds a strategy where the tasks do (``net.skip``), for the messages that name it.
    """

    def __init__(self, bad_steps: list[int] = [2], skip: SkipStrategy | None = None) -> None:  # noqa: B006 - jsonargparse needs a literal default
        super().__init__()
        self.bad_steps = bad_steps
        if skip is not None:
            self.net = SimpleNamespace(skip=skip)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        output = super().training_step(batch, batch_idx)
        if self.global_step in self.bad_steps:
            output["loss"] = output["loss"] * float("nan")
        self.log("train/loss", output["loss"], on_step=True)
        return output

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        output = super().validation_step(batch, batch_idx)
        self.log("val/loss", output["x"])
        return output


class SignalAtStep(Callback):
    """Sends ``signal`` to its own process when training step ``step`` starts (an interruption at a known point).

    ``SIGTERM`` is what a scheduler or ``kill`` sends: the run stops gracefully after the step.
    ``SIGKILL`` ends the process on the spot, as an out-of-memory kill or a lost machine would.
    Only a run that did not start from a checkpoint is interrupted, so the resumed run, with the
    same config, goes to the end. Under DDP only global rank ``rank`` is signalled (rank 0 is the
    process Lightning's launcher runs in, the one a scheduler or ``kill`` reaches).
    """

    def __init__(self, signal: str = "SIGTERM", step: int = 1, rank: int = 0) -> None:
        self.signal = signal
        self.step = step
        self.rank = rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        if trainer.global_step == self.step and trainer.ckpt_path is None and trainer.global_rank == self.rank:
            os.kill(os.getpid(), getattr(signal_module, self.signal))


class WorseningValidation(BoringModel):
    """Its validation loss grows every epoch: the first epoch is the best one."""

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        output = super().validation_step(batch, batch_idx)
        self.log("val/loss", float(self.current_epoch))
        return output


class FaultAtStep(AtomicCheckpointIO):
    """Checkpoint writes that fail once, at the first save of training step ``step``: an injected fault.

    ``fault``:

    - ``kill``: write half the bytes, then SIGKILL the process (a job killed while saving);
    - ``disk_full``: write half the bytes, then fail as a full disk does (``ENOSPC``).

    ``once_file`` is created when the fault fires and stops it from firing again, so the resumed
    run, with the same config (``--ckpt_path last`` asks for it), goes to the end.
    """

    def __init__(self, fault: str = "kill", step: int = 1, once_file: str = "fault.done") -> None:
        super().__init__()
        self.fault = fault
        self.step = step
        self.once_file = Path(once_file)

    def write(self, checkpoint, handle):  # type: ignore[no-untyped-def]
        if checkpoint.get("global_step") != self.step or self.once_file.exists():
            super().write(checkpoint, handle)
            return
        self.once_file.write_text(self.fault)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        handle.write(buffer.getvalue()[: buffer.tell() // 2])
        handle.flush()
        if self.fault == "kill":
            os.kill(os.getpid(), signal_module.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@contextmanager
def script_module(script: str, module_name: str) -> Iterator[ModuleType]:
    """``scripts/<script>`` imported as ``module_name`` (scripts are not a package), removed again afterwards."""
    path = Path(__file__).resolve().parents[1] / "scripts" / script
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


class PacedSteps(Callback):
    """Makes each training step last at least ``seconds`` and touches ``mark`` when step ``mark_at`` starts.

    A fit that runs long enough, at a known pace, for a test to do something (stop the tracking
    server) while it trains; ``mark`` tells the test when.
    """

    def __init__(self, seconds: float = 0.5, mark: str | None = None, mark_at: int = 0) -> None:
        self.seconds = seconds
        self.mark = mark
        self.mark_at = mark_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        if self.mark is not None and trainer.global_step == self.mark_at:
            Path(self.mark).touch()
        self._started = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        time.sleep(max(0.0, self.seconds - (time.monotonic() - self._started)))

"""Checkpoints are whole or absent: a save killed midway or stopped by a full disk keeps the previous file.

Faults are injected where they strike: in the bytes a save writes (``skipln_test_support.FaultAtStep``,
a subclass of the plugin every run uses), and in the file on disk (truncated, a byte flipped).
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import IO, Any

import pytest
import torch

from skipln.checkpoint_io import PARTIAL_SUFFIX, AtomicCheckpointIO, DamagedCheckpointError, DiskFullError, checkpoint_damage
from skipln.resumable_runs import find_last_checkpoint
from test_resume import TINY, assert_same_training, client, fit_in_process, fit_in_subprocess, last_checkpoint, runs

STATE = {"state_dict": {"w": torch.arange(4096, dtype=torch.float32)}, "global_step": 1}


class FailingWrite(AtomicCheckpointIO):
    """Writes some bytes, then fails with ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def write(self, checkpoint: dict[str, Any], handle: IO[bytes]) -> None:
        handle.write(b"PK\x03\x04" + bytes(1000))
        raise self.error


def saved(folder: Path, state: dict[str, Any] = STATE, name: str = "last.ckpt") -> Path:
    path = folder / name
    AtomicCheckpointIO().save_checkpoint(state, path)
    return path


# -- the plugin --------------------------------------------------------------------------------


def test_a_save_that_dies_midway_leaves_the_previous_checkpoint_and_no_partial_file(tmp_path: Path) -> None:
    path = saved(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        FailingWrite(KeyboardInterrupt()).save_checkpoint({**STATE, "global_step": 2}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_what_to_free(tmp_path: Path) -> None:
    path = saved(tmp_path)
    with pytest.raises(DiskFullError) as raised:
        FailingWrite(OSError(errno.ENOSPC, "No space left on device")).save_checkpoint({**STATE, "global_step": 2}, path)
    message = str(raised.value)
    assert f"cannot write checkpoint {path}: no space left" in message
    assert "the previous last.ckpt is kept" in message and "checkpoints/*.ckpt" in message and "--ckpt_path last" in message
    assert "\n" not in message
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_partial_file_left_by_a_dead_process_is_removed_by_the_next_save(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".last.ckpt.{dead.pid}{PARTIAL_SUFFIX}"
    stale.write_bytes(b"half")
    saved(tmp_path)
    assert not stale.exists()


def test_a_whole_checkpoint_is_not_reported_damaged(tmp_path: Path) -> None:
    assert checkpoint_damage(saved(tmp_path)) is None


def test_a_truncated_checkpoint_is_named_with_the_newest_intact_one_beside_it(tmp_path: Path) -> None:
    older = saved(tmp_path, name="best-epoch000-step5.ckpt")
    path = saved(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DamagedCheckpointError) as raised:
        AtomicCheckpointIO().load_checkpoint(path)
    message = str(raised.value)
    assert message.startswith(f"checkpoint {path} is damaged: it is truncated or corrupt")
    assert f"the newest intact checkpoint in {tmp_path} is {older.name}: resume from it with --ckpt_path {older}" in message


def test_a_corrupted_byte_is_found_by_the_checksum(tmp_path: Path) -> None:
    path = saved(tmp_path)
    data = bytearray(path.read_bytes())
    offset = data.index(torch.tensor([100.0, 101.0]).numpy().tobytes())  # inside the tensor's bytes
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "CRC mismatch" in (checkpoint_damage(path) or "")
    with pytest.raises(DamagedCheckpointError, match="no other checkpoint .* is intact"):
        AtomicCheckpointIO().load_checkpoint(path)


def test_a_damaged_checkpoint_given_to_the_cli_is_one_line_before_any_run_starts(
    workdir: Path, tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = saved(workdir / "checkpoints")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(SystemExit) as exit_info:
        fit_in_process(tiny, f"--ckpt_path={path}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (message,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert message.startswith(f"error: checkpoint {path} is damaged") and "start the run again without --ckpt_path" in message
    assert "Traceback" not in err
    assert not (workdir / "mlruns" / "mlflow.db").exists() or runs(workdir) == []


# -- end to end through main.py ---------------------------------------------------------------


def fault_at(fault: str, step: int) -> list[str]:
    """Arguments that make the first save of step ``step`` fail with ``fault`` (once per working folder)."""
    return ["--trainer.plugins=skipln_test_support.FaultAtStep", f"--trainer.plugins.fault={fault}", f"--trainer.plugins.step={step}"]


@pytest.fixture
def tiny(workdir: Path) -> Path:
    import yaml

    path = workdir / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.mark.slow
def test_a_fit_killed_while_saving_keeps_the_previous_last_ckpt_and_resumes_exactly(workdir: Path, tiny: Path) -> None:
    fit_in_process(tiny)
    # Step 6 is saved by ResumeState's periodic save (every 3 steps); last.ckpt then holds step 5, the epoch's end.
    killed = fit_in_subprocess(workdir, tiny, *fault_at("kill", 6))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    reference, interrupted = runs(workdir)
    folder = workdir / "mlruns" / interrupted.info.experiment_id / interrupted.info.run_id / "checkpoints"
    assert [p.name for p in folder.glob(f"*{PARTIAL_SUFFIX}")] != []  # the save really was cut short
    assert checkpoint_damage(folder / "last.ckpt") is None
    assert last_checkpoint(workdir, interrupted)["global_step"] == 5

    fit_in_process(tiny, *fault_at("kill", 6), "--ckpt_path=last")

    reference, resumed = runs(workdir)
    assert resumed.info.run_id == interrupted.info.run_id and resumed.info.status == "FINISHED"
    assert not list(folder.glob(f"*{PARTIAL_SUFFIX}"))  # the dead process's partial file is cleaned up
    assert_same_training(workdir, reference, resumed)


@pytest.mark.slow
def test_a_full_disk_fails_the_run_with_its_reason_keeps_the_checkpoint_and_resumes_exactly(
    workdir: Path, tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit_in_process(tiny)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        fit_in_process(tiny, *fault_at("disk_full", 6))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (message,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "no space left on the device" in message and "the previous last.ckpt is kept" in message
    assert "Traceback" not in err
    reference, failed = runs(workdir)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["failure"] == "disk_full"
    assert failed.data.tags["failure_reason"] == message.removeprefix("error: ")
    assert last_checkpoint(workdir, failed)["global_step"] == 5
    found = find_last_checkpoint(client(workdir), "skipln", {}, workdir / "mlruns")
    assert found.run_id == failed.info.run_id

    fit_in_process(tiny, *fault_at("disk_full", 6), "--ckpt_path=last")

    reference, resumed = runs(workdir)
    assert resumed.info.run_id == failed.info.run_id and resumed.info.status == "FINISHED"
    assert_same_training(workdir, reference, resumed)


def test_the_fault_injection_really_kills_mid_write(tmp_path: Path) -> None:
    # The end-to-end test above is only meaningful if the injected fault leaves half a file behind.
    from skipln_test_support import FaultAtStep

    pid = os.fork()
    if pid == 0:  # the child saves and is killed inside the save
        try:
            FaultAtStep("kill", 1, str(tmp_path / "done")).save_checkpoint(STATE, tmp_path / "last.ckpt")
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    (partial,) = tmp_path.glob(f".last.ckpt.*{PARTIAL_SUFFIX}")
    assert checkpoint_damage(partial) is not None
    assert not (tmp_path / "last.ckpt").exists()

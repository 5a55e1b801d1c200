"""A two-process DDP fit (gloo, CPU) stopped mid-epoch resumes with ``--ckpt_path last`` to the uninterrupted result.

Each test trains the digits ResNet-8 of ``test_resume`` (augmentation on) for 2 epochs of 3
steps a rank, three times through ``main.py``: uninterrupted, interrupted at the second batch of
the second epoch, and resumed. SIGTERM goes to the launcher only (rank 0, the process a scheduler
or ``kill`` reaches): the ranks agree to stop, save that step and end the run KILLED. SIGKILL of
rank 1 leaves rank 0 with a broken process group: it ends the run KILLED too, and the resume
starts from the newest periodic ``last.ckpt`` (every 3 steps). Resumed, every rank gets its own
random state and its own share of the epoch's training metrics back, so the weights are
bit-identical and every logged (step, value) is the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from skipln.processes import lost_process
from skipln.resume import LOST_PROCESS, SIGINT_EXIT_CODE, SIGTERM_EXIT_CODE, ResumeState
from test_resume import TINY, assert_same_training, fit_in_subprocess, last_checkpoint, runs, signal_at

DDP = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
#: Steps per epoch on each of the two ranks (the digits' training split, batch 256, halved), and in all.
STEPS_PER_EPOCH = 3
STEPS = 2 * STEPS_PER_EPOCH

GLOO_PEER_RESET = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:40113: "
    "Connection reset by peer. This is typically caused by a remote worker hanging or bugs in the application."
)


def test_a_peer_that_is_gone_is_told_by_the_backend_error_even_when_wrapped() -> None:
    assert lost_process(RuntimeError(GLOO_PEER_RESET)) == "Connection reset by peer"
    try:
        try:
            raise RuntimeError(GLOO_PEER_RESET)
        except RuntimeError as error:
            raise ValueError("while logging") from error
    except ValueError as wrapped:
        assert lost_process(wrapped) == "Connection reset by peer"


def test_other_errors_are_not_taken_for_a_lost_peer() -> None:
    assert lost_process(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert lost_process(ValueError("Connection reset by peer")) is None  # not a backend's RuntimeError


def test_only_rank_0_reports_a_signal_in_its_exit_status_and_a_lost_peer_fails_every_rank() -> None:
    resume = ResumeState()
    resume.interruption = "SIGTERM"
    assert (resume.exit_code(0), resume.exit_code(1)) == (SIGTERM_EXIT_CODE, 0)
    resume.interruption = "SIGINT"
    assert (resume.exit_code(0), resume.exit_code(1)) == (SIGINT_EXIT_CODE, 0)
    resume.interruption = LOST_PROCESS
    assert (resume.exit_code(0), resume.exit_code(1)) == (1, 1)


@pytest.fixture
def tiny(workdir: Path) -> Path:
    path = workdir / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def ddp_fit(workdir: Path, config: Path, *args: str) -> str:
    """Runs a two-process fit; returns its exit status and output, for the assertions' messages."""
    done = fit_in_subprocess(workdir, config, *DDP, *args)
    return f"{done.returncode}\n{done.stderr[-4000:]}"


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_rank_at_one_step_and_resumes_to_the_same_result(workdir: Path, tiny: Path) -> None:
    reference = ddp_fit(workdir, tiny)
    assert reference.startswith("0\n"), reference
    stopped = ddp_fit(workdir, tiny, *signal_at("SIGTERM", 4))  # rank 0 only
    assert stopped.startswith(f"{SIGTERM_EXIT_CODE}\n"), stopped
    assert "Traceback" not in stopped
    interrupted = runs(workdir)[1]
    assert interrupted.info.status == "KILLED"
    assert interrupted.data.tags["interrupted"].startswith("SIGTERM at step 5") and "holds this step" in interrupted.data.tags["interrupted"]
    assert last_checkpoint(workdir, interrupted)["global_step"] == 5
    assert len(last_checkpoint(workdir, interrupted)["callbacks"]["ResumeState"]["ranks"]) == 2

    resumed = ddp_fit(workdir, tiny, *signal_at("SIGTERM", 4), "--ckpt_path=last")
    assert resumed.startswith("0\n"), resumed

    reference_run, resumed_run = runs(workdir)
    assert resumed_run.info.run_id == interrupted.info.run_id and resumed_run.info.status == "FINISHED"
    assert_same_training(workdir, reference_run, resumed_run, steps=STEPS)


@pytest.mark.slow
def test_a_killed_second_rank_ends_the_run_killed_with_one_line_and_it_resumes_to_the_same_result(workdir: Path, tiny: Path) -> None:
    reference = ddp_fit(workdir, tiny)
    assert reference.startswith("0\n"), reference
    kill_rank_1 = [*signal_at("SIGKILL", 4), "--trainer.callbacks.rank=1"]
    stopped = ddp_fit(workdir, tiny, *kill_rank_1)
    assert stopped.startswith("1\n"), stopped
    assert "Traceback" not in stopped
    assert "error: training interrupted: another process of this run ended" in stopped
    interrupted = runs(workdir)[1]
    assert interrupted.info.status == "KILLED"
    assert interrupted.data.tags["fit_state"] == "interrupted"
    assert "--ckpt_path last" in interrupted.data.tags["resume_command"]
    assert last_checkpoint(workdir, interrupted)["global_step"] == 3  # the periodic save before the kill

    resumed = ddp_fit(workdir, tiny, *kill_rank_1, "--ckpt_path=last")
    assert resumed.startswith("0\n"), resumed

    reference_run, resumed_run = runs(workdir)
    assert resumed_run.info.run_id == interrupted.info.run_id and resumed_run.info.status == "FINISHED"
    assert_same_training(workdir, reference_run, resumed_run, steps=STEPS)

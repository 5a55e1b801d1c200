"""A non-finite loss stops the run clearly (or is skipped), and nothing already saved is lost."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch

from conftest import DEFAULTS
from skipln.callbacks import DivergenceGuard
from skipln.cli import cli_main

ARGS = [
    "--model=skipln_test_support.NonFiniteAtStep",
    "--data=lightning.pytorch.demos.boring_classes.BoringDataModule",
    "--trainer.max_epochs=3",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def only_run(workdir: Path) -> mlflow.entities.Run:
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("skipln").experiment_id])
    return run


def test_nonfinite_loss_stops_with_a_message_naming_step_run_and_strategy(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    strategy = ["--model.skip=skipln.skip.RecursiveSkipLN", "--model.skip.recursions=2"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *ARGS, "--model.bad_steps=[3]", *strategy], default_config_files=[DEFAULTS])
    assert exit_info.value.code == 1
    run = only_run(workdir)
    err = capsys.readouterr().err
    assert "loss is nan at step 3" in err and run.info.run_id in err
    assert "skip strategy RecursiveSkipLN(recursions=2" in err
    assert "--trainer.callbacks.on_nonfinite=skip" in err  # how to go on past such steps


def test_diverged_run_ends_failed_with_reason_tag_and_metrics_so_far(workdir: Path) -> None:
    with pytest.raises(SystemExit):
        cli_main(["fit", *ARGS, "--model.bad_steps=[3]"], default_config_files=[DEFAULTS])
    run = only_run(workdir)
    assert run.info.status == "FAILED"
    assert "step 3" in run.data.tags["failure_reason"]
    assert run.data.tags["failure"] == "diverged"
    history = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db").get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [0, 1, 2]


def test_checkpoints_written_before_divergence_are_kept_and_finite(workdir: Path) -> None:
    with pytest.raises(SystemExit):
        cli_main(["fit", *ARGS, "--model.bad_steps=[3]"], default_config_files=[DEFAULTS])
    run = only_run(workdir)
    last = workdir / "mlruns" / run.info.experiment_id / run.info.run_id / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


def test_skip_mode_drops_nonfinite_steps_and_finishes(workdir: Path) -> None:
    # As the stop message says: one more guard on the command line replaces the default one.
    skip_mode = ["--trainer.callbacks+=skipln.callbacks.DivergenceGuard", "--trainer.callbacks.on_nonfinite=skip"]
    cli = cli_main(["fit", *ARGS, "--model.bad_steps=[1, 3]", *skip_mode], default_config_files=[DEFAULTS])
    assert cli is not None
    run = only_run(workdir)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["train/nonfinite_steps"] == 2.0
    guards = [c for c in cli.trainer.callbacks if isinstance(c, DivergenceGuard)]
    assert [guard.on_nonfinite for guard in guards] == ["skip"]
    # The other default callbacks still run: the checkpoints are written.
    last = workdir / "mlruns" / run.info.experiment_id / run.info.run_id / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 6


def test_skip_mode_still_stops_after_max_skips_nonfinite_steps(workdir: Path) -> None:
    skip_mode = ["--trainer.callbacks+=skipln.callbacks.DivergenceGuard", "--trainer.callbacks.on_nonfinite=skip", "--trainer.callbacks.max_skips=1"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *ARGS, "--model.bad_steps=[1, 3]", *skip_mode], default_config_files=[DEFAULTS])
    assert exit_info.value.code == 1
    run = only_run(workdir)
    assert run.info.status == "FAILED"
    assert "step 3" in run.data.tags["failure_reason"] and "after skipping 1 non-finite steps" in run.data.tags["failure_reason"]

"""The README's main job: the ResNet quickstart, and composed configs, through the CLI."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from conftest import CONFIGS, DEFAULTS
from skipln.cli import cli_main

SHORT = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def only_run(workdir: Path) -> mlflow.entities.Run:
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("skipln").experiment_id])
    return run


def test_quickstart_lands_a_finished_run_with_the_strategy_params(workdir: Path) -> None:
    cli_main(["fit", f"--config={CONFIGS / 'quickstart' / 'resnet.yaml'}", *SHORT], default_config_files=[DEFAULTS])
    run = only_run(workdir)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "resnet20-digits-skip"
    assert run.data.params["model.net.skip.class_path"] == "skipln.skip.Plain"
    assert {"train/loss_epoch", "val/loss", "val/acc", "val/acc_best"} <= set(run.data.metrics)


def test_a_strategy_file_composes_with_an_experiment_file(workdir: Path) -> None:
    configs = [CONFIGS / "quickstart" / "resnet.yaml", CONFIGS / "skip" / "rskip_ln2.yaml"]
    cli_main(["fit", *(f"--config={c}" for c in configs), *SHORT], default_config_files=[DEFAULTS])
    run = only_run(workdir)
    assert run.info.run_name == "resnet20-digits-rskip_ln-r2"
    assert run.data.params["model.net.skip.class_path"] == "skipln.skip.RecursiveSkipLN"
    assert run.data.params["model.net.skip.recursions"] == "2"
    assert run.data.params["model.net.depth"] == "20"  # the experiment file's other values survive


def test_test_after_fit_reports_accuracy_into_the_same_run(workdir: Path) -> None:
    config = f"--config={CONFIGS / 'quickstart' / 'resnet.yaml'}"
    cli_main(["fit", config, *SHORT], default_config_files=[DEFAULTS])
    run = only_run(workdir)
    last = workdir / "mlruns" / run.info.experiment_id / run.info.run_id / "checkpoints" / "last.ckpt"
    cli_main(["test", config, *SHORT, f"--ckpt_path={last}"], default_config_files=[DEFAULTS])
    after = only_run(workdir)
    assert after.info.run_id == run.info.run_id
    assert 0.0 <= after.data.metrics["test/acc"] <= 1.0


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIGS / "skip").glob("*.yaml")))
def test_every_strategy_file_parses_with_the_resnet_experiments(name: str, workdir: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            ["fit", f"--config={CONFIGS / 'resnet' / 'cifar10_resnet20.yaml'}", f"--config={CONFIGS / 'skip' / f'{name}.yaml'}", "--print_config"],
            default_config_files=[DEFAULTS],
        )
    assert exit_info.value.code == 0

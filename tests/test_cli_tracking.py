"""Runs started from the CLI land in the local MLflow store, complete and readable."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from mlflow.entities import Run

from conftest import DEFAULTS
from skipln.cli import cli_main
from skipln.tracking import CHECKPOINT_RUN_KEY, flatten_config

TINY = [
    "--model=lightning.pytorch.demos.boring_classes.BoringModel",
    "--data=lightning.pytorch.demos.boring_classes.BoringDataModule",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.callbacks=lightning.pytorch.callbacks.ModelCheckpoint",
    "--trainer.callbacks.save_last=true",
]


class ExplodingModel(BoringModel):
    """Raises in its second training step, as a diverged or crashed run would."""

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        if batch_idx == 1:
            raise RuntimeError("boom")
        output = super().training_step(batch, batch_idx)
        self.log("train/loss", output["loss"])
        return output


def runs(workdir: Path) -> list[Run]:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("skipln")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_flatten_config_drops_init_args_and_keeps_class_paths() -> None:
    config = {"model": {"class_path": "T", "init_args": {"net": {"class_path": "N", "init_args": {"depth": 20}}}}}
    assert dict(flatten_config(config)) == {"model.class_path": "T", "model.net.class_path": "N", "model.net.depth": "20"}


def test_fit_lands_a_finished_run_with_config_params_and_artifact(workdir: Path) -> None:
    cli_main(["fit", *TINY], default_config_files=[DEFAULTS])
    (run,) = runs(workdir)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.class_path"] == "lightning.pytorch.demos.boring_classes.BoringModel"
    assert run.data.params["trainer.max_epochs"] == "1"
    artifacts = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db").list_artifacts(run.info.run_id)
    assert [a.path for a in artifacts] == ["config.yaml"]


def test_checkpoints_are_written_under_the_run_and_remember_it(workdir: Path) -> None:
    cli_main(["fit", *TINY], default_config_files=[DEFAULTS])
    (run,) = runs(workdir)
    last = workdir / "mlruns" / run.info.experiment_id / run.info.run_id / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)[CHECKPOINT_RUN_KEY] == run.info.run_id


def test_test_with_a_checkpoint_reports_into_the_training_run(workdir: Path) -> None:
    cli_main(["fit", *TINY], default_config_files=[DEFAULTS])
    (run,) = runs(workdir)
    last = workdir / "mlruns" / run.info.experiment_id / run.info.run_id / "checkpoints" / "last.ckpt"
    cli_main(["test", *TINY, f"--ckpt_path={last}"], default_config_files=[DEFAULTS])
    (after,) = runs(workdir)
    assert after.info.run_id == run.info.run_id
    assert after.info.status == "FINISHED"


def test_a_crashing_run_ends_failed_with_its_metrics_so_far(workdir: Path) -> None:
    args = [a for a in TINY if not a.startswith("--model")] + [f"--model={__name__}.ExplodingModel", "--trainer.log_every_n_steps=1"]
    with pytest.raises(RuntimeError, match="boom"):
        cli_main(["fit", *args], default_config_files=[DEFAULTS])
    (run,) = runs(workdir)
    assert run.info.status == "FAILED"
    # The step before the crash was logged and is kept.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlruns/mlflow.db")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0]


def test_invalid_strategy_hyperparameter_exits_with_a_clear_message(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *TINY, "--model=skipln_test_support.SkipHolder", "--model.skip=skipln.skip.RecursiveSkipLN", "--model.skip.recursions=0"])
    assert exit_info.value.code == 2
    assert "'recursions' must be an integer >= 1, got 0" in capsys.readouterr().err


def test_a_sweeps_run_name_is_led_by_the_net_and_data_once() -> None:
    from types import SimpleNamespace

    from skipln.tracking import sweep_run_name

    model, data = SimpleNamespace(net=SimpleNamespace(name="resnet20")), SimpleNamespace(name="fashion_mnist")
    assert sweep_run_name("rskip_ln2-s0", model, data) == "resnet20-fashion_mnist-rskip_ln2-s0"
    assert sweep_run_name("resnet20-fashion_mnist-rskip_ln2-s0", model, data) == "resnet20-fashion_mnist-rskip_ln2-s0"
    assert sweep_run_name("b-s0", SimpleNamespace(), SimpleNamespace()) == "b-s0"


def test_a_fit_into_a_sweeps_run_names_it_like_every_other_run(workdir: Path) -> None:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlruns/mlflow.db")
    experiment_id = client.create_experiment("skipln")
    run_id = client.create_run(experiment_id, run_name="skip-s0", tags={"sweep": "demo"}).info.run_id
    quickstart = Path(DEFAULTS).parent / "quickstart" / "resnet.yaml"
    cli_main(["fit", f"--config={quickstart}", "--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
              f"--trainer.logger.init_args.run_id={run_id}"], default_config_files=[DEFAULTS])  # fmt: skip
    assert client.get_run(run_id).info.run_name == "resnet20-digits-skip-s0"

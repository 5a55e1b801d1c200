"""The translation quickstart runs end to end through the CLI and reports BLEU to MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow

from conftest import CONFIGS, DEFAULTS
from skipln.cli import cli_main

CONFIG = f"--config={CONFIGS / 'quickstart' / 'transformer.yaml'}"
SHORT = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--model.init_args.beam_size=2",
]


def test_fit_then_test_logs_bleu_into_the_training_run(workdir: Path) -> None:
    cli_main(["fit", CONFIG, *SHORT], default_config_files=[DEFAULTS])
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("skipln").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.net.skip.class_path"] == "skipln.skip.PostLN"
    assert {"val/loss", "val/ppl"} <= set(run.data.metrics)
    last = workdir / "mlruns" / run.info.experiment_id / run.info.run_id / "checkpoints" / "last.ckpt"

    cli_main(["test", CONFIG, *SHORT, f"--ckpt_path={last}"], default_config_files=[DEFAULTS])
    (after,) = client.search_runs([run.info.experiment_id])
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert 0.0 <= after.data.metrics["test/bleu"] <= 100.0
    assert 0.0 <= after.data.metrics["test/bleu_tok"] <= 100.0

"""Every CLI command ends by saying which MLflow run it was, what it reached, and what to type next."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.demos.boring_classes import BoringModel

from conftest import DEFAULTS
from skipln.cli import cli_main
from test_cli_tracking import TINY, runs

MONITORED = [*TINY, "--model=test_run_summary.LoggingModel", "--trainer.callbacks.monitor=val/loss"]


class LoggingModel(BoringModel):
    """Logs a validation loss for the checkpoint callback to monitor."""

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        output = super().validation_step(batch, batch_idx)
        self.log("val/loss", output["x"])
        return output


class LineWriter(BasePredictionWriter):
    """Writes one line per predicted batch, as the translation writer writes one per sentence."""

    def __init__(self, output_path: str) -> None:
        super().__init__(write_interval="epoch")
        self.output_path = Path(output_path)

    def write_on_epoch_end(self, trainer: Trainer, pl_module: LightningModule, predictions: Any, batch_indices: Any) -> None:
        self.output_path.write_text("".join(f"{i}\n" for i, _ in enumerate(predictions)))


def test_fit_ends_with_the_run_the_best_score_the_checkpoints_and_a_test_command(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli_main(["fit", *MONITORED], default_config_files=[DEFAULTS])
    out = capsys.readouterr().out
    (run,) = runs(workdir)
    assert f"fit done: MLflow run '{run.info.run_name}' {run.info.run_id}, experiment 'skipln'" in out
    assert "  best val/loss: " in out
    best = next(line for line in out.splitlines() if line.startswith("  best checkpoint: ")).removeprefix("  best checkpoint: ")
    assert Path(best).is_file() and run.info.run_id in best
    assert f"  last checkpoint: {Path(best).parent / 'last.ckpt'}" in out
    assert f"  test it: python main.py test --ckpt_path {best}" in out


def test_test_ends_with_the_run_it_reported_into_and_its_results(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli_main(["fit", *TINY], default_config_files=[DEFAULTS])
    (run,) = runs(workdir)
    last = next(workdir.glob("mlruns/*/*/checkpoints/last.ckpt"))
    capsys.readouterr()
    cli_main(["test", *TINY, f"--ckpt_path={last}"], default_config_files=[DEFAULTS])
    out = capsys.readouterr().out
    assert f"test done: MLflow run '{run.info.run_name}' {run.info.run_id}" in out


def test_predict_ends_with_the_file_it_wrote_and_its_line_count(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a for a in TINY if "callbacks" not in a] + ["--trainer.callbacks=test_run_summary.LineWriter", "--trainer.callbacks.output_path=out.txt"]
    cli_main(["predict", *args], default_config_files=[DEFAULTS])
    assert f"  wrote out.txt ({len((workdir / 'out.txt').read_text().splitlines())} lines)" in capsys.readouterr().out

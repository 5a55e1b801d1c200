"""configs/callbacks/ema.yaml: Lightning's EMAWeightAveraging added to a run through YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, DEFAULTS
from skipln.cli import cli_main

SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_checkpoints_hold_the_moving_average_and_test_evaluates_it(workdir: Path) -> None:
    configs = [f"--config={CONFIGS / 'quickstart' / 'resnet.yaml'}", f"--config={CONFIGS / 'callbacks' / 'ema.yaml'}"]
    cli_main(["fit", *configs, *SHORT], default_config_files=[DEFAULTS])
    (last,) = workdir.glob("mlruns/*/*/checkpoints/last.ckpt")
    checkpoint = torch.load(last, weights_only=True)
    assert "EMAWeightAveraging" in checkpoint["callbacks"]  # beside the defaults' callbacks, not instead of them
    assert any(key.startswith("ModelCheckpoint") for key in checkpoint["callbacks"])
    averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert not torch.equal(averaged["net.stem.0.weight"], current["net.stem.0.weight"])  # three SGD steps moved the weights, decay 0.999 barely the average
    cli_main(["test", f"--ckpt_path={last}", *SHORT], default_config_files=[DEFAULTS])

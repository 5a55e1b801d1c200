"""A trained model from its checkpoint alone: in Python, on the command line, and a clear error when weights do not fit."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import mlflow
import pytest
import torch

from conftest import CONFIGS, DEFAULTS
from skipln.checkpoints import check_weights_fit, checkpoint_config, with_checkpoint_config
from skipln.cli import cli_main
from skipln.errors import ConfigError
from skipln.models.resnet import ResNet
from skipln.skip import Plain, ReZero
from skipln.tasks.classification import ClassificationTask

SHORT = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.limit_predict_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]

CLI_HPARAMS = {
    "_class_path": "skipln.tasks.classification.ClassificationTask",
    "_instantiator": "lightning.pytorch.cli.instantiate_module",
    "num_classes": 10,
    "net": {"class_path": "skipln.models.resnet.ResNet", "init_args": {"depth": 8, "block": "basic", "skip": {"class_path": "skipln.skip.ReZero"}}},
}


def task(skip: object) -> ClassificationTask:
    net = ResNet(depth=8, block="basic", num_classes=10, in_channels=1, width=4, skip=skip)  # type: ignore[arg-type]
    return ClassificationTask(net, optimizer=partial(torch.optim.SGD, lr=0.1), num_classes=10)


def test_a_task_built_in_python_keeps_live_objects_out_of_its_hparams() -> None:
    hparams = task(Plain()).hparams
    assert "net" not in hparams and "optimizer" not in hparams
    assert hparams["num_classes"] == 10


def test_checkpoint_config_turns_the_clis_hparams_into_class_path_configs() -> None:
    config = checkpoint_config({"hyper_parameters": CLI_HPARAMS, "datamodule_hyper_parameters": {"_class_path": "skipln.data.digits.DigitsDataModule", "batch_size": 8}})
    assert config["model"] == {
        "class_path": "skipln.tasks.classification.ClassificationTask",
        "init_args": {"num_classes": 10, "net": CLI_HPARAMS["net"]},
    }
    assert config["data"] == {"class_path": "skipln.data.digits.DigitsDataModule", "init_args": {"batch_size": 8}}


def test_hparams_of_a_task_built_in_python_give_no_config() -> None:
    assert checkpoint_config({"hyper_parameters": {"num_classes": 10}}) == {}


def test_the_checkpoints_config_goes_right_after_the_subcommand_so_later_options_win(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": CLI_HPARAMS}, path)
    argv = ["test", "--config=mine.yaml", f"--ckpt_path={path}"]
    changed = with_checkpoint_config(argv)
    assert changed[0] == "test" and changed[1].startswith("--model=") and changed[2:] == argv[1:]
    assert '"skipln.skip.ReZero"' in changed[1]


def test_fit_arguments_are_left_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": CLI_HPARAMS}, path)
    argv = ["fit", "--config=mine.yaml", f"--ckpt_path={path}"]
    assert with_checkpoint_config(argv) == argv


def test_weights_of_another_strategy_fail_in_one_line_naming_both_strategies() -> None:
    trained = task(ReZero())
    checkpoint = {"state_dict": trained.state_dict(), "hyper_parameters": CLI_HPARAMS}
    with pytest.raises(ConfigError) as error:
        check_weights_fit(task(Plain()), checkpoint)
    message = str(error.value)
    assert "skip strategy ReZero()" in message and "skip strategy Plain()" in message
    assert "not in the network" in message and "\n" not in message


def test_a_task_that_loads_partially_is_not_checked() -> None:
    plain = task(Plain())
    plain.strict_loading = False
    check_weights_fit(plain, {"state_dict": task(ReZero()).state_dict()})


def test_weights_that_fit_pass() -> None:
    check_weights_fit(task(ReZero()), {"state_dict": task(ReZero()).state_dict()})


@pytest.mark.slow
def test_a_cli_checkpoint_alone_rebuilds_its_network_in_python_and_on_the_command_line(workdir: Path) -> None:
    quickstart = f"--config={CONFIGS / 'quickstart' / 'resnet.yaml'}"
    cli_main(["fit", quickstart, f"--config={CONFIGS / 'skip' / 'rezero.yaml'}", *SHORT], default_config_files=[DEFAULTS])
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("skipln").experiment_id])
    last = workdir / "mlruns" / run.info.experiment_id / run.info.run_id / "checkpoints" / "last.ckpt"

    loaded = ClassificationTask.load_from_checkpoint(last)
    assert isinstance(loaded.net.skip, ReZero)
    saved = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.equal(value, saved[key]) for key, value in loaded.state_dict().items())

    cli_main(["test", f"--ckpt_path={last}", *SHORT], default_config_files=[DEFAULTS])  # no --config
    assert "test/acc" in client.get_run(run.info.run_id).data.metrics
    # A new user's try: the quickstart config (plain skip) on this checkpoint predicts with the checkpoint's network.
    cli_main(["predict", quickstart, f"--ckpt_path={last}", *SHORT], default_config_files=[DEFAULTS])

"""The ResNet experiment files: each composes a network, He et al.'s recipe and a data set from shared parts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, DEFAULTS
from skipln.cli import cli_main

EXPERIMENTS = sorted((CONFIGS / "resnet").glob("*.yaml"))
DATA_CLASSES = {
    "cifar10": "skipln.data.cifar.CIFAR10DataModule",
    "cifar100": "skipln.data.cifar.CIFAR100DataModule",
    "fashion_mnist": "skipln.data.images.ImageDataModule",
}


def printed_config(capsys: pytest.CaptureFixture[str], *configs: Path) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *(f"--config={c}" for c in configs), "--print_config"], default_config_files=[DEFAULTS])
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_each_experiment_file_is_the_network_recipe_and_data_its_name_says(
    path: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, preact, depth = re.fullmatch(r"(cifar100|cifar10|fashion_mnist)_(preact_)?resnet(\d+)", path.stem).groups()
    config = printed_config(capsys, path)

    task = config["model"]["init_args"]
    net = task["net"]["init_args"]
    assert (net["depth"], net["block"], net["shortcut"], net["skip"]["class_path"]) == (
        int(depth), "preact" if preact else "basic", "A", "skipln.skip.Plain"
    )
    optimizer = task["optimizer"]
    assert optimizer["class_path"] == "torch.optim.SGD"
    assert (optimizer["init_args"]["lr"], optimizer["init_args"]["momentum"], optimizer["init_args"]["weight_decay"]) == (0.1, 0.9, 1e-4)
    schedule = task["schedule"]["init_args"]
    assert (schedule["milestones"], schedule["gamma"]) == ([0.5, 0.75], 0.1)
    assert schedule["warmup_steps"] == (400 if depth == "110" else 0)  # He et al.'s warm-up for depth 110 only
    assert task["top_k"] == ([1, 5] if data == "cifar100" else [1])
    assert config["data"]["class_path"] == DATA_CLASSES[data]
    assert (config["data"]["init_args"]["batch_size"], config["data"]["init_args"]["val_size"]) == (128, 5000)
    assert config["trainer"]["max_steps"] == 64000


def test_a_strategy_file_after_an_experiment_replaces_only_the_skip_connection(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = printed_config(capsys, CONFIGS / "resnet" / "cifar10_resnet56.yaml")
    rskip = printed_config(capsys, CONFIGS / "resnet" / "cifar10_resnet56.yaml", CONFIGS / "skip" / "rskip_ln2.yaml")

    assert rskip["model"]["init_args"]["net"]["init_args"]["skip"]["class_path"] == "skipln.skip.RecursiveSkipLN"
    for config in (plain, rskip):
        del config["model"]["init_args"]["net"]["init_args"]["skip"]
    assert rskip == plain


def test_a_part_file_that_is_not_there_is_named_in_one_line(tmp_path: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = tmp_path / "mine.yaml"
    experiment.write_text((CONFIGS / "resnet" / "cifar10_resnet20.yaml").read_text().replace("nets/resnet20.yaml", "nets/resnet21.yaml"))

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", f"--config={experiment}"], default_config_files=[DEFAULTS])

    assert exit_info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "model.init_args.net: no config file" in line and "nets/resnet21.yaml" in line and "relative to the config file" in line

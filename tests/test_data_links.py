"""The CLI links what the data determines (classes, input channels, vocabulary) into the model: not written twice in YAML."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import CONFIGS, DEFAULTS
from skipln.cli import DATA_LINKS, SkipLNCLI, cli_main
from test_image_datasets import write_png_folder

pytestmark = pytest.mark.slow

SHORT = [
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def image_folder_config(tmp_path: Path, **net_args: int) -> Path:
    """A ResNet on a folder of grey PNGs in 3 classes; the model states no classes or channels unless given."""
    write_png_folder(tmp_path / "shapes" / "train", {"circle": 4, "square": 4, "star": 4}, mode="L")
    write_png_folder(tmp_path / "shapes" / "test", {"circle": 1, "square": 1, "star": 1}, mode="L")
    config = {
        "model": {
            "class_path": "skipln.tasks.classification.ClassificationTask",
            "init_args": {
                "net": {"class_path": "skipln.models.resnet.ResNet", "init_args": {"depth": 8, "block": "basic", "width": 4, **net_args}},
                "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}},
            },
        },
        "data": {
            "class_path": "skipln.data.images.ImageDataModule",
            "init_args": {"dataset": "ImageFolder", "data_dir": str(tmp_path / "shapes"), "val_size": 3, "batch_size": 4, "num_workers": 0},
        },
    }
    path = tmp_path / "shapes.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def linked_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[SkipLNCLI, Path]:
    """``validate`` on the folder, through the CLI, in its own working directory (for mlruns/)."""
    tmp_path = tmp_path_factory.mktemp("links")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        cli = cli_main(["validate", f"--config={image_folder_config(tmp_path)}", *SHORT], default_config_files=[DEFAULTS])
    assert cli is not None
    return cli, tmp_path


@pytest.fixture
def linked(linked_run: tuple[SkipLNCLI, Path]) -> SkipLNCLI:
    return linked_run[0]


def test_the_links_are_the_classes_and_channels_of_image_data_and_the_vocabulary_of_text() -> None:
    assert set(DATA_LINKS) == {
        ("data.num_classes", "model.init_args.num_classes"),
        ("data.num_classes", "model.init_args.net.init_args.num_classes"),
        ("data.in_channels", "model.init_args.net.init_args.in_channels"),
        ("data.vocab_size", "model.init_args.net.init_args.vocab_size"),
    }


def test_the_task_gets_the_number_of_classes_from_the_data(linked: SkipLNCLI) -> None:
    assert linked.model.num_classes == linked.datamodule.num_classes == 3


def test_the_network_gets_the_number_of_classes_from_the_data(linked: SkipLNCLI) -> None:
    assert linked.model.net.num_classes == 3
    assert linked.model.net.fc.out_features == 3


def test_the_network_gets_the_input_channels_from_the_data(linked: SkipLNCLI) -> None:
    assert linked.model.net.in_channels == linked.datamodule.in_channels == 1
    assert linked.model.net.stem[0].in_channels == 1


def test_the_linked_values_are_logged_as_data_params(linked_run: tuple[SkipLNCLI, Path]) -> None:
    cli, workdir = linked_run
    run = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db").get_run(cli.trainer.logger.run_id)
    assert run.data.params["data.num_classes"] == "3"
    assert run.data.params["data.in_channels"] == "1"


def test_values_written_in_yaml_still_parse_and_the_data_wins(tmp_path: Path, workdir: Path) -> None:
    config = image_folder_config(tmp_path, num_classes=10, in_channels=3)
    cli = cli_main(["validate", f"--config={config}", "--model.init_args.num_classes=10", *SHORT], default_config_files=[DEFAULTS])
    assert cli is not None
    assert (cli.model.num_classes, cli.model.net.num_classes, cli.model.net.in_channels) == (3, 3, 1)


@pytest.mark.parametrize("name", sorted(p.name for p in (CONFIGS / "resnet").glob("fashion_mnist_*.yaml")))
def test_the_fashion_mnist_configs_compose_with_a_strategy(name: str, workdir: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            ["fit", f"--config={CONFIGS / 'resnet' / name}", f"--config={CONFIGS / 'skip' / 'rskip_ln2.yaml'}", "--print_config"],
            default_config_files=[DEFAULTS],
        )
    assert exit_info.value.code == 0


def test_an_unknown_dataset_name_stops_the_cli_with_one_line(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            ["fit", f"--config={CONFIGS / 'resnet' / 'fashion_mnist_resnet20.yaml'}", "--data.init_args.dataset=FashonMNIST"],
            default_config_files=[DEFAULTS],
        )
    assert exit_info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "unknown dataset 'FashonMNIST' (did you mean 'FashionMNIST'" in line


def test_missing_fashion_mnist_files_stop_the_cli_naming_the_script(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            ["fit", f"--config={CONFIGS / 'resnet' / 'fashion_mnist_resnet20.yaml'}", f"--data.init_args.data_dir={workdir / 'empty'}"],
            default_config_files=[DEFAULTS],
        )
    assert exit_info.value.code == 2
    assert "python scripts/get_fashion_mnist.py" in capsys.readouterr().err


def test_a_users_small_corpus_trains_with_only_data_dir_and_languages_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quickstart asks for 4,000 pieces; 60 French–English pairs yield fewer: the vocabulary shrinks, the model follows."""
    from test_translation_data import write_corpus

    corpus = write_corpus(tmp_path / "fr_en", src="fr", tgt="en", sizes={"train": 60, "valid": 8, "test": 8})
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="vocab_size=4000 is more than the training text yields"):
        cli = cli_main(
            ["fit", f"--config={CONFIGS / 'quickstart' / 'transformer.yaml'}", f"--data.init_args.data_dir={corpus}",
             "--data.init_args.src_lang=fr", "--data.init_args.tgt_lang=en", "--trainer.max_steps=2", *SHORT],
            default_config_files=[DEFAULTS],
        )  # fmt: skip
    assert cli is not None and cli.trainer.global_step == 2
    pieces = len(cli.datamodule.tokenizer)
    assert pieces < 4000 and cli.model.net.vocab_size == pieces

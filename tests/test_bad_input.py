"""Bad input ends with one clear line — what was wrong and how to fix it —, a non-zero exit, and no run left RUNNING.

One table: each row is a mistake a user makes (a misspelled class or option, a value of the
wrong type, broken data files, a store or server that cannot be used), run through the real
CLI entry point in this process, as ``main.py`` runs it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import CONFIGS, DEFAULTS
from reliability_support import closed_port, store_runs, tiny_translation_config, write_config, write_corpus
from sweep_support import new_store
from skipln.cli import cli_main

RESNET = f"--config={CONFIGS / 'quickstart' / 'resnet.yaml'}"
CIFAR = f"--config={CONFIGS / 'resnet' / 'cifar10_resnet20.yaml'}"
TRANSLATION = "--config=translation.yaml"  # written into the working directory by `translation_config`
SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]
SKIP = "--model.init_args.net.init_args.skip"


# -- what each row prepares in its working directory ---------------------------------------


def translation_config(workdir: Path) -> Path:
    """``translation.yaml`` (a tiny Transformer) reading the tiny corpus in ``corpus/``."""
    write_corpus(workdir / "corpus")
    return write_config(workdir / "translation.yaml", tiny_translation_config("corpus"))


def shorter_validation_target(workdir: Path) -> None:
    translation_config(workdir)
    target = workdir / "corpus" / "valid.de"
    target.write_text("".join(target.read_text(encoding="utf-8").splitlines(keepends=True)[:-3]), encoding="utf-8")


def empty_validation_split(workdir: Path) -> None:
    translation_config(workdir)
    for lang in ("en", "de"):
        (workdir / "corpus" / f"valid.{lang}").write_text("", encoding="utf-8")


def latin1_training_line(workdir: Path) -> None:
    translation_config(workdir)
    with (workdir / "corpus" / "train.en").open("ab") as handle:
        handle.write("Caf\u00e9 ouvert\n".encode("latin-1"))
    with (workdir / "corpus" / "train.de").open("a", encoding="utf-8") as handle:
        handle.write("Café geöffnet\n")


def corrupt_cifar(workdir: Path) -> None:
    """CIFAR-10's files, all present, one of them cut short (as an interrupted copy leaves it)."""
    root = workdir / "data" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"):
        entry = {"data": bytes(3072 * 4), "labels": [0, 1, 2, 3], "label_names": [f"c{i}" for i in range(10)]}
        (root / name).write_bytes(pickle.dumps(entry))
    blob = (root / "data_batch_3").read_bytes()
    (root / "data_batch_3").write_bytes(blob[: len(blob) // 2])


def misspelled_key_in_a_config_file(workdir: Path) -> None:
    (workdir / "deeper.yaml").write_text("model:\n  init_args:\n    net:\n      init_args:\n        dept: 56\n")


def read_only_mlruns(workdir: Path) -> None:
    (workdir / "mlruns").mkdir()
    (workdir / "mlruns").chmod(0o500)


def permissions_stop_writes(workdir: Path) -> bool:
    """Whether a folder without write permission refuses this process a new file (not so for root)."""
    probe = workdir / "probe"
    probe.mkdir(mode=0o500)
    try:
        (probe / "file").touch()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o700)
    return False


def file_named_mlruns(workdir: Path) -> None:
    (workdir / "mlruns").write_text("not a folder\n")


# -- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadInput:
    """A mistake, the words its message must hold (the problem and the fix), and the run it may leave."""

    args: list[str]
    words: tuple[str, ...]
    prepare: Callable[[Path], object] | None = None
    #: FAILED where the mistake shows only after the MLflow run was created; None where no run may exist.
    run_status: str | None = None
    subcommand: str = "fit"
    needs_permissions: bool = False
    #: Start from an empty store copied from a template (MLflow's migrations take seconds); not where
    #: the row is about the store's folder itself.
    store: bool = True


CASES: dict[str, BadInput] = {
    "unknown-class-path": BadInput(
        [RESNET, "--model=skipln.tasks.classification.ClassificationTsk"],
        ("model: cannot import class_path 'skipln.tasks.classification.ClassificationTsk'", "has no attribute",
         "did you mean 'skipln.tasks.classification.ClassificationTask'"),
    ),
    "unknown-strategy-class-path": BadInput(
        [RESNET, f"{SKIP}=skipln.skip.RecursivSkipLN"],
        ("model.init_args.net.init_args.skip: cannot import class_path 'skipln.skip.RecursivSkipLN'",
         "did you mean 'skipln.skip.RecursiveSkipLN'"),
    ),
    "misspelled-option": BadInput(
        [RESNET, "--trainer.max_epoks=1"],
        ("unknown option --trainer.max_epoks", "did you mean option '--trainer.max_epochs'", "--help"),
    ),
    "misspelled-argument-in-a-config-file": BadInput(
        [RESNET, "--config=deeper.yaml"],
        ("model.init_args.net.init_args.dept", "ResNet has no argument 'dept'", "did you mean argument 'depth'", "it accepts: depth"),
        prepare=misspelled_key_in_a_config_file,
    ),
    "misspelled-strategy-argument": BadInput(
        [RESNET, f"{SKIP}=skipln.skip.RecursiveSkipLN", f"{SKIP}.init_args.recursion=2"],
        ("RecursiveSkipLN has no argument 'recursion'", "did you mean argument 'recursions'"),
    ),
    "wrongly-typed-argument": BadInput(
        [RESNET, "--model.init_args.net.init_args.depth=twenty"],
        ("model.init_args.net.init_args.depth: expected int, got 'twenty'",),
    ),
    "value-outside-a-choice": BadInput(
        [RESNET, "--model.init_args.net.init_args.block=fancy"],
        ("model.init_args.net.init_args.block: expected one of 'basic', 'preact', got 'fancy'",),
    ),
    "recursions-0": BadInput(
        [RESNET, f"{SKIP}=skipln.skip.RecursiveSkipLN", f"{SKIP}.init_args.recursions=0"],
        ("RecursiveSkipLN: 'recursions' must be an integer >= 1, got 0",),
    ),
    "missing-cifar-folder": BadInput(
        [CIFAR, "--data.init_args.data_dir=nowhere"],
        ("CIFAR10 not found", "nowhere/cifar-10-batches-py/", "data_batch_1", "the folder does not exist",
         "cifar-10-python.tar.gz, unpacked into", "download: true"),
    ),
    "missing-translation-folder": BadInput(
        [TRANSLATION, "--data.init_args.data_dir=nowhere"],
        ("data_dir 'nowhere' does not exist", "train.en, train.de", "leave data_dir unset"),
        prepare=translation_config,
    ),
    "corrupt-cifar-file": BadInput(
        [CIFAR],
        ("CIFAR10 at", "is corrupt or incomplete", "Replace the files with a fresh copy", "download: true"),
        prepare=corrupt_cifar,
    ),
    "parallel-files-of-different-lengths": BadInput(
        [TRANSLATION],
        ("valid.en' has 20 lines but", "valid.de' has 17", "Re-create both files"),
        prepare=shorter_validation_target,
        run_status="FAILED",
    ),
    "empty-files": BadInput(
        [TRANSLATION],
        ("valid.en' and", "valid.de' are empty", "fill them"),
        prepare=empty_validation_split,
        run_status="FAILED",
    ),
    "line-not-utf8": BadInput(
        [TRANSLATION],
        ("train.en' line 301 is not UTF-8", "iconv"),
        prepare=latin1_training_line,
    ),
    "read-only-mlruns": BadInput(
        [RESNET],
        ("cannot write to", "mlruns (permission denied)", "make it writable"),
        prepare=read_only_mlruns,
        needs_permissions=True,
        store=False,
    ),
    "mlruns-is-a-file": BadInput(
        [RESNET],
        ("cannot write the MLflow store", "mlruns is a file, not a folder", "--trainer.logger.init_args.tracking_uri"),
        prepare=file_named_mlruns,
        store=False,
    ),
    "unreachable-tracking-server": BadInput(
        [RESNET, "--trainer.logger.init_args.tracking_uri=http://127.0.0.1:{port}"],
        ("cannot reach the MLflow tracking server at http://127.0.0.1:", "start it", "sqlite:///mlruns/mlflow.db"),
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_ends_with_one_clear_line_a_failing_exit_and_no_running_run(
    case: BadInput, workdir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    if case.needs_permissions and not permissions_stop_writes(workdir):
        pytest.skip("file permissions do not stop this user's writes (root): 'mlruns-is-a-file' covers the path")
    if case.store:
        new_store(workdir)
    if case.prepare is not None:
        case.prepare(workdir)
    args = [arg.format(port=closed_port()) for arg in case.args]
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli_main([case.subcommand, *args, *SHORT], default_config_files=[DEFAULTS])
    finally:
        if (workdir / "mlruns").is_dir():
            (workdir / "mlruns").chmod(0o700)  # so that pytest can delete it
    err = capfd.readouterr().err
    assert exit_info.value.code == 2  # the status of every error the user can fix
    messages = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(messages) == 1, err
    for word in case.words:
        assert word in messages[0], messages[0]
    assert "Traceback" not in err and "usage:" not in err
    statuses = [run.info.status for run in store_runs(workdir / "mlruns" / "mlflow.db")]
    assert "RUNNING" not in statuses
    assert statuses == ([case.run_status] if case.run_status else [])

"""Two processes (``--trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu``, gloo) train both tasks correctly.

Each task is trained for a few steps under DDP through ``main.py``; then its checkpoint is
evaluated by one process in this one. The metrics the two-process run logged are the global
ones: they equal the one-process values for the same weights (a rank that logged only its
own shard's mean would differ). For translation, every rank's BLEU is computed from every
test sentence exactly once, and ``test/bleu`` is logged once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Run
from sacrebleu.metrics import BLEU

from conftest import CONFIGS, DEFAULTS, REPO
from reliability_support import CORPUS_SIZES, subprocess_env, tiny_translation_config, write_config, write_corpus
from skipln.cli import cli_main
from skipln.data.digits import DigitsDataModule

DDP = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# Validation and test sets of 225 images each: odd, so padding them for two processes would score one image twice.
RESNET = [
    f"--config={CONFIGS / 'quickstart' / 'resnet.yaml'}", "--model.init_args.net.init_args.depth=8",
    "--data.init_args.val_fraction=0.125", "--data.init_args.test_fraction=0.125",
]

pytestmark = pytest.mark.slow


def main_py(workdir: Path, *args: str) -> None:
    """``python main.py ARGS`` in ``workdir`` (Lightning starts the second rank as another such process)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args], cwd=workdir, env=subprocess_env(REPO / "tests"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:]


def only_run(workdir: Path) -> tuple[mlflow.MlflowClient, Run]:
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("skipln").experiment_id])
    return client, run


def history(client: mlflow.MlflowClient, run: Run, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.timestamp)]


def last_checkpoint(workdir: Path, run: Run) -> Path:
    return workdir / "mlruns" / run.info.experiment_id / run.info.run_id / "checkpoints" / "last.ckpt"


def one_process(subcommand: str, *args: str) -> dict[str, float]:
    """The metrics a one-process ``subcommand`` computes (in this process)."""
    cli = cli_main([subcommand, *args, *QUIET], default_config_files=[DEFAULTS])
    assert cli is not None
    return {key: float(value) for key, value in cli.trainer.callback_metrics.items()}


def test_classification_under_ddp_logs_the_metrics_of_the_whole_validation_and_test_sets(workdir: Path) -> None:
    digits = DigitsDataModule(val_fraction=0.125, test_fraction=0.125)
    digits.setup()
    assert len(digits.val_set) % 2 == 1 and len(digits.test_set) % 2 == 1
    main_py(workdir, "fit", *RESNET, *DDP, *QUIET, "--trainer.max_epochs=1", "--trainer.limit_train_batches=3")
    client, run = only_run(workdir)
    assert run.info.status == "FINISHED"
    checkpoint = f"--ckpt_path={last_checkpoint(workdir, run)}"
    main_py(workdir, "test", *RESNET, *DDP, *QUIET, checkpoint)

    # Logged by the two-process fit at its only validation (the weights of last.ckpt), and by the test.
    two = {key: history(client, run, key) for key in ("val/acc", "val/loss", "test/acc", "test/loss")}

    one = one_process("validate", *RESNET, checkpoint) | one_process("test", *RESNET, checkpoint)
    assert two["val/acc"] == [pytest.approx(one["val/acc"], abs=1e-6)]
    assert two["val/loss"] == [pytest.approx(one["val/loss"], rel=1e-5)]
    assert two["test/acc"] == [pytest.approx(one["test/acc"], abs=1e-6)]
    assert two["test/loss"] == [pytest.approx(one["test/loss"], rel=1e-5)]


def test_translation_under_ddp_scores_bleu_once_over_the_whole_test_set(workdir: Path) -> None:
    write_corpus(workdir / "corpus")
    config = f"--config={write_config(workdir / 'translation.yaml', tiny_translation_config('corpus'))}"
    main_py(workdir, "fit", config, *DDP, *QUIET, "--trainer.max_epochs=1", "--trainer.limit_train_batches=4")
    client, run = only_run(workdir)
    assert run.info.status == "FINISHED"
    checkpoint = f"--ckpt_path={last_checkpoint(workdir, run)}"
    probe = ["--trainer.callbacks+=reliability_support.BleuProbe", "--trainer.callbacks.output_dir=probe"]
    main_py(workdir, "test", config, *DDP, *QUIET, checkpoint, *probe)

    ranks = [json.loads((workdir / "probe" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    everything = list(range(CORPUS_SIZES["test"]))
    assert all(rank["world_size"] == 2 and rank["local"] for rank in ranks)  # both ranks decoded a share
    assert sorted(ranks[0]["local"] + ranks[1]["local"]) == everything  # each sentence on exactly one rank
    references = (workdir / "corpus" / "test.de").read_text(encoding="utf-8").splitlines()
    words = sum(BLEU(tokenize="13a").sentence_score("", [reference]).ref_len for reference in references)
    for rank in ranks:
        assert sorted(rank["scored"]) == everything  # BLEU's synced state: all sentences, none twice
        assert rank["reference_words"] == words  # ... with the statistics of each
    two = {key: history(client, run, key) for key in ("val/loss", "val/ppl", "test/loss", "test/bleu", "test/bleu_tok")}
    assert len(two["test/bleu"]) == 1  # logged once, not once per rank

    one = one_process("validate", config, checkpoint) | one_process("test", config, checkpoint)
    for key in ("val/loss", "val/ppl", "test/loss"):
        assert two[key] == [pytest.approx(one[key], rel=1e-5)], key
    for key in ("test/bleu", "test/bleu_tok"):
        assert two[key] == [pytest.approx(one[key], abs=1e-6)], key

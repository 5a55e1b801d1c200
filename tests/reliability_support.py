"""Helpers of the reliability tests (bad input, DDP, concurrent runs): tiny data, tiny configs, the store's runs.

The callback is named by ``class_path`` on the command line of real ``main.py`` processes, so it
lives in an importable module (the tests folder is put on their ``PYTHONPATH``).
"""

from __future__ import annotations

import gzip
import json
import os
import socket
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from torchmetrics.utilities import dim_zero_cat

from skipln.data.translation import embedded_corpus_dir

#: Sentence pairs per split of the tiny corpus.
CORPUS_SIZES = {"train": 300, "valid": 20, "test": 24}


def write_corpus(folder: Path, sizes: dict[str, int] = CORPUS_SIZES) -> Path:
    """A fairseq-layout English→German folder of real pairs taken from the embedded corpus."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in sizes.items():
        for lang in ("en", "de"):
            with gzip.open(embedded_corpus_dir() / f"{split}.{lang}.gz", "rt", encoding="utf-8") as handle:
                lines = handle.read().split("\n")[:count]
            (folder / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def tiny_translation_config(data_dir: Path | str) -> dict[str, Any]:
    """A 1+1-layer, d 16 Transformer on ``data_dir`` with a 200-piece vocabulary: seconds per run on a CPU."""
    return {
        "model": {
            "class_path": "skipln.tasks.translation.TranslationTask",
            "init_args": {
                "net": {
                    "class_path": "skipln.models.transformer.Transformer",
                    "init_args": {
                        "vocab_size": 200, "encoder_layers": 1, "decoder_layers": 1, "dim": 16, "ffn_dim": 32,
                        "heads": 2, "dropout": 0.0, "max_positions": 64,
                    },
                },
                "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 1.0e-3}},
                "beam_size": 2,
            },
        },
        "data": {
            "class_path": "skipln.data.translation.TranslationDataModule",
            "init_args": {
                "data_dir": str(data_dir), "src_lang": "en", "tgt_lang": "de", "vocab_size": 200,
                "max_tokens": 256, "max_positions": 64,
            },
        },
        "trainer": {"use_distributed_sampler": False},
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def store_runs(store: Path) -> list[Any]:
    """Every run of every experiment in the SQLite store at ``store`` (none when it does not exist)."""
    if not store.is_file():
        return []
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store}")
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def closed_port() -> int:
    """A local TCP port nothing listens on (it was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def subprocess_env(tests_dir: Path) -> dict[str, str]:
    """The environment of a ``main.py`` subprocess: one thread per process, the tests' modules importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tests_dir), env.get("PYTHONPATH")]))
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    return env


class BleuProbe(Callback):
    """Writes, per rank, which test sentences the task's BLEU scored: the ids its synced state holds.

    Run after the test epoch, on every rank: the state is gathered across processes as
    ``compute()`` gathers it, so each rank's file lists what the logged score was computed from.
    """

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metric = pl_module.test_bleu  # type: ignore[attr-defined]
        local = [int(i) for i in dim_zero_cat(metric.ids).tolist()] if metric.ids else []
        with metric.sync_context(should_sync=trainer.world_size > 1):
            scored = [int(i) for i in dim_zero_cat(metric.ids).tolist()] if len(metric.ids) else []
            # Column 1 of a sentence's statistics is its reference length, whatever the model output.
            reference_words = int(dim_zero_cat(metric.stats).reshape(len(scored), -1)[:, 1].sum()) if scored else 0
        self.output_dir.mkdir(parents=True, exist_ok=True)
        report = {"world_size": trainer.world_size, "local": local, "scored": scored, "reference_words": reference_words}
        (self.output_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))

"""Parallel text from a Hugging Face dataset: the Hub, local data files, or a ``save_to_disk`` folder.

:class:`HFTranslationDataModule` differs from :class:`~skipln.data.translation.TranslationDataModule`
only in where the text comes from. It loads each split with ``datasets.load_dataset(dataset,
dataset_config, split=…)`` (or ``datasets.load_from_disk`` for a folder written by
``save_to_disk``), takes the language pair from each row (``row["translation"]["de"]``, the
layout of the Hub's translation sets, or ``row["de"]`` with ``field: null``), and writes the
splits once as plain text in fairseq's layout (``{train,valid,test}.{src,tgt}``) in a cache
folder. From there on it *is* a TranslationDataModule on that folder: the same tokenizer
(trained on, and cached beside, those files), token-count batching, DDP sharding, predict
files and checkpointed vocabulary.

Writing text files once costs disk (WMT'14's 4.5M pairs: ~1.4 GB) and one pass over the data,
and buys what the folder pipeline already does well: streaming in chunks, a tokenizer cache
keyed by the files' bytes, and the same batches whichever way the text arrived.

``datasets`` is an optional dependency: ``pip install 'skipln[hf]'``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_info

from skipln.data.tokenizer import default_cache_dir
from skipln.data.translation import SPLITS, TranslationDataError, TranslationDataModule
from skipln.errors import ConfigError

#: The Hub's usual split names for our three splits.
DEFAULT_SPLITS: dict[str, str] = {"train": "train", "valid": "validation", "test": "test"}
#: Marks an exported folder as complete (written last).
_DONE = ".complete.json"
_BATCH = 10_000


def import_datasets() -> Any:
    """The ``datasets`` package, or a one-line error that says how to install it."""
    try:
        import datasets
    except ImportError as error:
        raise ConfigError(
            "HFTranslationDataModule needs the Hugging Face `datasets` package: pip install 'skipln[hf]' "
            "(or pip install 'datasets>=3')"
        ) from error
    return datasets


class HFTranslationDataModule(TranslationDataModule):
    """Sentence pairs from a Hugging Face dataset, served like a fairseq-layout folder.

    Args:
        dataset: a Hub id (``wmt/wmt14``), a builder for local files (``json``, ``csv``,
            ``parquet`` with ``data_files``), or a folder written by ``save_to_disk``.
        dataset_config: the Hub configuration (``de-en``); None for datasets that have one.
        data_files: local or remote files for a builder such as ``json``, e.g.
            ``{train: train.jsonl, validation: valid.jsonl, test: test.jsonl}``.
        revision: a Hub branch, tag or commit (pin one for reproducible runs; script-only
            Hub datasets load from their Parquet export with ``refs/convert/parquet``).
        splits: the dataset's split for each of ours, ``{train: …, valid: …, test: …}``.
        field: the column holding ``{lang: sentence}`` dicts; None when each language is a column.
        export_dir: where the text files go; default a folder under the skipln cache
            (``$SKIPLN_CACHE_DIR/datasets/``) named by the dataset and a hash of these settings.
        src_lang, tgt_lang, vocab_size, tokenizer_model, model_type, max_tokens, max_positions,
        num_workers, seed, predict_file: as in :class:`TranslationDataModule`.
        name: the data set's name in run names; default ``<dataset>_<src>_<tgt>``.
    """

    def __init__(
        self,
        dataset: str,
        dataset_config: str | None = None,
        data_files: str | list[str] | dict[str, str | list[str]] | None = None,
        revision: str | None = None,
        splits: dict[str, str] | None = None,
        field: str | None = "translation",
        export_dir: str | None = None,
        src_lang: str = "de",
        tgt_lang: str = "en",
        vocab_size: int = 8000,
        tokenizer_model: str | None = None,
        model_type: Literal["bpe", "unigram"] = "bpe",
        max_tokens: int = 4096,
        max_positions: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        predict_file: str | None = None,
        name: str | None = None,
    ) -> None:
        self.dataset, self.dataset_config, self.data_files, self.revision = dataset, dataset_config, data_files, revision
        self.splits = _check_splits(splits)
        self.field = field
        folder = Path(export_dir).expanduser() if export_dir else default_cache_dir() / "datasets" / self._folder_name(src_lang, tgt_lang)
        super().__init__(
            data_dir=str(folder),
            src_lang=src_lang,
            tgt_lang=tgt_lang,
            vocab_size=vocab_size,
            tokenizer_model=tokenizer_model,
            model_type=model_type,
            max_tokens=max_tokens,
            max_positions=max_positions,
            num_workers=num_workers,
            seed=seed,
            predict_file=predict_file,
            name=name or f"{_slug(dataset)}_{src_lang}_{tgt_lang}",
        )

    def _folder_name(self, src_lang: str, tgt_lang: str) -> str:
        """``<dataset>-<hash>``: the hash covers every setting that changes the text (and local files' dates)."""
        settings = {
            "dataset": self.dataset,
            "config": self.dataset_config,
            "data_files": self.data_files,
            "revision": self.revision,
            "splits": self.splits,
            "field": self.field,
            "langs": [src_lang, tgt_lang],
            "local": _local_fingerprint(self.dataset, self.data_files),
        }
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{_slug(self.dataset)}-{digest}"

    # -- the one thing that differs: where the files come from -----------------------------

    def files(self, split: str) -> tuple[Path, Path]:
        """The split's text files, written from the dataset first if they are not yet."""
        self.export()
        return super().files(split)

    def prepare_data(self) -> None:
        """Write the text files (once per node), then train the tokenizer as the folder module does."""
        self.export()
        super().prepare_data()

    def export(self) -> None:
        """Write ``{split}.{lang}`` for every split into ``data_dir``, unless a complete export is there."""
        if (self.data_dir / _DONE).is_file():
            return
        staging = self.data_dir.with_name(f".{self.data_dir.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
        staging.mkdir(parents=True)
        try:
            counts = {ours: self._write_split(theirs, staging, ours) for ours, theirs in self.splits.items()}
            (staging / _DONE).write_text(json.dumps({"dataset": self.dataset, "config": self.dataset_config, "pairs": counts}))
            try:
                staging.rename(self.data_dir)
            except OSError:
                if not (self.data_dir / _DONE).is_file():  # not another process that finished first
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        rank_zero_info(f"{self.name}: wrote {counts} pairs from {self.dataset} to {self.data_dir}")

    def _write_split(self, theirs: str, folder: Path, ours: str) -> int:
        pairs = 0
        with (folder / f"{ours}.{self.src_lang}").open("w", encoding="utf-8") as src, (folder / f"{ours}.{self.tgt_lang}").open(
            "w", encoding="utf-8"
        ) as tgt:
            for source, target in self._pairs(self._load(theirs), theirs):
                # A line break inside a sentence would shift every later line of one side.
                src.write(_one_line(source) + "\n")
                tgt.write(_one_line(target) + "\n")
                pairs += 1
        return pairs

    def _load(self, split: str) -> Any:
        datasets = import_datasets()
        local = Path(self.dataset).expanduser()
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise TranslationDataError(
                        f"the dataset saved in '{local}' has no split {split!r} (it has {', '.join(loaded)}): set "
                        f"data.init_args.splits, e.g. {{train: train, valid: validation, test: test}}"
                    )
                return loaded[split]
            return loaded
        try:
            return datasets.load_dataset(self.dataset, self.dataset_config, split=split, data_files=self.data_files, revision=self.revision)
        except (ValueError, OSError) as error:  # an unknown split or configuration (datasets names the valid ones), no such dataset, no network
            raise TranslationDataError(
                f"cannot load split {split!r} of {self.dataset!r} (config {self.dataset_config!r}): {error}. Check the name, "
                "configuration and splits on the dataset's Hub page and the network, or give a save_to_disk folder or data_files"
            ) from error

    def _pairs(self, table: Any, split: str) -> Iterator[tuple[str, str]]:
        columns = list(table.column_names)
        wanted = [self.field] if self.field else [self.src_lang, self.tgt_lang]
        absent = [c for c in wanted if c not in columns]
        if absent:
            raise TranslationDataError(
                f"split {split!r} of {self.dataset!r} has no column {absent[0]!r} (its columns: {', '.join(columns)}): set "
                "data.init_args.field to the column of {lang: sentence} dicts, or field: null with one column per language"
            )
        for batch in table.select_columns(wanted).iter(batch_size=_BATCH):
            rows = batch[self.field] if self.field else [{lang: text for lang, text in zip(wanted, pair)} for pair in zip(*batch.values())]
            for row in rows:
                yield self._side(row, self.src_lang, split), self._side(row, self.tgt_lang, split)

    def _side(self, row: Mapping[str, Any], lang: str, split: str) -> str:
        if lang not in row:
            raise TranslationDataError(
                f"split {split!r} of {self.dataset!r} has no language {lang!r} (a row has {', '.join(map(str, row))}): "
                "check src_lang and tgt_lang, and dataset_config (the language pair of Hub translation sets)"
            )
        return "" if row[lang] is None else str(row[lang])


def _check_splits(splits: Mapping[str, str] | None) -> dict[str, str]:
    chosen = dict(DEFAULT_SPLITS if splits is None else splits)
    if set(chosen) != set(SPLITS):
        raise ConfigError(f"splits must map exactly {', '.join(SPLITS)} to the dataset's split names, got {sorted(chosen)}")
    return chosen


def _local_fingerprint(dataset: str, data_files: Any) -> list[tuple[str, int, int]]:
    """Size and modification time of every local file the data comes from: a change makes a new export."""
    paths: list[Path] = []
    local = Path(dataset).expanduser()
    if local.is_dir():
        paths += sorted(p for p in local.rglob("*") if p.is_file())
    files = data_files.values() if isinstance(data_files, Mapping) else [data_files]
    for entry in files:
        for item in entry if isinstance(entry, list) else [entry]:
            if item is not None and Path(str(item)).expanduser().is_file():
                paths.append(Path(str(item)).expanduser())
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]


def _slug(dataset: str) -> str:
    """A short name for folders and runs: ``wmt/wmt14`` → ``wmt14``, ``/data/my_set/`` → ``my_set``."""
    return Path(dataset.rstrip("/")).name.replace(".", "_") or "hf"


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


__all__ = ["DEFAULT_SPLITS", "HFTranslationDataModule", "import_datasets"]

"""Parallel text for translation: files → subword ids → token-count batches.

:class:`TranslationDataModule` reads a folder in the layout fairseq's preparation scripts
write (``prepare-iwslt14.sh``, ``prepare-wmt14en2de.sh``): ``{split}.{lang}`` for the splits
``train``, ``valid`` and ``test``, one sentence per line, line ``i`` of the source file
translating line ``i`` of the target file (plain text or ``.gz``). Without a folder it uses
an English–German corpus embedded in the package (``embedded``: ``gettext_en_de``, 9,898 pairs of
software messages from Debian's German translation catalogs, or ``gettext_en_de_large``, 71,651
pairs from 72 packages; see docs/data.md). It trains (or loads) a
joint sentencepiece vocabulary on the training split, tokenizes each split once, keeps the ids
in memory and serves batches sized in tokens.

A batch is a dict (``B`` sentences, ``S``/``T`` the longest source/target in it, padded on the
right with ``tokenizer.pad_id``):

===================  =============  ==============================================
key                  type           content
===================  =============  ==============================================
src_tokens           Long[B, S]     source ids, each ending with </s>
src_lengths          Long[B]        non-pad length of each source row
prev_output_tokens   Long[B, T]     <s> + target ids (decoder input, teacher forcing)
target               Long[B, T]     target ids + </s> (what the decoder must predict)
ids                  Long[B]        line index of each pair in its split's files
ntokens              int            non-pad target tokens (for per-token loss)
===================  =============  ==============================================

Prediction batches (from ``predict_file``, one source sentence a line) hold only
``src_tokens``, ``src_lengths`` and ``ids``.

Lengths: a model sees ``len(source) + 1`` source positions and ``len(target) + 1`` target
positions (the </s> or <s> added). Training pairs where either exceeds ``max_positions`` are
dropped (and counted); validation and test pairs are never dropped, since BLEU needs every
reference: sides longer than ``max_positions`` are cut to fit it (and counted). Lines that are
empty on either side are dropped from training only.

Multi-process (DDP) runs need ``trainer.use_distributed_sampler: false``: the batches are
sharded by :class:`~skipln.data.batching.TokenBatchSampler` itself (each pair on exactly one
rank, every rank the same number of batches); see that module.
"""

from __future__ import annotations

import array
import gzip
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from skipln import compat
from skipln.data.batching import TokenBatchSampler
from skipln.data.resumable import ResumableDataLoader
from skipln.data.tokenizer import MODEL_TYPES, SentencePieceTokenizer, default_cache_dir
from skipln.errors import ConfigError, DataError

SPLITS: tuple[str, ...] = ("train", "valid", "test")
# Folder names that say nothing about the data set; run names use the parent's name instead.
_GENERIC_FOLDERS = frozenset({"tmp", "data", "raw", "prep", "orig", "text", "corpus"})
# The embedded corpora (folders under skipln/resources) and the data-set name run names show for each.
EMBEDDED_CORPORA: dict[str, str] = {"gettext_en_de": "gettext", "gettext_en_de_large": "gettext_large"}
EmbeddedCorpus = Literal["gettext_en_de", "gettext_en_de_large"]
DEFAULT_EMBEDDED: EmbeddedCorpus = "gettext_en_de"
EMBEDDED_LANGS: tuple[str, ...] = ("en", "de")
# Lines read and encoded at a time: bounds the Python strings and lists alive at once.
_CHUNK = 100_000


class TranslationDataError(DataError):
    """A translation data set is missing, incomplete or malformed (the message says how to fix it)."""


def _empty_split(src_path: Path, tgt_path: Path, split: str) -> TranslationDataError:
    return TranslationDataError(
        f"'{src_path}' and '{tgt_path}' are empty: the {split} split needs sentence pairs; fill them (one sentence "
        "per line, line i of one translating line i of the other) or point data_dir at a prepared corpus"
    )


def embedded_corpus_dir(corpus: str = DEFAULT_EMBEDDED) -> Path:
    """The folder of an embedded English–German corpus (see :data:`EMBEDDED_CORPORA`) inside the installed package."""
    if corpus not in EMBEDDED_CORPORA:
        raise ConfigError(f"unknown embedded corpus {corpus!r}: choose one of {', '.join(EMBEDDED_CORPORA)}")
    folder = resources.files("skipln") / "resources" / corpus
    if not isinstance(folder, Path):
        raise TranslationDataError(
            "the embedded corpus is only readable from an unpacked install of skipln (not from a zip): "
            "reinstall with pip, or pass data_dir"
        )
    return folder


# -- reading files --------------------------------------------------------------------------


def split_file(folder: Path, split: str, lang: str) -> Path | None:
    """``folder/{split}.{lang}`` or its ``.gz``; None if neither exists."""
    plain, packed = folder / f"{split}.{lang}", folder / f"{split}.{lang}.gz"
    if plain.is_file() and packed.is_file():
        raise TranslationDataError(f"both '{plain}' and '{packed}' exist: keep one of them so it is clear which to read")
    if plain.is_file():
        return plain
    return packed if packed.is_file() else None


def iter_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file (plain or gzip), without line ends, read as a stream.

    Lines end at ``\\n`` only (a trailing ``\\r`` is dropped): ``str.splitlines`` would also
    break at characters such as U+2028 and so misalign the two sides of a corpus.
    """
    try:
        handle = gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")
        with handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise TranslationDataError(
                        f"'{path}' line {number} is not UTF-8 ({error.reason} at column {error.start + 1}): convert "
                        "the file (e.g. `iconv -f latin1 -t utf-8`) or remove that line from both sides"
                    ) from error
                yield line.removesuffix("\n").removesuffix("\r")
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise TranslationDataError(
            f"cannot read '{path}': {error}. Check that it is a readable text file (a .gz must be a complete gzip file)"
        ) from error


def read_lines(path: Path) -> list[str]:
    """All lines of a plain or gzipped UTF-8 file (see :func:`iter_lines`)."""
    return list(iter_lines(path))


def iter_pairs(src_path: Path, tgt_path: Path, chunk: int) -> Iterator[tuple[list[str], list[str]]]:
    """The two files' lines side by side, ``chunk`` pairs at a time; an error if their counts differ."""
    sources, targets = iter_lines(src_path), iter_lines(tgt_path)
    done = 0
    while True:
        src_chunk = list(itertools.islice(sources, chunk))
        tgt_chunk = list(itertools.islice(targets, chunk))
        if len(src_chunk) != len(tgt_chunk):
            src_total = done + len(src_chunk) + sum(1 for _ in sources)
            tgt_total = done + len(tgt_chunk) + sum(1 for _ in targets)
            raise TranslationDataError(
                f"'{src_path}' has {src_total} lines but '{tgt_path}' has {tgt_total}: line i of one must "
                "translate line i of the other. Re-create both files from the same source."
            )
        if not src_chunk:
            return
        done += len(src_chunk)
        yield src_chunk, tgt_chunk


# -- tokenized splits -----------------------------------------------------------------------


@dataclass
class TokenizedText:
    """Many id sequences in one flat buffer: compact, and shared by forked workers as-is."""

    tokens: torch.Tensor  # int32, all sequences concatenated
    offsets: torch.Tensor  # int64, len + 1 boundaries

    @classmethod
    def from_lists(cls, sequences: Iterable[list[int]]) -> TokenizedText:
        builder = TokenizedTextBuilder()
        builder.extend(sequences)
        return builder.build()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def padded(self, rows: torch.Tensor, pad_id: int, prefix: int | None = None, suffix: int | None = None) -> torch.Tensor:
        """Sequences ``rows`` as a right-padded ``[B, longest + 1]`` LongTensor with ``prefix`` or ``suffix`` added.

        One gather over the flat buffer instead of a Python loop over sentences: building a
        batch costs microseconds, so the main process can feed a GPU without workers.
        """
        starts, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        width = int(lengths.max()) + 1 if len(rows) else 1
        shift = 0 if prefix is None else 1
        positions = torch.arange(width).unsqueeze(0) - shift  # position in the sentence of each column
        inside = (positions >= 0) & (positions < lengths.unsqueeze(1))
        gather = (starts.unsqueeze(1) + positions).clamp(0, max(len(self.tokens) - 1, 0))
        out = torch.full((len(rows), width), pad_id, dtype=torch.long)
        if len(self.tokens):
            out[inside] = self.tokens[gather[inside]].long()
        if prefix is not None:
            out[:, 0] = prefix
        if suffix is not None:
            out[torch.arange(len(rows)), lengths] = suffix
        return out


class TokenizedTextBuilder:
    """Collects id sequences at 4 bytes a token (Python lists of ints take ~8× more)."""

    def __init__(self) -> None:
        self._flat = array.array("i")
        self._offsets = array.array("q", [0])

    def extend(self, sequences: Iterable[list[int]]) -> None:
        for ids in sequences:
            self._flat.extend(ids)
            self._offsets.append(len(self._flat))

    def build(self) -> TokenizedText:
        return TokenizedText(_tensor(self._flat, torch.int32), _tensor(self._offsets, torch.int64))


def _tensor(values: array.array, dtype: torch.dtype) -> torch.Tensor:
    return torch.frombuffer(values, dtype=dtype).clone() if len(values) else torch.zeros(0, dtype=dtype)


class PairDataset(Dataset):
    """Tokenized sentence pairs (target optional, for prediction) that build whole batches.

    ``DataLoader`` hands a batch sampler's index lists to ``__getitems__``, which returns the
    finished batch dict (see the module's table); the loader's ``collate_fn`` then only passes
    it on (:func:`pass_batch`).
    """

    def __init__(self, source: TokenizedText, target: TokenizedText | None, ids: torch.Tensor, *, pad_id: int, bos_id: int, eos_id: int) -> None:
        self.source, self.target, self.ids = source, target, ids
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        rows = torch.as_tensor(indices, dtype=torch.long)
        batch: dict[str, Any] = {
            "src_tokens": self.source.padded(rows, self.pad_id, suffix=self.eos_id),
            "src_lengths": self.source.lengths()[rows] + 1,
            "ids": self.ids[rows],
        }
        if self.target is not None:
            batch["prev_output_tokens"] = self.target.padded(rows, self.pad_id, prefix=self.bos_id)
            batch["target"] = self.target.padded(rows, self.pad_id, suffix=self.eos_id)
            batch["ntokens"] = int((self.target.lengths()[rows] + 1).sum())
        return batch

    def lengths(self) -> torch.Tensor:
        """Positions each example takes in the model: the longer side, with </s> or <s>."""
        lengths = self.source.lengths() + 1
        if self.target is not None:
            lengths = torch.maximum(lengths, self.target.lengths() + 1)
        return lengths


def pass_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The ``collate_fn`` of batches that :meth:`PairDataset.__getitems__` already built."""
    return batch


# -- the data module ------------------------------------------------------------------------


class TranslationDataModule(LightningDataModule):
    """Sentence pairs from a fairseq-layout folder (or the embedded corpus) in token-count batches.

    Args:
        data_dir: a folder with ``{train,valid,test}.{src_lang,tgt_lang}`` (plain or ``.gz``);
            None uses the embedded English–German corpus named by ``embedded``.
        embedded: which embedded corpus a run without ``data_dir`` reads: ``gettext_en_de``
            (the quickstart's 9,898 pairs) or ``gettext_en_de_large`` (71,651 pairs, for
            deeper models).
        src_lang: the source language code, as in the file names.
        tgt_lang: the target language code.
        vocab_size: the size of the joint sentencepiece vocabulary trained on the training
            split (ignored when ``tokenizer_model`` is given). A trained model has exactly
            this many pieces, or, for a corpus too small for it, the most the corpus yields
            (with a warning). The CLI sets the model's ``vocab_size`` from the data module's.
        tokenizer_model: a sentencepiece ``.model`` file to use instead of training one.
        model_type: ``bpe`` or ``unigram``.
        max_tokens: the budget of one batch, ``sentences × longest`` (fairseq's
            ``--max-tokens``; per process under DDP).
        max_positions: the most positions a sentence may take in the model, </s> or <s>
            included (see the module's docstring for what happens to longer ones).
        num_workers: DataLoader worker processes (batches are cheap to build; 0 is fine).
        seed: the seed of the batch order (each epoch reshuffles with ``seed + epoch``); the
            vocabulary does not depend on it.
        predict_file: a text file of source sentences for ``predict``.
        name: the data set's name in run names; default ``gettext_<src>_<tgt>`` for the
            embedded corpus (``gettext_large_<src>_<tgt>`` for the large one), ``<folder name>_<src>_<tgt>`` otherwise (a generic folder name
            such as ``tmp`` or ``data`` gives way to its parent's).

    Where the tokenizer is cached: for a user folder, in that folder if it is writable,
    else in the user cache; for the embedded corpus, in the user cache
    (``$SKIPLN_CACHE_DIR``, ``$XDG_CACHE_HOME/skipln`` or ``~/.cache/skipln``, under
    ``tokenizers/``). Never inside the installed package.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        embedded: EmbeddedCorpus = DEFAULT_EMBEDDED,
        src_lang: str = "en",
        tgt_lang: str = "de",
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
        super().__init__()
        self.save_hyperparameters(logger=False)
        _check_settings(src_lang, tgt_lang, vocab_size, model_type, max_tokens, max_positions, num_workers)
        self.embedded = data_dir is None
        if not self.embedded and embedded != DEFAULT_EMBEDDED:
            raise ConfigError(
                f"data_dir={data_dir!r} and embedded={embedded!r} both name a corpus: unset data_dir to train on the "
                "embedded corpus, or leave embedded at its default to read data_dir"
            )
        if self.embedded and {src_lang, tgt_lang} != set(EMBEDDED_LANGS):
            raise ConfigError(
                f"the embedded corpus is English–German: src_lang/tgt_lang must be 'en' and 'de' (either way round), "
                f"got {src_lang!r} → {tgt_lang!r}. For other languages pass data_dir (see docs/data.md)."
            )
        self.data_dir = embedded_corpus_dir(embedded) if self.embedded else Path(data_dir).expanduser()
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.requested_vocab_size = vocab_size
        self.tokenizer_model = tokenizer_model
        self.model_type = model_type
        self.max_tokens = max_tokens
        self.max_positions = max_positions
        self.num_workers = num_workers
        self.seed = seed
        self.predict_file = predict_file
        folder = EMBEDDED_CORPORA[embedded] if self.embedded else _folder_name(self.data_dir)
        self._name = name or f"{folder}_{src_lang}_{tgt_lang}"
        self._tokenizer: SentencePieceTokenizer | None = None
        self._datasets: dict[str, PairDataset] = {}
        self._raw: dict[str, tuple[list[str], list[str] | None]] = {}
        # Per split: pairs kept, dropped (too long / an empty side), truncated; filled by setup.
        self.stats: dict[str, dict[str, int]] = {}

    @property
    def name(self) -> str:
        """The data set's name, as run names show it (e.g. ``gettext_en_de``)."""
        return self._name

    # -- files ------------------------------------------------------------------------------

    def files(self, split: str) -> tuple[Path, Path]:
        """The (source, target) files of ``split``; a clear error if the folder or a file is missing."""
        if not self.data_dir.is_dir():
            raise TranslationDataError(
                f"data_dir '{self.data_dir}' does not exist or is not a folder: it should hold "
                f"{_expected_names(self.src_lang, self.tgt_lang)} (plain text or .gz, fairseq's layout; "
                "see docs/data.md), or leave data_dir unset for the embedded English–German corpus"
            )
        found = {lang: split_file(self.data_dir, split, lang) for lang in (self.src_lang, self.tgt_lang)}
        missing = [f"{split}.{lang}" for lang, path in found.items() if path is None]
        if missing:
            present = sorted(p.name for p in self.data_dir.iterdir() if not p.name.startswith("."))
            if len(present) > 20:
                present = present[:20] + [f"… ({len(present) - 20} more)"]
            raise TranslationDataError(
                f"missing {' and '.join(missing)} (or .gz) in '{self.data_dir}'. Expected "
                f"{_expected_names(self.src_lang, self.tgt_lang)}; the folder has: {', '.join(present) or 'nothing'}. "
                f"Check data_dir and the language codes src_lang={self.src_lang!r}, tgt_lang={self.tgt_lang!r}."
            )
        return found[self.src_lang], found[self.tgt_lang]  # type: ignore[return-value]

    def _read_pairs(self, split: str) -> tuple[list[str], list[str]]:
        """All pairs of a split as raw text (validation and test: they are small and scored as text)."""
        src_path, tgt_path = self.files(split)
        sources: list[str] = []
        targets: list[str] = []
        for src_chunk, tgt_chunk in iter_pairs(src_path, tgt_path, _CHUNK):
            sources += src_chunk
            targets += tgt_chunk
        if not sources:
            raise _empty_split(src_path, tgt_path, split)
        return sources, targets

    def _check_pairs(self, split: str) -> None:
        """Read a split once to report what is wrong with it (counts, encoding, emptiness) before any work."""
        src_path, tgt_path = self.files(split)
        if not any(True for _ in iter_pairs(src_path, tgt_path, _CHUNK)):
            raise _empty_split(src_path, tgt_path, split)

    def _read_predict(self) -> list[str]:
        if self.predict_file is None:
            raise ConfigError("predict needs sentences to translate: set data.init_args.predict_file (one source sentence per line)")
        path = Path(self.predict_file).expanduser()
        if not path.is_file():
            raise TranslationDataError(
                f"predict_file '{path}' does not exist (resolved from {os.getcwd()}): give a text file with one "
                "source sentence per line"
            )
        lines = read_lines(path)
        if not lines:
            raise TranslationDataError(f"predict_file '{path}' is empty: give at least one source sentence")
        return lines

    # -- tokenizer --------------------------------------------------------------------------

    @property
    def tokenizer(self) -> SentencePieceTokenizer:
        """The joint subword tokenizer: loaded from ``tokenizer_model``, or trained on first use and cached."""
        if self._tokenizer is None:
            if self.tokenizer_model is not None:
                self._tokenizer = SentencePieceTokenizer(self.tokenizer_model)
            else:
                self._check_pairs("train")
                self._tokenizer = SentencePieceTokenizer.train_or_load(
                    self.files("train"),
                    vocab_size=self.requested_vocab_size,
                    model_type=self.model_type,
                    cache_dir=self._tokenizer_cache_dir(),
                    shrink_to_fit=True,
                )  # not seeded by `seed`: runs that differ only in their seed share one vocabulary
            rank_zero_info(f"{self.name}: tokenizer {self._tokenizer}")
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """The tokenizer's size, which the CLI links into the model: ``vocab_size`` as asked, or less
        for a corpus too small for it (trained, or loaded, on first use)."""
        return len(self.tokenizer)

    def _tokenizer_cache_dir(self) -> Path:
        if not self.embedded and os.access(self.data_dir, os.W_OK):
            return self.data_dir
        return default_cache_dir() / "tokenizers"

    # -- Lightning hooks --------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Check the training files and train the tokenizer (once per node, before ``setup``)."""
        _ = self.tokenizer

    def setup(self, stage: str | None = None) -> None:
        """Tokenize the splits the stage needs: fit → train, valid; validate → valid; test → test; predict."""
        wanted = {
            "fit": ("train", "valid"),
            "validate": ("valid",),
            "test": ("test",),
            "predict": ("predict",),
            None: SPLITS + (("predict",) if self.predict_file else ()),
        }
        if stage not in wanted:
            raise ConfigError(f"unknown stage {stage!r}: expected one of fit, validate, test, predict")
        for split in wanted[stage]:
            if split not in self._datasets:
                self._datasets[split] = self._build(split)

    def _build(self, split: str) -> PairDataset:
        if split == "predict":
            return self._build_predict()
        if split == "train":
            return self._build_train()
        tokenizer = self.tokenizer
        sources, targets = self._read_pairs(split)
        self._raw[split] = (sources, targets)
        src_ids, tgt_ids = _encode(tokenizer, sources), _encode(tokenizer, targets)
        truncated = _truncate(src_ids, self.max_positions - 1) + _truncate(tgt_ids, self.max_positions - 1)
        self.stats[split] = {"pairs": len(sources), "dropped_too_long": 0, "dropped_empty": 0, "truncated": truncated}
        rank_zero_info(f"{self.name} {split}: {len(sources)} pairs; {truncated} sides cut to max_positions={self.max_positions}")
        return self._dataset(TokenizedText.from_lists(src_ids), TokenizedText.from_lists(tgt_ids), torch.arange(len(sources)))

    def _build_train(self) -> PairDataset:
        """Stream the training files chunk by chunk: only the ids of kept pairs stay in memory."""
        tokenizer = self.tokenizer
        src_path, tgt_path = self.files("train")
        limit = self.max_positions - 1  # the </s> or <s> takes the last position
        src_text, tgt_text = TokenizedTextBuilder(), TokenizedTextBuilder()
        ids = array.array("q")
        total = too_long = empty = 0
        for src_chunk, tgt_chunk in iter_pairs(src_path, tgt_path, _CHUNK):
            src_ids, tgt_ids = tokenizer.encode_batch(src_chunk), tokenizer.encode_batch(tgt_chunk)
            keep = []
            for offset, (src, tgt) in enumerate(zip(src_ids, tgt_ids)):
                if not src or not tgt:
                    empty += 1
                elif len(src) > limit or len(tgt) > limit:
                    too_long += 1
                else:
                    keep.append(offset)
            src_text.extend(src_ids[i] for i in keep)
            tgt_text.extend(tgt_ids[i] for i in keep)
            ids.extend(total + i for i in keep)
            total += len(src_chunk)
        if total == 0:
            raise _empty_split(src_path, tgt_path, "train")
        if not ids:
            raise TranslationDataError(
                f"every training pair of '{src_path}' / '{tgt_path}' was dropped ({too_long} longer than "
                f"max_positions={self.max_positions}, {empty} with an empty side): raise max_positions"
            )
        self.stats["train"] = {"pairs": len(ids), "dropped_too_long": too_long, "dropped_empty": empty, "truncated": 0}
        rank_zero_info(
            f"{self.name} train: {len(ids)} of {total} pairs; dropped {too_long} longer than "
            f"max_positions={self.max_positions} and {empty} with an empty side"
        )
        return self._dataset(src_text.build(), tgt_text.build(), _tensor(ids, torch.int64))

    def _build_predict(self) -> PairDataset:
        sources = self._read_predict()
        self._raw["predict"] = (sources, None)
        src_ids = _encode(self.tokenizer, sources)
        truncated = _truncate(src_ids, self.max_positions - 1)
        self.stats["predict"] = {"pairs": len(sources), "truncated": truncated}
        rank_zero_info(f"{self.name} predict: {len(sources)} sentences; {truncated} cut to max_positions={self.max_positions}")
        return self._dataset(TokenizedText.from_lists(src_ids), None, torch.arange(len(sources)))

    def _dataset(self, source: TokenizedText, target: TokenizedText | None, ids: torch.Tensor) -> PairDataset:
        tok = self.tokenizer
        return PairDataset(source, target, ids, pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self._datasets:
            self.setup({"train": "fit", "valid": "validate"}.get(split, split))
        self._check_distributed_sampler()
        dataset = self._datasets[split]
        world = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (None, None)
        sampler = TokenBatchSampler(
            dataset.lengths(), self.max_tokens, shuffle=shuffle, seed=self.seed, num_replicas=world[0], rank=world[1]
        )
        # The training loader remembers its place in the epoch, so a mid-epoch resume continues it exactly.
        loader_class = ResumableDataLoader if split == "train" else DataLoader
        return loader_class(
            dataset,
            batch_sampler=sampler,
            collate_fn=pass_batch,
            num_workers=self.num_workers,
            pin_memory=self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator),
            persistent_workers=self.num_workers > 0,
        )

    def _check_distributed_sampler(self) -> None:
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return
        if compat.uses_distributed_sampler(trainer):
            raise ConfigError(
                "TranslationDataModule shards its token-count batches across processes itself: set "
                "trainer.use_distributed_sampler: false (Trainer(use_distributed_sampler=False)) for multi-process runs"
            )

    # -- raw text for scoring ---------------------------------------------------------------

    def references(self, split: str) -> list[str]:
        """The raw target sentences of ``split`` (``valid`` or ``test``), indexed by the batches' ``ids``."""
        return self._raw_side(split, target=True)

    def sources(self, split: str) -> list[str]:
        """The raw source sentences of ``split`` (``valid``, ``test`` or ``predict``), indexed by ``ids``."""
        return self._raw_side(split, target=False)

    def _raw_side(self, split: str, target: bool) -> list[str]:
        allowed = ("train", "valid", "test") if target else ("train", "valid", "test", "predict")
        if split not in allowed:
            raise ValueError(f"split must be one of {allowed}, got {split!r}")
        if split not in self._raw:
            self._raw[split] = (self._read_predict(), None) if split == "predict" else self._read_pairs(split)
        sources, targets = self._raw[split]
        return list(targets if target else sources)  # type: ignore[arg-type]

    # -- checkpoints: the vocabulary travels with the weights -------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The tokenizer model, so a checkpoint is decoded with the vocabulary it was trained with."""
        return {"tokenizer": self.tokenizer.serialized} if self._tokenizer is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Adopt the checkpoint's tokenizer; splits already tokenized with another are tokenized again."""
        serialized = state_dict.get("tokenizer")
        if serialized is None or (self._tokenizer is not None and self._tokenizer.serialized == serialized):
            return
        self._tokenizer = SentencePieceTokenizer.from_bytes(serialized, origin="checkpoint")
        rank_zero_info(f"{self.name}: using the checkpoint's tokenizer {self._tokenizer}")
        rebuilt = list(self._datasets)
        self._datasets.clear()
        for split in rebuilt:
            self._datasets[split] = self._build(split)


def _check_settings(
    src_lang: str, tgt_lang: str, vocab_size: int, model_type: str, max_tokens: int, max_positions: int, num_workers: int
) -> None:
    if not src_lang or not tgt_lang or src_lang == tgt_lang:
        raise ConfigError(f"src_lang and tgt_lang must be two different language codes, got {src_lang!r} and {tgt_lang!r}")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    if vocab_size < 5:
        raise ConfigError(f"vocab_size must be at least 5 (4 special pieces and one more), got {vocab_size}")
    if max_positions < 2:
        raise ConfigError(f"max_positions must be at least 2 (one token and </s>), got {max_positions}")
    if max_tokens < max_positions:
        raise ConfigError(
            f"max_tokens={max_tokens} is smaller than max_positions={max_positions}: a batch could not hold one "
            "training pair of the longest allowed length. Raise max_tokens or lower max_positions."
        )
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")


def _folder_name(folder: Path) -> str:
    """The folder's name for run names, skipping generic ones (``…/iwslt14.tokenized.de-en/tmp`` → the former)."""
    for part in reversed(folder.resolve().parts[1:]):
        if part.lower() not in _GENERIC_FOLDERS:
            return part
    return "data"


def _expected_names(src: str, tgt: str) -> str:
    return ", ".join(f"{split}.{lang}" for split in SPLITS for lang in (src, tgt))


def _encode(tokenizer: SentencePieceTokenizer, lines: list[str]) -> list[list[int]]:
    ids: list[list[int]] = []
    for start in range(0, len(lines), _CHUNK):
        ids.extend(tokenizer.encode_batch(lines[start : start + _CHUNK]))
    return ids


def _truncate(sequences: list[list[int]], limit: int) -> int:
    """Cut every sequence to ``limit`` ids in place; the number cut."""
    cut = 0
    for i, ids in enumerate(sequences):
        if len(ids) > limit:
            sequences[i] = ids[:limit]
            cut += 1
    return cut

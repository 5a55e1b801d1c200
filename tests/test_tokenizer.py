"""SentencePieceTokenizer: a joint subword vocabulary with fixed special ids, cached safely."""

from __future__ import annotations

import gzip
import io
import pickle
import unicodedata
from importlib import resources
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from skipln.data import tokenizer as tokenizer_module
from skipln.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    SentencePieceTokenizer,
    TokenizerError,
    cache_name,
    default_cache_dir,
)


CORPUS = Path(str(resources.files("skipln") / "resources" / "gettext_en_de"))


def corpus_lines(split: str, lang: str, count: int | None = None) -> list[str]:
    with gzip.open(CORPUS / f"{split}.{lang}.gz", "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    return lines[:count]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two sides of 1,500 real pairs, one plain and one gzipped."""
    folder = tmp_path_factory.mktemp("corpus")
    en, de = folder / "train.en", folder / "train.de.gz"
    en.write_text("\n".join(corpus_lines("train", "en", 1500)) + "\n", encoding="utf-8")
    with gzip.open(de, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(corpus_lines("train", "de", 1500)) + "\n")
    return [en, de]


@pytest.fixture(scope="module")
def tok(small_corpus: list[Path], tmp_path_factory: pytest.TempPathFactory) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train_or_load(small_corpus, vocab_size=600, cache_dir=tmp_path_factory.mktemp("cache"))


def test_special_ids_are_pad_0_bos_1_eos_2_unk_3(tok: SentencePieceTokenizer) -> None:
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)


def test_vocabulary_has_exactly_vocab_size_pieces(tok: SentencePieceTokenizer) -> None:
    assert len(tok) == 600


def test_vocabulary_is_joint_over_both_languages(tok: SentencePieceTokenizer) -> None:
    # Frequent words of either language are single pieces of the one vocabulary.
    for word in ("file", "not", "Datei", "nicht"):
        assert len(tok.encode(word)) == 1, word


def test_encode_adds_no_special_ids(tok: SentencePieceTokenizer) -> None:
    ids = tok.encode("cannot open file")
    assert ids and not {tok.pad_id, tok.bos_id, tok.eos_id} & set(ids)


def test_decode_of_encode_gives_the_text_back_up_to_nfkc(tok: SentencePieceTokenizer) -> None:
    # sentencepiece normalises with NFKC (e.g. "…" → "..."); everything else comes back as written.
    for line in corpus_lines("valid", "en") + corpus_lines("valid", "de"):
        assert tok.decode(tok.encode(line)) == unicodedata.normalize("NFKC", line)


def test_decode_stops_at_eos_and_skips_pad_and_bos(tok: SentencePieceTokenizer) -> None:
    ids = tok.encode("Datei nicht gefunden")
    row = [tok.bos_id, *ids, tok.eos_id, *tok.encode("noise"), tok.pad_id]
    assert tok.decode(row) == "Datei nicht gefunden"
    assert tok.decode(torch.tensor(row)) == "Datei nicht gefunden"
    assert tok.decode_batch(torch.tensor([row, row])) == ["Datei nicht gefunden"] * 2


def test_encode_batch_equals_encode_one_by_one(tok: SentencePieceTokenizer) -> None:
    lines = corpus_lines("test", "de", 50)
    assert tok.encode_batch(lines) == [tok.encode(line) for line in lines]


def test_a_character_never_seen_encodes_as_unk(tok: SentencePieceTokenizer) -> None:
    assert tok.unk_id in tok.encode("☃")


def test_a_second_call_loads_the_cached_model_instead_of_training(small_corpus: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = SentencePieceTokenizer.train_or_load(small_corpus, vocab_size=300, cache_dir=tmp_path)
    monkeypatch.setattr(tokenizer_module, "_train", lambda *a, **k: pytest.fail("trained again despite a cached model"))
    second = SentencePieceTokenizer.train_or_load(small_corpus, vocab_size=300, cache_dir=tmp_path)
    assert second.model_file == first.model_file and second.serialized == first.serialized


def test_cache_key_covers_settings_and_file_contents(small_corpus: list[Path], tmp_path: Path) -> None:
    def name(files: list[Path], **settings: object) -> str:
        return cache_name(files, **{"vocab_size": 300, "model_type": "bpe", **settings})  # type: ignore[arg-type]

    edited = tmp_path / "train.en"
    edited.write_text(small_corpus[0].read_text(encoding="utf-8") + "one more line\n", encoding="utf-8")
    names = [
        name(small_corpus),
        name(small_corpus, vocab_size=320),
        name(small_corpus, model_type="unigram"),
        name([edited, small_corpus[1]]),
    ]
    assert len(set(names)) == 4
    assert name(list(reversed(small_corpus))) == names[0]  # the order the sides are given in does not matter
    assert names[0].startswith("spm-bpe300-") and names[0].endswith(".model")


def test_training_is_deterministic(small_corpus: list[Path], tmp_path: Path) -> None:
    first = SentencePieceTokenizer.train_or_load(small_corpus, vocab_size=300, cache_dir=tmp_path / "a")
    second = SentencePieceTokenizer.train_or_load(small_corpus, vocab_size=300, cache_dir=tmp_path / "b")
    assert first.serialized == second.serialized


def test_publishing_leaves_no_temporary_file_and_the_first_writer_wins(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "model.model"
    tokenizer_module._publish(b"first", target)  # noqa: SLF001
    tokenizer_module._publish(b"second", target)  # noqa: SLF001
    assert target.read_bytes() == b"first"
    assert [p.name for p in target.parent.iterdir()] == ["model.model"]


def test_unigram_model_type_trains(tmp_path: Path) -> None:
    text = tmp_path / "train.de"
    text.write_text("\n".join(corpus_lines("train", "de", 400)) + "\n", encoding="utf-8")
    tok = SentencePieceTokenizer.train_or_load([text], vocab_size=300, model_type="unigram", cache_dir=tmp_path)
    assert len(tok) == 300 and tok.decode(tok.encode("Datei nicht gefunden")) == "Datei nicht gefunden"


def test_a_given_model_file_is_loaded_as_is(tok: SentencePieceTokenizer) -> None:
    loaded = SentencePieceTokenizer(tok.model_file)
    assert loaded.serialized == tok.serialized and loaded.encode("file") == tok.encode("file")


def test_pickling_keeps_the_vocabulary(tok: SentencePieceTokenizer) -> None:
    copy = pickle.loads(pickle.dumps(tok))
    assert copy.encode("Datei nicht gefunden") == tok.encode("Datei nicht gefunden") and len(copy) == len(tok)


def test_too_large_vocab_size_says_which_size_fits_and_that_size_works(small_corpus: list[Path], tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello world\nfile not found\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"vocab_size=500 is too large .*tiny\.txt.* Set vocab_size to (\d+) or less") as info:
        SentencePieceTokenizer.train_or_load([tiny], vocab_size=500, cache_dir=tmp_path)
    fits = int(info.value.args[0].split("Set vocab_size to ")[1].split()[0])
    assert len(SentencePieceTokenizer.train_or_load([tiny], vocab_size=fits, cache_dir=tmp_path)) == fits


def test_shrink_to_fit_trains_the_largest_vocabulary_a_small_text_yields_and_warns(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello world\nfile not found\n", encoding="utf-8")
    with pytest.raises(TokenizerError) as info:
        SentencePieceTokenizer.train_or_load([tiny], vocab_size=500, cache_dir=tmp_path / "strict")
    fits = int(info.value.args[0].split("Set vocab_size to ")[1].split()[0])
    with pytest.warns(UserWarning, match=rf"vocab_size=500 is more than the training text yields .*the largest vocabulary it supports, {fits} pieces"):
        shrunk = SentencePieceTokenizer.train_or_load([tiny], vocab_size=500, cache_dir=tmp_path, shrink_to_fit=True)
    assert len(shrunk) == fits
    # The next run asking for 500 finds the same vocabulary in the cache, without training.
    assert len(SentencePieceTokenizer.train_or_load([tiny], vocab_size=500, cache_dir=tmp_path)) == fits


def test_too_small_vocab_size_says_the_minimum(small_corpus: list[Path], tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=r"vocab_size=10 is too small .* at least \d+"):
        SentencePieceTokenizer.train_or_load(small_corpus, vocab_size=10, cache_dir=tmp_path)


def test_training_on_empty_files_is_an_error_naming_them(tmp_path: Path) -> None:
    empty = tmp_path / "train.en"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"no non-blank line in .*train\.en"):
        SentencePieceTokenizer.train_or_load([empty], vocab_size=100, cache_dir=tmp_path)


def test_a_missing_model_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=r"nope\.model' does not exist"):
        SentencePieceTokenizer(tmp_path / "nope.model")


def test_a_file_that_is_no_sentencepiece_model_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "vocab.model"
    path.write_text("the\t0\nof\t1\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"vocab\.model' is not a sentencepiece model"):
        SentencePieceTokenizer(path)


def test_a_model_without_a_pad_piece_is_rejected_with_the_fix(small_corpus: list[Path], tmp_path: Path) -> None:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines("train", "en", 300)), model_writer=model, vocab_size=200, minloglevel=2
    )  # sentencepiece's defaults: no pad piece
    path = tmp_path / "default.model"
    path.write_bytes(model.getvalue())
    with pytest.raises(TokenizerError, match=r"has no pad piece: train it with --pad_id=0"):
        SentencePieceTokenizer(path)


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SKIPLN_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("SKIPLN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "skipln"

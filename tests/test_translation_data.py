"""TranslationDataModule: the embedded corpus, fairseq-layout folders, batches, and clear errors."""

from __future__ import annotations

import gzip
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from skipln.data.tokenizer import SentencePieceTokenizer
from skipln.data.translation import TranslationDataError, TranslationDataModule, embedded_corpus_dir
from skipln.errors import ConfigError, DataError
from skipln_test_support import script_module

# The sizes docs/data.md and MANIFEST state for the embedded corpus.
EMBEDDED_SIZES = {"train": 9183, "valid": 358, "test": 357}


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tokenizers of the embedded corpus go to a temporary cache, never to ~/.cache."""
    monkeypatch.setenv("SKIPLN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "skipln-cache"))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TranslationDataModule]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKIPLN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "skipln-cache"))
        dm = TranslationDataModule(vocab_size=2000, max_tokens=1024)
        dm.prepare_data()
        dm.setup()
        yield dm


def embedded_lines(split: str, lang: str, count: int) -> list[str]:
    with gzip.open(embedded_corpus_dir() / f"{split}.{lang}.gz", "rt", encoding="utf-8") as handle:
        return handle.read().split("\n")[:count]


def write_corpus(folder: Path, src: str = "de", tgt: str = "en", sizes: dict[str, int] | None = None, gz: bool = False) -> Path:
    """A folder in fairseq's layout, with real pairs taken from the embedded corpus."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (sizes or {"train": 800, "valid": 40, "test": 30}).items():
        for lang in (src, tgt):
            text = "\n".join(embedded_lines(split, {src: "de", tgt: "en"}[lang], count)) + "\n"
            if gz:
                with gzip.open(folder / f"{split}.{lang}.gz", "wt", encoding="utf-8") as handle:
                    handle.write(text)
            else:
                (folder / f"{split}.{lang}").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "iwslt_like")


def small_dm(data_dir: Path, **kwargs: object) -> TranslationDataModule:
    settings: dict[str, object] = {"src_lang": "de", "tgt_lang": "en", "vocab_size": 300, "max_tokens": 512}
    settings.update(kwargs)
    return TranslationDataModule(data_dir=str(data_dir), **settings)  # type: ignore[arg-type]


# -- the embedded corpus --------------------------------------------------------------------


def test_embedded_corpus_has_the_documented_sizes(embedded: TranslationDataModule) -> None:
    assert {split: embedded.stats[split]["pairs"] for split in EMBEDDED_SIZES} == EMBEDDED_SIZES
    assert embedded.stats["train"]["dropped_too_long"] == embedded.stats["train"]["dropped_empty"] == 0


def test_embedded_manifest_counts_match_the_files() -> None:
    manifest = (embedded_corpus_dir() / "MANIFEST").read_text(encoding="utf-8")
    for split, size in EMBEDDED_SIZES.items():
        assert re.search(rf"^{split} {size} ", manifest, re.MULTILINE)
        for lang in ("en", "de"):
            assert len(embedded_lines(split, lang, size + 10)) == size + 1  # size lines and the final newline
    assert "GPL" in (embedded_corpus_dir() / "NOTICE").read_text(encoding="utf-8")


def test_embedded_corpus_is_named_after_corpus_and_direction() -> None:
    assert TranslationDataModule().name == "gettext_en_de"
    assert TranslationDataModule(src_lang="de", tgt_lang="en").name == "gettext_de_en"
    assert TranslationDataModule(name="mine").name == "mine"


def test_embedded_tokenizer_is_cached_in_the_user_cache_not_the_package(embedded: TranslationDataModule, tmp_path_factory: pytest.TempPathFactory) -> None:
    model_file = embedded.tokenizer.model_file
    assert model_file.parent == tmp_path_factory.getbasetemp() / "skipln-cache" / "tokenizers"
    assert not any(p.suffix == ".model" for p in embedded_corpus_dir().iterdir())


def test_splits_of_the_embedded_corpus_share_no_english_sentence() -> None:
    english = {split: set(embedded_lines(split, "en", EMBEDDED_SIZES[split])) for split in EMBEDDED_SIZES}
    assert not english["train"] & english["valid"] and not english["train"] & english["test"]
    assert not english["valid"] & english["test"]


# -- batches --------------------------------------------------------------------------------


def test_batches_have_the_documented_layout(embedded: TranslationDataModule) -> None:
    tok = embedded.tokenizer
    batch = next(iter(embedded.val_dataloader()))
    assert set(batch) == {"src_tokens", "src_lengths", "prev_output_tokens", "target", "ids", "ntokens"}
    src, prev, target = batch["src_tokens"], batch["prev_output_tokens"], batch["target"]
    assert src.dtype == prev.dtype == target.dtype == batch["ids"].dtype == torch.long
    assert prev.shape == target.shape and src.shape[0] == target.shape[0] == len(batch["ids"])
    for row in range(src.shape[0]):
        n = int(batch["src_lengths"][row])
        assert src[row, n - 1] == tok.eos_id and (src[row, n:] == tok.pad_id).all() and (src[row, : n - 1] > 3).all()
        t = int((target[row] != tok.pad_id).sum())
        assert target[row, t - 1] == tok.eos_id and prev[row, 0] == tok.bos_id
        assert torch.equal(prev[row, 1:t], target[row, : t - 1])  # the decoder input is the target shifted right
        assert (prev[row, t:] == tok.pad_id).all() and (target[row, t:] == tok.pad_id).all()
    assert batch["ntokens"] == int((target != tok.pad_id).sum())


def test_ids_index_the_raw_sentences_of_the_split(embedded: TranslationDataModule) -> None:
    tok = embedded.tokenizer
    sources, references = embedded.sources("valid"), embedded.references("valid")
    for batch in embedded.val_dataloader():
        for row, i in enumerate(batch["ids"].tolist()):
            assert tok.decode(batch["src_tokens"][row]) == sources[i].replace("…", "...")
            assert tok.decode(batch["target"][row]) == references[i].replace("…", "...")


def test_batches_respect_max_tokens_with_padding_counted(embedded: TranslationDataModule) -> None:
    for loader in (embedded.train_dataloader(), embedded.val_dataloader(), embedded.test_dataloader()):
        for batch in loader:
            assert batch["src_tokens"].numel() <= 1024 and batch["target"].numel() <= 1024


def test_every_training_pair_appears_once_per_epoch(embedded: TranslationDataModule) -> None:
    loader = embedded.train_dataloader()
    orders = []
    for epoch in (0, 1):
        loader.batch_sampler.set_epoch(epoch)
        ids = [i for batch in loader for i in batch["ids"].tolist()]
        assert sorted(ids) == list(range(EMBEDDED_SIZES["train"]))
        orders.append(ids)
    assert orders[0] != orders[1]


def test_two_ranks_get_equal_batch_counts_and_disjoint_pairs(embedded: TranslationDataModule) -> None:
    shards = []
    for rank in (0, 1):
        embedded.trainer = SimpleNamespace(world_size=2, global_rank=rank, accelerator=None, _accelerator_connector=SimpleNamespace(use_distributed_sampler=False))  # type: ignore[assignment]
        try:
            shards.append([batch["ids"].tolist() for batch in embedded.val_dataloader()])
        finally:
            embedded.trainer = None
    assert len(shards[0]) == len(shards[1])
    ids = [[i for batch in shard for i in batch] for shard in shards]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == list(range(EMBEDDED_SIZES["valid"]))


def test_multi_process_runs_must_disable_lightnings_distributed_sampler(embedded: TranslationDataModule) -> None:
    embedded.trainer = SimpleNamespace(world_size=2, global_rank=0, accelerator=None, _accelerator_connector=SimpleNamespace(use_distributed_sampler=True))  # type: ignore[assignment]
    try:
        with pytest.raises(ConfigError, match="trainer.use_distributed_sampler: false"):
            embedded.train_dataloader()
    finally:
        embedded.trainer = None


# -- a user's folder ------------------------------------------------------------------------


def test_a_fairseq_layout_folder_works_with_only_data_dir_and_language_codes(folder: Path) -> None:
    dm = TranslationDataModule(data_dir=str(folder), src_lang="de", tgt_lang="en", vocab_size=300)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert dm.name == "iwslt_like_de_en"
    assert {split: dm.stats[split]["pairs"] for split in ("train", "valid", "test")} == {"train": 800, "valid": 40, "test": 30}
    assert dm.references("test") == embedded_lines("test", "en", 30)
    assert dm.sources("valid") == embedded_lines("valid", "de", 40)
    batch = next(iter(dm.train_dataloader()))
    assert batch["src_tokens"].shape[0] > 0
    # The vocabulary is cached beside the data.
    assert dm.tokenizer.model_file.parent == folder and dm.tokenizer.model_file.name.startswith("spm-bpe300-")


def test_a_generic_folder_name_gives_way_to_its_parents_name(tmp_path: Path) -> None:
    folder = tmp_path / "iwslt14.tokenized.de-en" / "tmp"
    assert TranslationDataModule(data_dir=str(folder), src_lang="de", tgt_lang="en").name == "iwslt14.tokenized.de-en_de_en"


def test_gzipped_files_read_the_same_as_plain_ones(tmp_path: Path) -> None:
    plain = small_dm(write_corpus(tmp_path / "plain"))
    packed = small_dm(write_corpus(tmp_path / "packed", gz=True))
    plain.setup("fit")
    packed.setup("fit")
    assert plain.tokenizer.serialized == packed.tokenizer.serialized
    assert packed.references("valid") == plain.references("valid")


def test_windows_line_ends_are_removed(folder: Path) -> None:
    for lang in ("de", "en"):
        path = folder / f"valid.{lang}"
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    dm = small_dm(folder)
    assert dm.references("valid") == embedded_lines("valid", "en", 40)


def test_a_given_tokenizer_model_is_used_instead_of_training(folder: Path, embedded: TranslationDataModule) -> None:
    dm = small_dm(folder, tokenizer_model=str(embedded.tokenizer.model_file))
    assert dm.tokenizer.serialized == embedded.tokenizer.serialized and len(dm.tokenizer) == 2000
    assert not list(folder.glob("*.model"))


def test_training_pairs_longer_than_max_positions_are_dropped_and_counted(folder: Path) -> None:
    long_de = "Die Datei wurde nicht gefunden und " * 40
    long_en = "The file was not found and " * 40
    for lang, text in (("de", long_de), ("en", long_en)):
        with (folder / f"train.{lang}").open("a", encoding="utf-8") as handle:
            handle.write(text + "\n\n")  # a long pair, then a pair of empty lines
    dm = small_dm(folder, max_positions=128)  # the real pairs all fit in 128 positions
    dm.setup("fit")
    assert dm.stats["train"] == {"pairs": 800, "dropped_too_long": 1, "dropped_empty": 1, "truncated": 0}
    ids = [i for batch in dm.train_dataloader() for i in batch["ids"].tolist()]
    assert sorted(ids) == list(range(800))
    for batch in dm.train_dataloader():
        assert batch["src_tokens"].shape[1] <= 128 and batch["target"].shape[1] <= 128


def test_long_validation_pairs_are_cut_not_dropped(folder: Path) -> None:
    for lang, word in (("de", "Datei "), ("en", "file ")):
        with (folder / f"valid.{lang}").open("a", encoding="utf-8") as handle:
            handle.write(word * 200 + "\n")
    dm = small_dm(folder, max_positions=128)  # the real pairs all fit in 128 positions
    dm.setup("validate")
    assert dm.stats["valid"]["pairs"] == 41 and dm.stats["valid"]["truncated"] == 2
    batches = list(dm.val_dataloader())
    assert sorted(i for b in batches for i in b["ids"].tolist()) == list(range(41))
    assert max(b["src_tokens"].shape[1] for b in batches) == max(b["target"].shape[1] for b in batches) == 128
    assert dm.references("valid")[40] == "file " * 199 + "file "  # the raw reference is whole


def test_predict_batches_hold_sources_and_their_line_indices(folder: Path) -> None:
    predict = folder / "input.txt"
    predict.write_text("Datei nicht gefunden\nZugriff verweigert\n", encoding="utf-8")
    dm = small_dm(folder, predict_file=str(predict))
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert all(set(b) == {"src_tokens", "src_lengths", "ids"} for b in batches)
    decoded = {int(i): dm.tokenizer.decode(row) for b in batches for i, row in zip(b["ids"], b["src_tokens"])}
    assert decoded == {0: "Datei nicht gefunden", 1: "Zugriff verweigert"}
    assert dm.sources("predict") == ["Datei nicht gefunden", "Zugriff verweigert"]


def test_a_checkpoint_brings_its_tokenizer_and_the_data_is_tokenized_again(folder: Path) -> None:
    trained = small_dm(folder, vocab_size=300)
    trained.setup("validate")
    state = trained.state_dict()
    other = small_dm(folder, vocab_size=400)
    other.setup("validate")
    other.load_state_dict(state)
    assert other.tokenizer.serialized == trained.tokenizer.serialized
    first = next(iter(other.val_dataloader()))
    expected = next(iter(trained.val_dataloader()))
    assert torch.equal(first["src_tokens"], expected["src_tokens"])


# -- errors ---------------------------------------------------------------------------------


def test_a_missing_data_dir_says_what_it_should_hold(tmp_path: Path) -> None:
    dm = small_dm(tmp_path / "nowhere")
    with pytest.raises(TranslationDataError, match=r"data_dir '.*nowhere' does not exist.*train\.de, train\.en, valid\.de"):
        dm.prepare_data()


def test_a_missing_file_is_named_with_the_expected_names(folder: Path) -> None:
    (folder / "test.en").unlink()
    dm = small_dm(folder)
    dm.setup("fit")  # fit needs no test split
    with pytest.raises(TranslationDataError, match=r"missing test\.en \(or \.gz\) in .*Expected train\.de, train\.en, .*test\.en"):
        dm.setup("test")


def test_wrong_language_codes_name_the_files_looked_for(folder: Path) -> None:
    with pytest.raises(TranslationDataError, match=r"missing train\.fr and train\.vi"):
        TranslationDataModule(data_dir=str(folder), src_lang="fr", tgt_lang="vi", vocab_size=300).prepare_data()


def test_sides_of_different_length_name_both_files_and_counts(folder: Path) -> None:
    with (folder / "train.en").open("a", encoding="utf-8") as handle:
        handle.write("one line too many\n")
    with pytest.raises(TranslationDataError, match=r"train\.de' has 800 lines but '.*train\.en' has 801"):
        small_dm(folder).prepare_data()


def test_an_empty_split_is_an_error_naming_its_files(folder: Path) -> None:
    (folder / "valid.de").write_text("", encoding="utf-8")
    (folder / "valid.en").write_text("", encoding="utf-8")
    with pytest.raises(TranslationDataError, match=r"valid\.de' and '.*valid\.en' are empty"):
        small_dm(folder).setup("validate")


def test_an_empty_training_corpus_is_an_error(folder: Path) -> None:
    (folder / "train.de").write_text("", encoding="utf-8")
    (folder / "train.en").write_text("", encoding="utf-8")
    with pytest.raises(TranslationDataError, match=r"train\.de' and '.*train\.en' are empty"):
        small_dm(folder).prepare_data()


def test_a_line_that_is_not_utf8_is_reported_with_file_and_line_number(folder: Path) -> None:
    path = folder / "valid.de"
    lines = path.read_bytes().split(b"\n")
    lines[6] = "Größe".encode("latin-1")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(TranslationDataError, match=r"valid\.de' line 7 is not UTF-8.*iconv"):
        small_dm(folder).setup("validate")


def test_both_plain_and_gzipped_copies_of_a_file_are_ambiguous(folder: Path) -> None:
    with gzip.open(folder / "test.en.gz", "wt", encoding="utf-8") as handle:
        handle.write("x\n")
    with pytest.raises(TranslationDataError, match=r"both '.*test\.en' and '.*test\.en\.gz' exist"):
        small_dm(folder).setup("test")


def test_a_missing_predict_file_is_named(folder: Path) -> None:
    with pytest.raises(TranslationDataError, match=r"predict_file '.*absent\.txt' does not exist"):
        small_dm(folder, predict_file=str(folder / "absent.txt")).setup("predict")


def test_predict_without_a_predict_file_says_which_setting_to_give(folder: Path) -> None:
    with pytest.raises(ConfigError, match="set data.init_args.predict_file"):
        small_dm(folder).setup("predict")


def test_errors_are_data_errors_the_cli_reports_without_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        small_dm(tmp_path / "nowhere").prepare_data()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"src_lang": "fr"}, "the embedded corpus is English–German"),
        ({"src_lang": "en", "tgt_lang": "en"}, "two different language codes"),
        ({"max_tokens": 100, "max_positions": 256}, "max_tokens=100 is smaller than max_positions=256"),
        ({"model_type": "wordpiece"}, "model_type must be one of"),
        ({"vocab_size": 3}, "vocab_size must be at least 5"),
    ],
)
def test_invalid_settings_are_rejected_at_construction(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TranslationDataModule(**kwargs)  # type: ignore[arg-type]


def test_the_tokenizer_is_available_before_setup(folder: Path) -> None:
    dm = small_dm(folder)
    assert isinstance(dm.tokenizer, SentencePieceTokenizer) and len(dm.tokenizer) == 300


# -- how the embedded corpus is built (scripts/build_gettext_corpus.py) ---------------------


@pytest.fixture(scope="module")
def builder() -> Iterator[ModuleType]:
    with script_module("build_gettext_corpus.py", "build_gettext_corpus") as module:
        yield module


def compile_mo(entries: list[tuple[bytes, bytes]], byteorder: str = "<") -> bytes:
    """A GNU .mo file of ``entries`` (no hash table), as msgfmt lays it out."""
    entries = sorted(entries)
    count = len(entries)
    originals, translations = 28, 28 + 8 * count
    data_start = 28 + 16 * count
    blob, table_o, table_t = b"", [], []
    for msgid, _ in entries:
        table_o.append((len(msgid), data_start + len(blob)))
        blob += msgid + b"\0"
    for _, msgstr in entries:
        table_t.append((len(msgstr), data_start + len(blob)))
        blob += msgstr + b"\0"
    header = struct.pack(byteorder + "7I", 0x950412DE, 0, count, originals, translations, 0, 0)
    tables = b"".join(struct.pack(byteorder + "2I", *pair) for pair in table_o + table_t)
    return header + tables + blob


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_mo_catalogs_are_read_with_contexts_dropped_and_plurals_as_singulars(builder: ModuleType, byteorder: str) -> None:
    mo = compile_mo(
        [
            (b"", b"Content-Type: text/plain; charset=UTF-8\n"),
            (b"menu\x04Open file", "Datei öffnen".encode()),
            (b"one file\x00%d files", b"eine Datei\x00%d Dateien"),
        ],
        byteorder,
    )
    pairs = sorted(builder.singular_pairs(builder.read_mo(mo)))
    assert pairs == [("Open file", "Datei öffnen"), ("one file", "eine Datei")]


@pytest.mark.parametrize(
    ("english", "german"),
    [
        ("cannot open %s", "kann %s nicht öffnen"),
        ("invalid argument %1$s", "ungültiges Argument %1$s"),
        ("value {0} is wrong", "Wert {0} ist falsch"),
        ("set ${HOME} first", "zuerst ${HOME} setzen"),
        ("<b>Warning</b>", "<b>Warnung</b>"),
        ("_Open", "_Öffnen"),
        ("first line\nsecond line\n", "erste Zeile\nzweite Zeile\n"),
        ("Plan:", "Plan:"),
        ("untranslated", ""),
        ("\x07timed out", "\x07Zeit abgelaufen"),
        ("x" * 200, "y" * 200),
    ],
)
def test_templates_markup_blocks_and_untranslated_entries_are_dropped(builder: ModuleType, english: str, german: str) -> None:
    assert builder.clean(english, german) is None


def test_a_plain_message_is_kept_with_whitespace_normalised(builder: ModuleType) -> None:
    assert builder.clean("  file   not found\n", "Datei  nicht gefunden\n") == ("file not found", "Datei nicht gefunden")


def test_the_split_is_a_stable_function_of_the_english_side(builder: ModuleType) -> None:
    splits = [builder.split_of(f"message number {i}") for i in range(4000)]
    assert splits == [builder.split_of(f"message number {i}") for i in range(4000)]
    assert 0.05 < (splits.count("valid") + splits.count("test")) / len(splits) < 0.09  # 7 % expected

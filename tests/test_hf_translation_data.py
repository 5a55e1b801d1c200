"""HFTranslationDataModule: a Hugging Face dataset (local only: these tests never touch the network)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

datasets = pytest.importorskip("datasets")

from skipln.data.hf_translation import HFTranslationDataModule  # noqa: E402
from skipln.data.translation import TranslationDataError, TranslationDataModule, embedded_corpus_dir, read_lines  # noqa: E402
from skipln.errors import ConfigError  # noqa: E402

SIZES = {"train": 300, "valid": 40, "test": 40}
HF_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
SETTINGS = {"src_lang": "en", "tgt_lang": "de", "vocab_size": 300, "max_tokens": 512}


@pytest.fixture(autouse=True)
def _offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("SKIPLN_CACHE_DIR", str(tmp_path / "cache"))


def pairs(split: str) -> tuple[list[str], list[str]]:
    """Real English–German pairs: the first ones of the embedded corpus."""
    root, n = embedded_corpus_dir(), SIZES[split]
    return read_lines(root / f"{split}.en.gz")[:n], read_lines(root / f"{split}.de.gz")[:n]


def saved_dataset(folder: Path) -> Path:
    splits = {}
    for ours, theirs in HF_SPLITS.items():
        en, de = pairs(ours)
        splits[theirs] = datasets.Dataset.from_dict({"translation": [{"en": a, "de": b} for a, b in zip(en, de)]})
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


def fairseq_folder(folder: Path) -> Path:
    folder.mkdir()
    for split in SIZES:
        en, de = pairs(split)
        (folder / f"{split}.en").write_text("".join(f"{line}\n" for line in en), encoding="utf-8")
        (folder / f"{split}.de").write_text("".join(f"{line}\n" for line in de), encoding="utf-8")
    return folder


def test_a_saved_dataset_gives_the_batches_and_references_of_the_same_text_in_files(tmp_path: Path) -> None:
    hf = HFTranslationDataModule(str(saved_dataset(tmp_path / "saved")), **SETTINGS)
    files = TranslationDataModule(str(fairseq_folder(tmp_path / "text")), **SETTINGS)
    for module in (hf, files):
        module.prepare_data()
        module.setup("fit")
    assert hf.tokenizer.serialized == files.tokenizer.serialized
    for mine, theirs in zip(hf.train_dataloader(), files.train_dataloader()):
        assert all(torch.equal(mine[k], theirs[k]) for k in ("src_tokens", "target", "ids"))
    assert hf.references("valid") == pairs("valid")[1]
    assert hf.name == "saved_en_de"


def test_local_json_files_load_through_load_dataset_with_columns_per_language(tmp_path: Path) -> None:
    data_files = {}
    for ours, theirs in HF_SPLITS.items():
        path = tmp_path / f"{ours}.jsonl"
        path.write_text("".join(json.dumps({"en": a, "de": b}) + "\n" for a, b in zip(*pairs(ours))), encoding="utf-8")
        data_files[theirs] = str(path)
    module = HFTranslationDataModule("json", data_files=data_files, field=None, **SETTINGS)
    module.setup("test")
    assert module.sources("test") == pairs("test")[0]
    assert module.stats["test"]["pairs"] == SIZES["test"]


def test_a_line_break_inside_a_sentence_does_not_shift_the_sides(tmp_path: Path) -> None:
    rows = [{"en": "first\nline", "de": "erste Zeile"}, {"en": "second", "de": "zweite"}]
    dataset = datasets.Dataset.from_dict({"translation": rows * 20})
    datasets.DatasetDict({"train": dataset, "validation": dataset, "test": dataset}).save_to_disk(str(tmp_path / "s"))
    module = HFTranslationDataModule(str(tmp_path / "s"), src_lang="en", tgt_lang="de", vocab_size=40, max_tokens=256)
    assert module.sources("test")[:2] == ["first line", "second"]
    assert module.references("test")[:2] == ["erste Zeile", "zweite"]


def test_a_missing_split_names_the_ones_there_are(tmp_path: Path) -> None:
    folder = saved_dataset(tmp_path / "saved")
    module = HFTranslationDataModule(str(folder), splits={"train": "train", "valid": "dev", "test": "test"}, **SETTINGS)
    with pytest.raises(TranslationDataError, match="no split 'dev'.*validation"):
        module.export()


def test_a_missing_language_names_the_ones_a_row_has(tmp_path: Path) -> None:
    module = HFTranslationDataModule(str(saved_dataset(tmp_path / "saved")), **{**SETTINGS, "src_lang": "fr"})
    with pytest.raises(TranslationDataError, match="no language 'fr'.*en, de"):
        module.export()


def test_a_hub_dataset_that_cannot_be_reached_is_one_clear_error() -> None:
    module = HFTranslationDataModule("no-such-owner/no-such-dataset", "de-en", src_lang="en", tgt_lang="de")
    with pytest.raises(TranslationDataError, match="cannot load split 'train' of 'no-such-owner/no-such-dataset'.*Hub page") as error:
        module.export()  # offline (see the fixture): the Hub is not asked
    assert "\n" not in str(error.value)


def test_splits_must_name_exactly_train_valid_and_test() -> None:
    with pytest.raises(ConfigError, match="splits must map exactly"):
        HFTranslationDataModule("x", splits={"train": "train"})


def test_without_the_datasets_package_the_error_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = HFTranslationDataModule("wmt/wmt14", "de-en", src_lang="en", tgt_lang="de")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ConfigError, match=r"skipln\[hf\]"):
        module.export()


@pytest.mark.parametrize(
    ("data", "experiment"),
    [("hf_iwslt14_de_en", "iwslt14_de_en"), ("hf_iwslt17_de_en", "iwslt14_de_en"), ("hf_wmt14_en_de", "wmt14_en_de_base")],
)
def test_the_hub_data_files_compose_with_the_experiments(data: str, experiment: str, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import CONFIGS, DEFAULTS
    from skipln.cli import cli_main

    configs = [CONFIGS / "transformer" / f"{experiment}.yaml", CONFIGS / "data" / f"{data}.yaml"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *(f"--config={c}" for c in configs), "--print_config"], default_config_files=[DEFAULTS])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "skipln.data.hf_translation.HFTranslationDataModule" in printed and "data_dir" not in printed

"""The gettext corpora: how scripts/build_gettext_corpus.py finds, cleans, deduplicates and splits
catalogs (on small inputs written here), and the committed large corpus the depth study reads."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from skipln.data.translation import TranslationDataModule, embedded_corpus_dir
from skipln.errors import ConfigError
from skipln_test_support import script_module
from test_translation_data import compile_mo

LARGE = "gettext_en_de_large"


@pytest.fixture(scope="module")
def builder() -> Iterator[ModuleType]:
    with script_module("build_gettext_corpus.py", "build_gettext_corpus_large") as module:
        yield module


def write_mo(path: Path, entries: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (b"", b"Content-Type: text/plain; charset=UTF-8\n")
    path.write_bytes(compile_mo([header, *((en.encode(), de.encode()) for en, de in entries)]))


# -- finding catalogs -----------------------------------------------------------------------


def test_german_catalogs_are_found_wherever_a_package_keeps_them_and_only_those(builder: ModuleType, tmp_path: Path) -> None:
    keep = [
        "usr/lib/libreoffice/program/resource/de/LC_MESSAGES/sw.mo",
        "usr/share/locale/de/LC_MESSAGES/tool.mo",
        "usr/share/vim/vim90/lang/de/LC_MESSAGES/vim.mo",
    ]
    skip = ["usr/share/locale/de_AT/LC_MESSAGES/tool.mo", "usr/share/locale/fr/LC_MESSAGES/tool.mo", "usr/share/de/tool.mo"]
    for relative in keep + skip:
        write_mo(tmp_path / relative, [("Open file", "Datei öffnen")])
    assert [str(p.relative_to(tmp_path)) for p in builder.german_catalogs(tmp_path)] == keep


def test_an_unpacked_package_gives_one_catalog_per_file_with_its_pairs(builder: ModuleType, tmp_path: Path) -> None:
    write_mo(tmp_path / "usr/share/locale/de/LC_MESSAGES/tool.mo", [("Open file", "Datei öffnen"), ("Quit", "Beenden")])
    (catalog,) = builder.read_tree(tmp_path, "tool", "1.0-1")
    assert (catalog.package, catalog.version, catalog.path) == ("tool", "1.0-1", "usr/share/locale/de/LC_MESSAGES/tool.mo")
    assert sorted(catalog.pairs) == [("Open file", "Datei öffnen"), ("Quit", "Beenden")]


# -- cleaning -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("english", "german"),
    [
        ("Open", "Ö_ffnen"),  # GTK accelerator inside the German word
        ("B~orders", "~Umrandung"),  # LibreOffice accelerators
        ("call gtk_widget_show first", "zuerst gtk_widget_show aufrufen"),  # an identifier
        ("junk at end of %<#pragma pack%>", "Ausschuss am Ende von %<#pragma pack%>"),  # gcc's code quotes
        ("Cannot open $(ARG1).", "$(ARG1) kann nicht geöffnet werden."),  # LibreOffice's variables
    ],
)
def test_the_large_recipe_drops_inner_accelerators_identifiers_and_desktop_templates(
    builder: ModuleType, english: str, german: str
) -> None:
    assert builder.clean(english, german, builder.DESKTOP_FILTERS) is None


def test_the_quickstart_recipe_keeps_its_filters_so_its_corpus_rebuilds_unchanged(builder: ModuleType) -> None:
    assert builder.RECIPES["quickstart"].filters == ()
    assert builder.clean("call gtk_widget_show first", "zuerst gtk_widget_show aufrufen") is not None


def test_freecivs_disambiguation_prefix_is_removed(builder: ModuleType) -> None:
    assert builder.clean("?unit:Settlers", "Siedler", builder.DESKTOP_FILTERS) == ("Settlers", "Siedler")


# -- deduplication and split ----------------------------------------------------------------


def test_one_german_per_english_the_most_frequent_then_the_smallest(builder: ModuleType) -> None:
    def catalog(name: str, pairs: list[tuple[str, str]]) -> object:
        return builder.Catalog(name, "1", f"usr/share/locale/de/LC_MESSAGES/{name}.mo", tuple(pairs))

    catalogs = [
        catalog("a", [("File not found", "Datei nicht gefunden"), ("Quit", "Beenden")]),
        catalog("b", [("File not found", "Datei nicht gefunden"), ("Quit", "Verlassen")]),
        catalog("c", [("File not found", "Die Datei fehlt")]),
    ]
    chosen, kept = builder.choose(catalogs)
    assert chosen == {"File not found": "Datei nicht gefunden", "Quit": "Beenden"}  # 2 votes to 1; a tie to the smaller
    assert chosen == builder.choose(catalogs[::-1])[0]  # independent of the reading order
    assert kept == {f"{n}:usr/share/locale/de/LC_MESSAGES/{n}.mo": k for n, k in (("a", 2), ("b", 2), ("c", 1))}


def test_the_large_split_is_a_stable_function_of_the_english_side_with_2_percent_each(builder: ModuleType) -> None:
    recipe = builder.RECIPES["large"]
    splits = [builder.split_of(f"message number {i}", recipe) for i in range(8000)]
    assert splits == [builder.split_of(f"message number {i}", recipe) for i in range(8000)]
    assert 0.015 < splits.count("valid") / len(splits) < 0.025 and 0.015 < splits.count("test") / len(splits) < 0.025


def test_written_splits_are_aligned_gzip_files_that_rebuild_byte_identically(builder: ModuleType, tmp_path: Path) -> None:
    chosen = {f"message {i}": f"Nachricht {i}" for i in range(300)}
    splits = builder.split_pairs(chosen, builder.RECIPES["quickstart"])
    builder.write_splits(splits, tmp_path / "one")
    builder.write_splits(builder.split_pairs(dict(reversed(chosen.items())), builder.RECIPES["quickstart"]), tmp_path / "two")
    for split in ("train", "valid", "test"):
        for lang in ("en", "de"):
            assert (tmp_path / "one" / f"{split}.{lang}.gz").read_bytes() == (tmp_path / "two" / f"{split}.{lang}.gz").read_bytes()
        english = gzip.decompress((tmp_path / "one" / f"{split}.en.gz").read_bytes()).decode().splitlines()
        german = gzip.decompress((tmp_path / "one" / f"{split}.de.gz").read_bytes()).decode().splitlines()
        assert [chosen[en] for en in english] == german and len(english) == len(splits[split])


# -- licences -------------------------------------------------------------------------------


def test_every_package_of_the_large_recipe_has_exactly_one_recorded_licence(builder: ModuleType) -> None:
    listed = [p for packages in builder.LICENCES.values() for p in packages.split()]
    assert sorted(listed) == sorted(set(builder.LARGE_PACKAGES))


def test_a_package_without_a_recorded_licence_stops_the_build(builder: ModuleType) -> None:
    with pytest.raises(SystemExit, match="no licence recorded for mystery-tool"):
        builder.notice(builder.RECIPES["large"], ["coreutils", "mystery-tool"])


# -- the committed large corpus -------------------------------------------------------------


def large_lines(split: str, lang: str) -> list[str]:
    with gzip.open(embedded_corpus_dir(LARGE) / f"{split}.{lang}.gz", "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def test_the_large_corpus_has_the_manifests_counts_and_at_least_40000_pairs() -> None:
    manifest = (embedded_corpus_dir(LARGE) / "MANIFEST").read_text(encoding="utf-8")
    total = 0
    for split in ("train", "valid", "test"):
        (size,) = re.findall(rf"^{split} (\d+) ", manifest, re.MULTILINE)
        assert len(large_lines(split, "en")) == len(large_lines(split, "de")) == int(size)
        total += int(size)
    assert total >= 40_000


def test_the_large_corpus_records_every_package_version_and_licence(builder: ModuleType) -> None:
    manifest = (embedded_corpus_dir(LARGE) / "MANIFEST").read_text(encoding="utf-8")
    packages = re.search(r"\[packages\].*?\n(.*?)\n\n", manifest, re.DOTALL).group(1).splitlines()  # type: ignore[union-attr]
    assert sorted(line.split()[0] for line in packages) == sorted(builder.LARGE_PACKAGES)
    notice = (embedded_corpus_dir(LARGE) / "NOTICE").read_text(encoding="utf-8")
    assert all(package in notice for package in builder.LARGE_PACKAGES) and "MPL-2.0" in notice


def test_the_large_corpus_splits_share_no_english_sentence() -> None:
    train, valid, test = (set(large_lines(split, "en")) for split in ("train", "valid", "test"))
    assert not (train & valid or train & test or valid & test)


def test_the_data_module_reads_the_large_corpus_by_name() -> None:
    dm = TranslationDataModule(embedded=LARGE)
    assert dm.name == "gettext_large_en_de" and dm.data_dir == embedded_corpus_dir(LARGE)
    assert dm.files("valid")[0].name == "valid.en.gz"


def test_a_data_dir_and_an_embedded_corpus_together_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both name a corpus"):
        TranslationDataModule(data_dir=str(tmp_path), embedded=LARGE)

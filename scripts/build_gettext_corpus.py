#!/usr/bin/env python3
"""Build the embedded English→German corpus from the German translation catalogs of Debian packages.

What it makes: ``src/skipln/resources/gettext_en_de/{train,valid,test}.{en,de}.gz`` (one
sentence per line, line i of ``.en`` translates to line i of ``.de``), ``MANIFEST`` (the exact
package versions and every count) and ``NOTICE`` (where the text comes from, under which
licences). The text is real: the messages of coreutils, bash, apt, dpkg, git, … and the German
their translators wrote. It is software-message text, not talks: good for a quickstart and for
convergence tests, not for comparing BLEU with IWSLT or WMT.

How to rebuild (on Debian or Ubuntu, as any user; only ``apt-get download`` and ``dpkg-deb``
are needed, nothing is installed)::

    sudo apt-get update                       # once, so apt knows the current versions
    python scripts/build_gettext_corpus.py    # downloads the .debs into a temp dir

    # or from .deb files you already have (e.g. the exact versions named in MANIFEST):
    python scripts/build_gettext_corpus.py --debs path/to/debs/

The output depends only on the .deb files: catalogs are read in sorted order, every choice
(which German to keep for an English message, the split) is a pure function of the text, and
the gzip headers carry no time stamp, so the same .debs give byte-identical files. A later
rebuild may fetch newer package versions (Debian point releases) and so a slightly different
corpus; MANIFEST records which versions a corpus came from.

Steps: download → ``dpkg-deb -x`` → parse every ``usr/share/locale/de/*/*.mo`` (our own
reader of the GNU .mo format below, standard library only) → keep singular msgid/msgstr pairs
→ clean and filter (see :func:`clean`) → one German per English message (the most frequent,
then the smallest) → split by a hash of the English side (93 / 3.5 / 3.5 %) → write.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# The fixed list of packages (ENVIRONMENT.md, "Parallel text"): fourteen core packages, then
# five more (git, libc-l10n, make, procps, wget) that double the number of clean pairs.
PACKAGES: tuple[str, ...] = (
    "apt",
    "bash",
    "coreutils",
    "diffutils",
    "dpkg",
    "e2fsprogs-l10n",
    "findutils",
    "gettext",
    "gettext-base",
    "grep",
    "libapt-pkg6.0",
    "sed",
    "tar",
    "util-linux-locales",
    "git",
    "libc-l10n",
    "make",
    "procps",
    "wget",
)

LANGUAGE = "de"
MAX_CHARS = 160  # per side, after whitespace normalisation: longer entries are help screens
MAX_RATIO = 3.0  # a German side 3× longer or shorter than the English is rarely a translation
SPLIT_BUCKETS = 10_000
# ~10k pairs survive the cleaning; 3.5 % each gives valid and test sets of ~350 pairs.
VALID_BUCKETS = 350  # hash bucket < 350 → valid (3.5 %)
TEST_BUCKETS = 700  # 350 ≤ bucket < 700 → test (3.5 %); the rest → train
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "skipln" / "resources" / "gettext_en_de"

# printf conversions (%s, %5.2f, %1$s, %-*d, %lu, %zu, %'d, %<PRIu64>, %%, and the programs'
# own letters such as e2fsck's %N), Python/C# braces ({}, {0}, {name}), shell variables ($1,
# ${x}, $HOME), and e2fsck's "@i"/"@b" abbreviations that it expands when printing. A message
# with any of them is a template, not a sentence: the model would learn to copy tokens it
# cannot know.
_PLACEHOLDER = re.compile(
    r"%(\d+\$)?[-+ #0']*(\d+|\*)?(\.(\d+|\*))?[A-Za-z%]"
    r"|%<\w+>|%\(\w+\)"
    r"|\{[\w.:!]*\}"
    r"|\$\{?[A-Za-z_0-9]"
    r"|(^|[\s(])@[A-Za-z]"
)
_MARKUP = re.compile(r"<[A-Za-z/!?][^<>]*>|&[A-Za-z]+;|&#\d+;")
# GTK/Qt accelerators: "_Open", "&Save". Terminal programs rarely have them; catch them anyway.
_ACCELERATOR = re.compile(r"(^|[\s(])_[A-Za-z]|&[A-Za-z]")
_WHITESPACE = re.compile(r"\s+")
_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class Catalog:
    """The German catalog of one package: where it came from and its (msgid, msgstr) pairs."""

    package: str
    version: str
    path: str
    pairs: tuple[tuple[str, str], ...]


def read_mo(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every (msgid, msgstr) of a compiled GNU gettext catalog, as raw bytes.

    The format: a 7-word header (magic, revision, N, offset of the original-strings table,
    offset of the translations table, hash table size and offset), then two tables of N
    (length, offset) pairs. The magic's byte order gives the file's byte order.
    """
    if len(data) < 28:
        raise ValueError(f"not a .mo file: {len(data)} bytes is shorter than the header")
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0x950412DE:
        order = "<"
    elif magic == 0xDE120495:
        order = ">"
    else:
        raise ValueError(f"not a .mo file: magic {magic:#010x}")
    _, revision, count, originals, translations = struct.unpack(order + "5I", data[:20])
    if revision >> 16 > 1:
        raise ValueError(f"unsupported .mo major revision {revision >> 16}")

    def string(table: int, i: int) -> bytes:
        length, offset = struct.unpack(order + "2I", data[table + 8 * i : table + 8 * i + 8])
        return data[offset : offset + length]

    return [(string(originals, i), string(translations, i)) for i in range(count)]


def catalog_charset(entries: Iterable[tuple[bytes, bytes]]) -> str:
    """The charset named in the catalog's header (the msgstr of the empty msgid); UTF-8 if none."""
    for msgid, msgstr in entries:
        if msgid == b"":
            match = re.search(rb"charset=([\w.-]+)", msgstr)
            return match.group(1).decode("ascii") if match else "utf-8"
    return "utf-8"


def singular_pairs(entries: list[tuple[bytes, bytes]]) -> Iterator[tuple[str, str]]:
    """(English, German) for each entry: the context is dropped, plurals give their singular forms.

    A msgid ``ctx\\x04text`` carries a context; a plural entry is ``singular\\0plural`` with one
    msgstr per German plural form, of which form 0 is the singular.
    """
    charset = catalog_charset(entries)
    for msgid, msgstr in entries:
        if msgid == b"":
            continue
        english = msgid.split(b"\x00")[0].split(b"\x04")[-1]
        german = msgstr.split(b"\x00")[0]
        yield english.decode(charset, errors="strict"), german.decode(charset, errors="strict")


def clean(english: str, german: str) -> tuple[str, str] | None:
    """The pair with normalised whitespace, or None where it is no usable sentence pair.

    Dropped: templates (printf/brace/shell placeholders), markup, accelerators, multi-line
    entries (help screens, usage blocks), control characters, entries without letters, untranslated or identical
    pairs, entries over MAX_CHARS, and pairs whose lengths differ more than MAX_RATIO-fold.
    """
    raw = (english, german)
    if any(_PLACEHOLDER.search(s) or _MARKUP.search(s) or _ACCELERATOR.search(s) for s in raw):
        return None
    # One trailing newline is common in messages printed with a "\n"; more is a text block.
    if any(s.strip().count("\n") > 0 or "\t" in s.strip() for s in raw):
        return None
    english, german = (_WHITESPACE.sub(" ", s).strip() for s in raw)
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in english + german):  # e.g. the terminal bell \a
        return None
    if not english or not german or english == german:
        return None
    if not _LETTER.search(english) or not _LETTER.search(german):
        return None
    if max(len(english), len(german)) > MAX_CHARS:
        return None
    if max(len(english), len(german)) > MAX_RATIO * min(len(english), len(german)) + 10:
        return None
    return english, german


def deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], check=True, capture_output=True, text=True).stdout.strip()


def download(packages: Iterable[str], into: Path) -> None:
    """``apt-get download`` each package (the candidate version of the machine's apt lists)."""
    result = subprocess.run(["apt-get", "download", *packages], cwd=into, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(
            "apt-get download failed (run `sudo apt-get update` first; on a non-Debian system pass "
            f"--debs with the .deb files):\n{result.stderr.strip()}"
        )


def read_catalogs(debs: list[Path], work: Path) -> list[Catalog]:
    """Extract each .deb and read its German catalogs, in sorted order."""
    catalogs = []
    for deb in sorted(debs, key=lambda p: p.name):
        package, version = deb_field(deb, "Package"), deb_field(deb, "Version")
        root = work / package
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        for mo in sorted((root / "usr" / "share" / "locale" / LANGUAGE).glob("*/*.mo")):
            pairs = tuple(singular_pairs(read_mo(mo.read_bytes())))
            catalogs.append(Catalog(package, version, str(mo.relative_to(root)), pairs))
    return catalogs


def choose(catalogs: list[Catalog]) -> tuple[dict[str, str], dict[str, int]]:
    """One German per English message, and the number of pairs each catalog kept after cleaning.

    Where catalogs disagree, the most frequent German wins, ties going to the smallest string:
    independent of the order the catalogs were read in.
    """
    votes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    kept: dict[str, int] = {}
    for catalog in catalogs:
        cleaned = [pair for pair in (clean(en, de) for en, de in catalog.pairs) if pair is not None]
        kept[f"{catalog.package}:{catalog.path}"] = len(cleaned)
        for en, de in cleaned:
            votes[en][de] += 1
    chosen = {en: min(counter.items(), key=lambda item: (-item[1], item[0]))[0] for en, counter in votes.items()}
    return chosen, kept


def split_of(english: str) -> str:
    """The split of a pair, from a hash of its English side (stable across runs and machines)."""
    bucket = int.from_bytes(hashlib.sha256(english.encode("utf-8")).digest()[:8], "big") % SPLIT_BUCKETS
    if bucket < VALID_BUCKETS:
        return "valid"
    if bucket < TEST_BUCKETS:
        return "test"
    return "train"


def write_gzip(path: Path, lines: list[str]) -> None:
    """Gzip with no file name or time stamp in the header, so equal text gives equal bytes."""
    payload = "".join(line + "\n" for line in lines).encode("utf-8")
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(payload)


NOTICE = """\
gettext_en_de — English→German sentence pairs from Debian packages' German translation catalogs
================================================================================================

Origin
------
Every line of train/valid/test.{en,de} is a message of a free-software program (the English
msgid) and the German translation (msgstr) shipped in that program's Debian package, read from
the compiled catalogs usr/share/locale/de/LC_*/*.mo. The packages and their exact versions are
listed in MANIFEST. The text was written by the programs' authors and by the German
translation teams (many of them through the Translation Project, https://translationproject.org/).
scripts/build_gettext_corpus.py in this repository rebuilds the files from the .deb packages.

Licences
--------
Translation catalogs are distributed under the licence of the program they belong to (a
catalog's header typically says "distributed under the same license as the ... package"):
GPL-3.0-or-later for coreutils, bash, tar, grep, sed, findutils, diffutils, gettext's tools,
make and wget; GPL-2.0-or-later for apt and libapt-pkg, dpkg and procps; GPL-2.0-only for git;
LGPL-2.1-or-later for the GNU C library's messages (libc-l10n) and the gettext runtime; GPL-2.0
with parts under LGPL or BSD-style licences for util-linux and e2fsprogs. In Debian, each
package's usr/share/doc/<package>/copyright file gives the authoritative terms. These data
files are derived from those catalogs and are distributed under the same terms; they are not
covered by this repository's MIT licence.

Use
---
Software messages, not conversation: short (about 5 words on average), technical, many near
duplicates in style. Right for a quickstart, smoke tests and convergence tests of translation
models; not for comparing BLEU with IWSLT, WMT or published results.
"""


def manifest(
    debs: list[Path], catalogs: list[Catalog], kept: dict[str, int], splits: dict[str, list[tuple[str, str]]]
) -> str:
    lines = [
        "# gettext_en_de: English→German pairs from Debian's German translation catalogs.",
        "# Built by scripts/build_gettext_corpus.py; see NOTICE for origin and licences.",
        "",
        "[packages]  # name, version, sha256 of the .deb",
    ]
    for deb in sorted(debs, key=lambda p: p.name):
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        lines.append(f"{deb_field(deb, 'Package')} {deb_field(deb, 'Version')} {digest}")
    lines += ["", "[catalogs]  # package:path, entries read, pairs kept after cleaning (before deduplication)"]
    for catalog in catalogs:
        key = f"{catalog.package}:{catalog.path}"
        lines.append(f"{key} {len(catalog.pairs)} {kept[key]}")
    lines += ["", "[splits]  # split, pairs, English words, German words"]
    for split in ("train", "valid", "test"):
        pairs = splits[split]
        en_words = sum(len(en.split()) for en, _ in pairs)
        de_words = sum(len(de.split()) for _, de in pairs)
        lines.append(f"{split} {len(pairs)} {en_words} {de_words}")
    return "\n".join(lines) + "\n"


def build(debs: list[Path], out: Path) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="gettext_en_de_") as tmp:
        catalogs = read_catalogs(debs, Path(tmp))
    if not catalogs:
        sys.exit(f"no German catalogs (usr/share/locale/{LANGUAGE}/*/*.mo) in the given .deb files")
    chosen, kept = choose(catalogs)
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "valid": [], "test": []}
    # Order inside a split: by hash, so neighbouring lines come from different programs.
    for en in sorted(chosen, key=lambda s: hashlib.sha256(s.encode("utf-8")).digest()):
        splits[split_of(en)].append((en, chosen[en]))
    out.mkdir(parents=True, exist_ok=True)
    for split, pairs in splits.items():
        write_gzip(out / f"{split}.en.gz", [en for en, _ in pairs])
        write_gzip(out / f"{split}.de.gz", [de for _, de in pairs])
    (out / "MANIFEST").write_text(manifest(debs, catalogs, kept, splits), encoding="utf-8")
    (out / "NOTICE").write_text(NOTICE, encoding="utf-8")
    return {split: len(pairs) for split, pairs in splits.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--debs", type=Path, help="a folder of .deb files to read instead of downloading")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    for tool in ("dpkg-deb",) + (() if args.debs else ("apt-get",)):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: this script runs on Debian or Ubuntu (or pass --debs on a system with dpkg-deb)")
    with tempfile.TemporaryDirectory(prefix="gettext_debs_") as tmp:
        folder = args.debs
        if folder is None:
            folder = Path(tmp)
            download(PACKAGES, folder)
        debs = sorted(folder.glob("*.deb"))
        if not debs:
            sys.exit(f"no .deb files in {folder}")
        counts = build(debs, args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{split} {n} pairs" for split, n in counts.items()))


if __name__ == "__main__":
    main()

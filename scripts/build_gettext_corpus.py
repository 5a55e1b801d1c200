#!/usr/bin/env python3
"""Build the embedded English→German corpora from the German translation catalogs of Debian packages.

Two corpora, one recipe (``--corpus``):

- ``quickstart`` (the default): ``src/skipln/resources/gettext_en_de/``, 19 core packages,
  ~9.9k pairs; the translation quickstart's data.
- ``large``: ``src/skipln/resources/gettext_en_de_large/``, 72 packages (the 19 and the
  catalogs of gcc, LibreOffice, VLC, GTK, GnuCash, freeciv, iso-codes, …), ~70k pairs; the
  depth study's data (``configs/transformer/gettext_large_*.yaml``).

What each holds: ``{train,valid,test}.{en,de}.gz`` (one sentence per line, line i of ``.en``
translates to line i of ``.de``: fairseq's layout, so ``--out data/…`` gives a folder any
``data_dir`` can read), ``MANIFEST`` (the exact package versions and every count) and
``NOTICE`` (where the text comes from, under which licences). The text is real: the messages of coreutils, bash, apt, dpkg, git, … and the German
their translators wrote. It is software-message text, not talks: good for a quickstart and for
convergence tests, not for comparing BLEU with IWSLT or WMT.

How to rebuild (on Debian or Ubuntu, as any user; only ``apt-get download`` and ``dpkg-deb``
are needed, nothing is installed)::

    sudo apt-get update                       # once, so apt knows the current versions
    python scripts/build_gettext_corpus.py    # downloads the .debs into a temp dir
    python scripts/build_gettext_corpus.py --corpus large                     # ~140 MB of .debs
    python scripts/build_gettext_corpus.py --corpus large --out data/gettext_en_de_large

    # or from .deb files you already have (e.g. the exact versions named in MANIFEST):
    python scripts/build_gettext_corpus.py --debs path/to/debs/

The output depends only on the .deb files: catalogs are read in sorted order, every choice
(which German to keep for an English message, the split) is a pure function of the text, and
the gzip headers carry no time stamp, so the same .debs give byte-identical files. A later
rebuild may fetch newer package versions (Debian point releases) and so a slightly different
corpus; MANIFEST records which versions a corpus came from.

The package lists name Debian 12 (bookworm) packages (``gcc-12-locales``, ``postgresql-client-15``
carry their release's version in the name); on another release, adjust those two names.

Steps: download → ``dpkg-deb -x`` → parse every German catalog, ``…/de/LC_*/*.mo`` (usually
under ``usr/share/locale``; LibreOffice and Vim keep theirs elsewhere; our own reader of the
GNU .mo format below, standard library only) → keep singular msgid/msgstr pairs
→ clean and filter (see :func:`clean`) → one German per English message (the most frequent,
then the smallest) → split by a hash of the English side (quickstart 93 / 3.5 / 3.5 %, large
96 / 2 / 2 %) → write.
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
import textwrap
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

# The large corpus: the quickstart's packages and every Debian 12 package found to carry a
# sizeable German catalog of sentence-like messages (system tools, compilers, desktop programs,
# a game, the ISO code lists), ~70k pairs in all.
LARGE_PACKAGES: tuple[str, ...] = PACKAGES + (
    "a2ps",
    "aptitude-common",
    "aspell",
    "binutils-common",
    "bison",
    "cpio",
    "cryptsetup-bin",
    "debconf-i18n",
    "diction",
    "enscript",
    "evince-common",
    "evolution-data-server-common",
    "flex",
    "freeciv-data",
    "gawk",
    "gcc-12-locales",
    "gedit-common",
    "gnome-control-center-data",
    "gnucash-common",
    "gnupg-l10n",
    "grub-common",
    "iso-codes",
    "kbd",
    "krb5-locales",
    "libglib2.0-data",
    "libgpg-error-l10n",
    "libgtk-3-common",
    "libreoffice-l10n-de",
    "libsane-common",
    "login",
    "lynx-common",
    "m4",
    "man-db",
    "mc-data",
    "mutt",
    "nano",
    "nautilus-data",
    "network-manager",
    "postgresql-client-15",
    "psmisc",
    "recode",
    "shared-mime-info",
    "sharutils",
    "subversion",
    "sudo",
    "synaptic",
    "systemd",
    "texinfo",
    "vim-runtime",
    "vlc-l10n",
    "wdiff",
    "xfsprogs",
    "xkb-data",
)

# The licence of each program whose catalog the large corpus reads (its catalogs are
# distributed under it); each package's usr/share/doc/<package>/copyright is authoritative.
LICENCES: dict[str, str] = {
    "GPL-3.0-or-later": "coreutils bash tar grep sed findutils diffutils gettext make wget gcc-12-locales "
    "binutils-common gnupg-l10n bison m4 gawk cpio a2ps enscript texinfo sharutils wdiff nano mc-data "
    "grub-common nautilus-data diction",
    "GPL-2.0-or-later": "apt libapt-pkg6.0 dpkg procps aptitude-common synaptic man-db mutt network-manager "
    "freeciv-data gnucash-common evince-common gedit-common gnome-control-center-data cryptsetup-bin kbd psmisc "
    "libsane-common recode",
    "GPL-2.0-only": "git lynx-common xfsprogs",
    "GPL-2.0 with parts under LGPL or BSD-style licences": "util-linux-locales e2fsprogs-l10n",
    "LGPL-2.1-or-later": "libc-l10n gettext-base iso-codes libglib2.0-data libgtk-3-common libgpg-error-l10n "
    "systemd aspell",
    "LGPL-2.0-or-later": "evolution-data-server-common",
    "GPL-2.0-or-later (shared-mime-info's database)": "shared-mime-info",
    "GPL-2.0-or-later and LGPL-2.1-or-later (VLC's modules and libVLC)": "vlc-l10n",
    "MPL-2.0 (LibreOffice)": "libreoffice-l10n-de",
    "Apache-2.0": "subversion",
    "PostgreSQL licence (BSD-style)": "postgresql-client-15",
    "MIT-style (X11 licences)": "xkb-data krb5-locales",
    "ISC": "sudo",
    "BSD-3-clause (shadow)": "login",
    "BSD-2-clause (debconf)": "debconf-i18n",
    "BSD-style (the flex licence)": "flex",
    "the Vim licence (GPL-compatible)": "vim-runtime",
}

LANGUAGE = "de"
MAX_CHARS = 160  # per side, after whitespace normalisation: longer entries are help screens
MAX_RATIO = 3.0  # a German side 3× longer or shorter than the English is rarely a translation
SPLIT_BUCKETS = 10_000
RESOURCES = Path(__file__).resolve().parents[1] / "src" / "skipln" / "resources"


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
# freeciv's disambiguation prefix ("?unit:Settlers"), which the program strips before printing.
_QUALIFIER = re.compile(r"^\?[\w ]+:")
# What the large corpus's desktop programs and compilers add (the quickstart's recipe predates
# these filters and keeps its exact output without them): accelerators inside a word (GTK's
# "Ö_ffnen", LibreOffice's "~Öffnen", "S~chließen"), identifiers (gtk_widget_show, MH_BUNDLE),
# gcc's quotes around code (%<…%>) and LibreOffice's variables ($(ARG1)).
DESKTOP_FILTERS: tuple[re.Pattern[str], ...] = (
    re.compile(r"[^\W_]_[^\W_]|~[^\W\d_]"),
    re.compile(r"%[<>]"),
    re.compile(r"\$\(\w"),
)
_WHITESPACE = re.compile(r"\s+")
_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class Recipe:
    """What one corpus is made of: its packages, its split and where it goes."""

    name: str
    packages: tuple[str, ...]
    valid_buckets: int  # hash bucket < valid_buckets → valid
    test_buckets: int  # valid_buckets ≤ bucket < test_buckets → test; the rest → train
    use: str  # the NOTICE's last section: what the corpus is for
    filters: tuple[re.Pattern[str], ...] = ()  # dropped beyond what clean() always drops

    @property
    def default_out(self) -> Path:
        return RESOURCES / self.name


RECIPES: dict[str, Recipe] = {
    # ~10k pairs survive the cleaning; 3.5 % each gives valid and test sets of ~350 pairs.
    "quickstart": Recipe("gettext_en_de", PACKAGES, 350, 700, ""),
    # ~70k pairs; 2 % each gives ~1.4k pairs, enough for BLEU without slowing validation down.
    "large": Recipe(
        "gettext_en_de_large",
        LARGE_PACKAGES,
        200,
        400,
        "Software messages, not conversation: short (about 5 words on average), technical; menu\n"
        "labels, compiler diagnostics, language and country names, a game's texts. Large enough\n"
        "to train deeper Transformers (the depth study) without overfitting in a few epochs;\n"
        "not for comparing BLEU with IWSLT, WMT or published results.\n",
        DESKTOP_FILTERS,
    ),
}

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


def clean(english: str, german: str, filters: tuple[re.Pattern[str], ...] = ()) -> tuple[str, str] | None:
    """The pair with normalised whitespace, or None where it is no usable sentence pair.

    Normalised: freeciv's ``?qualifier:`` prefix is removed. Dropped: templates
    (printf/brace/shell placeholders), markup, accelerators, whatever one of ``filters`` finds
    (e.g. :data:`DESKTOP_FILTERS`), multi-line
    entries (help screens, usage blocks), control characters, entries without letters, untranslated or identical
    pairs, entries over MAX_CHARS, and pairs whose lengths differ more than MAX_RATIO-fold.
    """
    raw = (_QUALIFIER.sub("", english, count=1), _QUALIFIER.sub("", german, count=1))
    patterns = (_PLACEHOLDER, _MARKUP, _ACCELERATOR) + filters
    if any(pattern.search(s) for pattern in patterns for s in raw):
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


def german_catalogs(root: Path) -> list[Path]:
    """The German catalogs in an unpacked package, ``…/de/LC_<category>/<domain>.mo``, sorted by path.

    Most live under ``usr/share/locale``; LibreOffice's under ``usr/lib/libreoffice/…/resource``,
    Vim's under ``usr/share/vim/…/lang``. Regional variants (``de_AT``, ``de_CH``) are not read.
    """
    found = (mo for mo in root.rglob("*.mo") if mo.parent.name.startswith("LC_") and mo.parent.parent.name == LANGUAGE)
    return sorted(found, key=lambda mo: str(mo.relative_to(root)))


def read_tree(root: Path, package: str, version: str) -> list[Catalog]:
    """The German catalogs of one package unpacked at ``root``."""
    return [
        Catalog(package, version, str(mo.relative_to(root)), tuple(singular_pairs(read_mo(mo.read_bytes()))))
        for mo in german_catalogs(root)
    ]


def read_catalogs(debs: list[Path], work: Path) -> list[Catalog]:
    """Unpack each .deb (one at a time: some are large) and read its German catalogs, in sorted order."""
    catalogs = []
    for deb in sorted(debs, key=lambda p: p.name):
        package, version = deb_field(deb, "Package"), deb_field(deb, "Version")
        root = work / package
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        catalogs += read_tree(root, package, version)
        shutil.rmtree(root)
    return catalogs


def choose(catalogs: list[Catalog], filters: tuple[re.Pattern[str], ...] = ()) -> tuple[dict[str, str], dict[str, int]]:
    """One German per English message, and the number of pairs each catalog kept after cleaning.

    Where catalogs disagree, the most frequent German wins, ties going to the smallest string:
    independent of the order the catalogs were read in.
    """
    votes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    kept: dict[str, int] = {}
    for catalog in catalogs:
        cleaned = [pair for pair in (clean(en, de, filters) for en, de in catalog.pairs) if pair is not None]
        kept[f"{catalog.package}:{catalog.path}"] = len(cleaned)
        for en, de in cleaned:
            votes[en][de] += 1
    chosen = {en: min(counter.items(), key=lambda item: (-item[1], item[0]))[0] for en, counter in votes.items()}
    return chosen, kept


def split_of(english: str, recipe: Recipe = RECIPES["quickstart"]) -> str:
    """The split of a pair, from a hash of its English side (stable across runs and machines)."""
    bucket = int.from_bytes(hashlib.sha256(english.encode("utf-8")).digest()[:8], "big") % SPLIT_BUCKETS
    if bucket < recipe.valid_buckets:
        return "valid"
    if bucket < recipe.test_buckets:
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


def licence_of(package: str) -> str | None:
    """The licence LICENCES records for ``package``, or None."""
    for licence, packages in LICENCES.items():
        if package in packages.split():
            return licence
    return None


def notice(recipe: Recipe, packages: list[str]) -> str:
    """The NOTICE of a corpus: the quickstart's fixed text, or one listing each package's licence."""
    if recipe.name == RECIPES["quickstart"].name:
        return NOTICE
    unknown = sorted(p for p in packages if licence_of(p) is None)
    if unknown:
        sys.exit(f"no licence recorded for {', '.join(unknown)}: add each to LICENCES in {Path(__file__).name}")
    title = f"{recipe.name} — English→German sentence pairs from Debian packages' German translation catalogs"
    origin = NOTICE[NOTICE.index("Origin\n") : NOTICE.index("Licences\n")]
    origin = origin.replace("usr/share/locale/de/LC_*/*.mo", "…/de/LC_*/*.mo")
    lines = [title, "=" * len(title), "", origin.rstrip("\n"), "", "Licences", "--------"]
    lines += [
        "Translation catalogs are distributed under the licence of the program they belong to (a",
        "catalog's header typically says \"distributed under the same license as the ... package\"). By",
        "package (each package's usr/share/doc/<package>/copyright gives the authoritative terms):",
        "",
    ]
    grouped: dict[str, list[str]] = collections.defaultdict(list)
    for package in sorted(set(packages)):
        grouped[licence_of(package)].append(package)  # type: ignore[index]
    for licence in LICENCES:
        if grouped.get(licence):
            lines.append(textwrap.fill(f"- {licence}: {', '.join(grouped[licence])}", width=96, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False))
    lines += [
        "",
        "These data files are derived from those catalogs and are distributed under the same terms;",
        "they are not covered by this repository's MIT licence.",
        "",
        "Use",
        "---",
        recipe.use.rstrip("\n"),
    ]
    return "\n".join(lines) + "\n"


def manifest(
    recipe: Recipe,
    debs: list[Path],
    catalogs: list[Catalog],
    kept: dict[str, int],
    splits: dict[str, list[tuple[str, str]]],
) -> str:
    lines = [
        f"# {recipe.name}: English→German pairs from Debian's German translation catalogs.",
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


def split_pairs(chosen: dict[str, str], recipe: Recipe) -> dict[str, list[tuple[str, str]]]:
    """The pairs of each split; inside a split ordered by hash, so neighbouring lines come from different programs."""
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "valid": [], "test": []}
    for en in sorted(chosen, key=lambda s: hashlib.sha256(s.encode("utf-8")).digest()):
        splits[split_of(en, recipe)].append((en, chosen[en]))
    return splits


def write_splits(splits: dict[str, list[tuple[str, str]]], out: Path) -> None:
    """``{split}.en.gz`` and ``{split}.de.gz`` for each split: fairseq's layout, gzipped."""
    out.mkdir(parents=True, exist_ok=True)
    for split, pairs in splits.items():
        write_gzip(out / f"{split}.en.gz", [en for en, _ in pairs])
        write_gzip(out / f"{split}.de.gz", [de for _, de in pairs])


def build(debs: list[Path], out: Path, recipe: Recipe = RECIPES["quickstart"]) -> dict[str, int]:
    text = notice(recipe, [deb_field(deb, "Package") for deb in debs])  # before the slow part: it may fail
    with tempfile.TemporaryDirectory(prefix="gettext_en_de_") as tmp:
        catalogs = read_catalogs(debs, Path(tmp))
    if not catalogs:
        sys.exit(f"no German catalogs (…/{LANGUAGE}/LC_*/*.mo) in the given .deb files")
    chosen, kept = choose(catalogs, recipe.filters)
    splits = split_pairs(chosen, recipe)
    write_splits(splits, out)
    (out / "MANIFEST").write_text(manifest(recipe, debs, catalogs, kept, splits), encoding="utf-8")
    (out / "NOTICE").write_text(text, encoding="utf-8")
    return {split: len(pairs) for split, pairs in splits.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--corpus", choices=sorted(RECIPES), default="quickstart", help="which corpus to build (default: quickstart)"
    )
    parser.add_argument("--debs", type=Path, help="a folder of .deb files to read instead of downloading")
    parser.add_argument("--out", type=Path, help="output folder (default: src/skipln/resources/<corpus name>)")
    args = parser.parse_args(argv)
    recipe = RECIPES[args.corpus]
    out = args.out or recipe.default_out
    for tool in ("dpkg-deb",) + (() if args.debs else ("apt-get",)):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: this script runs on Debian or Ubuntu (or pass --debs on a system with dpkg-deb)")
    with tempfile.TemporaryDirectory(prefix="gettext_debs_") as tmp:
        folder = args.debs
        if folder is None:
            folder = Path(tmp)
            download(recipe.packages, folder)
        debs = sorted(folder.glob("*.deb"))
        if not debs:
            sys.exit(f"no .deb files in {folder}")
        counts = build(debs, out, recipe)
    print(f"wrote {out}: " + ", ".join(f"{split} {n} pairs" for split, n in counts.items()))


if __name__ == "__main__":
    main()

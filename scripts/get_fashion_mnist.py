#!/usr/bin/env python3
"""Put Fashion-MNIST where torchvision's ``FashionMNIST`` reads it, from Debian's package, offline.

Debian's ``dataset-fashion-mnist`` package (MIT, ~31 MB) holds the 70,000 images of
Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) as the four gzipped IDX files of the original
release. torchvision reads them uncompressed from ``<data_dir>/FashionMNIST/raw/``. This
script installs the package if it is missing (``apt-get update`` first; needs root, or sudo),
checks the installed files against the package's own md5 sums (``dpkg --verify``; Debian
recompressed the archives, so their bytes differ from the original release's while the images
are the same), unpacks them there, and loads both splits to check the 60,000 + 10,000 images::

    sudo python scripts/get_fashion_mnist.py data      # or as root; then:
    python main.py fit --config configs/resnet/fashion_mnist_resnet20.yaml --data.init_args.data_dir data

    # the four .gz files of the original release (checked against torchvision's md5 sums), no apt:
    python scripts/get_fashion_mnist.py data --source path/to/gz/files/

Running it again is harmless: it unpacks the same bytes again.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

#: The Debian package and the folder torchvision reads (``FashionMNIST.raw_folder``).
PACKAGE = "dataset-fashion-mnist"
RAW_FOLDER = Path("FashionMNIST") / "raw"


def expected_archives() -> dict[str, str]:
    """The four ``.gz`` file names and their md5 sums, as torchvision's ``FashionMNIST`` downloads them."""
    from torchvision.datasets import FashionMNIST

    return {Path(name).name: md5 for name, md5 in FashionMNIST.resources}


def package_files(package: str = PACKAGE) -> list[Path]:
    """The files an installed Debian package put on disk (``dpkg -L``); none when it is not installed."""
    listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    if listing.returncode != 0:
        return []
    return [Path(line) for line in listing.stdout.splitlines() if line.strip()]


def install_package(package: str = PACKAGE) -> None:
    """``apt-get update`` and ``apt-get install -y package``, as root or through sudo."""
    if shutil.which("apt-get") is None:
        sys.exit("error: apt-get not found: this is not Debian/Ubuntu; pass --source with the four Fashion-MNIST .gz files")
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            sys.exit(f"error: installing {package} needs root: run this script as root, or `apt-get install {package}` first")
        prefix = ["sudo"]
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", package]):
        print("+", " ".join(prefix + command), flush=True)
        subprocess.run(prefix + command, check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def find_archives(candidates: list[Path], names: dict[str, str]) -> dict[str, Path]:
    """The path of each expected ``.gz`` among ``candidates`` (matched by file name)."""
    found = {path.name: path for path in candidates if path.name in names and path.is_file()}
    missing = sorted(set(names) - set(found))
    if missing:
        raise FileNotFoundError(f"missing Fashion-MNIST archive(s): {', '.join(missing)}")
    return found


def md5_of(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - a checksum against torchvision's list, not security
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_package(package: str = PACKAGE) -> None:
    """``dpkg --verify``: the installed files still have the md5 sums the package recorded."""
    check = subprocess.run(["dpkg", "--verify", package], capture_output=True, text=True, check=False)
    if check.returncode != 0 or check.stdout.strip():
        raise ValueError(f"dpkg --verify {package} reports changed files: {check.stdout.strip() or check.stderr.strip()}; reinstall it (apt-get install --reinstall {package})")


def verify_release(archives: dict[str, Path], names: dict[str, str]) -> None:
    """Each archive has the md5 of the original release (the sums torchvision checks its downloads with)."""
    for name, path in sorted(archives.items()):
        if (digest := md5_of(path)) != names[name]:
            raise ValueError(f"{path}: md5 {digest} is not the Fashion-MNIST release's {names[name]} (a corrupt or other file)")


def unpack(archives: dict[str, Path], data_dir: Path) -> list[Path]:
    """Gunzip each archive into ``data_dir/FashionMNIST/raw/`` (via a temporary file)."""
    target = data_dir / RAW_FOLDER
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, path in sorted(archives.items()):
        out = target / name.removesuffix(".gz")
        partial = out.with_name(out.name + ".partial")
        with gzip.open(path, "rb") as source, partial.open("wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
        partial.replace(out)  # a reader never sees a half-written file
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?", default="data", type=Path, help="the data module's data_dir (default: data)")
    parser.add_argument("--source", type=Path, help="a folder with the four .gz files, instead of Debian's package")
    args = parser.parse_args(argv)

    names = expected_archives()
    if args.source is not None:
        candidates = sorted(args.source.iterdir()) if args.source.is_dir() else []
    else:
        candidates = package_files()
        if not any(path.name in names for path in candidates):
            install_package()
            candidates = package_files()
    try:
        archives = find_archives(candidates, names)
        if args.source is not None:
            verify_release(archives, names)
        else:
            verify_package()
        written = unpack(archives, args.data_dir)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    for path in written:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")

    from torchvision.datasets import FashionMNIST

    train = FashionMNIST(str(args.data_dir), train=True)
    test = FashionMNIST(str(args.data_dir), train=False)
    if (len(train), len(test)) != (60_000, 10_000):
        sys.exit(f"error: read {len(train)} training and {len(test)} test images, expected 60,000 and 10,000")
    print(f"Fashion-MNIST in {args.data_dir / 'FashionMNIST'}: {len(train):,} training and {len(test):,} test images, "
          f"{len(train.classes)} classes; use --data.init_args.data_dir {args.data_dir}")


if __name__ == "__main__":
    main()

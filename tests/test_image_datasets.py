"""Specification of ImageDataModule: torchvision data sets by name (Fashion-MNIST from IDX files) and image folders."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image

from skipln.data.images import ImageDataModule, channel_statistics, declared_files, resolve_dataset
from skipln.data.resumable import EpochSampler, ResumableDataLoader
from skipln.data.sharding import UnpaddedShardSampler
from skipln.errors import ConfigError, DataError
from skipln_test_support import script_module

TRAIN, TEST = 40, 12


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """IDX3: magic 2051, count, rows, columns (big-endian int32), then the uint8 pixels."""
    path.write_bytes(struct.pack(">4i", 2051, *images.shape) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """IDX1: magic 2049, count, then one uint8 label each."""
    path.write_bytes(struct.pack(">2i", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


@pytest.fixture
def fashion_dir(tmp_path: Path) -> Path:
    """A tiny Fashion-MNIST in torchvision's layout: 40 training and 12 test 28×28 images."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", TRAIN), ("t10k", TEST)):
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 28, 28)))
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, size=n))
    return tmp_path


def fashion(data_dir: Path, **kwargs: object) -> ImageDataModule:
    return ImageDataModule("FashionMNIST", data_dir=str(data_dir), val_size=8, num_workers=0, batch_size=4, **kwargs)  # type: ignore[arg-type]


def write_png_folder(root: Path, classes: dict[str, int], mode: str = "RGB", size: tuple[int, int] = (6, 6), seed: int = 0) -> Path:
    """``root/<class>/<i>.png``: ``classes[name]`` random images of each class."""
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
            Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def folder_dir(tmp_path: Path) -> Path:
    write_png_folder(tmp_path / "pets" / "train", {"cat": 6, "dog": 6, "fox": 6})
    write_png_folder(tmp_path / "pets" / "test", {"cat": 2, "dog": 2, "fox": 2}, seed=1)
    return tmp_path / "pets"


def folder(data_dir: Path, **kwargs: object) -> ImageDataModule:
    return ImageDataModule("ImageFolder", data_dir=str(data_dir), val_size=3, num_workers=0, batch_size=4, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- torchvision by name


def test_fashion_mnist_reads_an_idx_folder_as_one_channel_images_of_ten_classes(fashion_dir: Path) -> None:
    dm = fashion(fashion_dir)
    assert (dm.num_classes, dm.in_channels, dm.name) == (10, 1, "fashionmnist")
    assert dm.classes[0] == "T-shirt/top"
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (TRAIN - 8, 8, TEST)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 1, 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.int64


def test_dataset_names_match_without_regard_to_case() -> None:
    assert resolve_dataset("fashionmnist") == "FashionMNIST"
    assert resolve_dataset("cifar10") == "CIFAR10"
    assert resolve_dataset("imagefolder") == "ImageFolder"


def test_an_unknown_dataset_name_is_refused_with_the_closest_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'FashonMNIST' \(did you mean 'FashionMNIST'"):
        ImageDataModule("FashonMNIST")


def test_a_missing_data_set_names_the_folder_download_and_the_offline_script(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"FashionMNIST not found.*download: true.*scripts/get_fashion_mnist.py"):
        _ = fashion(tmp_path).num_classes


def test_the_files_torchvision_checks_are_known_where_its_class_lists_them() -> None:
    files = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
    assert declared_files(torchvision.datasets.CIFAR10) == ("cifar-10-batches-py", files)
    assert declared_files(torchvision.datasets.CIFAR100) == ("cifar-100-python", ("train", "test", "meta"))
    assert declared_files(torchvision.datasets.STL10)[0] == "stl10_binary"  # type: ignore[index]
    assert declared_files(torchvision.datasets.FashionMNIST) is None


def test_missing_declared_files_are_named_with_the_archive_to_unpack(tmp_path: Path) -> None:
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "meta").write_bytes(b"")
    with pytest.raises(DataError) as error:
        _ = ImageDataModule("CIFAR100", data_dir=str(tmp_path)).num_classes
    message = str(error.value)
    assert message.startswith("ImageDataModule: CIFAR100 not found")
    assert f"{tmp_path / 'cifar-100-python'}/ with train, test, meta" in message
    assert "missing: train, test" in message
    assert f"cifar-100-python.tar.gz, unpacked into {tmp_path}/" in message and "download: true" in message


def test_declared_files_that_fail_torchvision_s_check_are_reported_corrupt(tmp_path: Path) -> None:
    (tmp_path / "cifar-100-python").mkdir()
    for name in ("train", "test", "meta"):
        (tmp_path / "cifar-100-python" / name).write_bytes(b"not CIFAR")
    with pytest.raises(DataError, match=r"CIFAR100 at .*cifar-100-python/ is corrupt or incomplete.*fresh copy.*download: true"):
        _ = ImageDataModule("CIFAR100", data_dir=str(tmp_path)).num_classes


def test_validation_is_held_out_of_the_training_split_by_seed(fashion_dir: Path) -> None:
    def split(seed: int) -> list[int]:
        dm = fashion(fashion_dir, seed=seed)
        dm.setup("fit")
        return list(dm.val_set.dataset.indices)

    assert split(0) == split(0) != split(1)
    dm = fashion(fashion_dir)
    dm.setup("fit")
    assert sorted(dm.val_set.dataset.indices + dm.train_set.dataset.indices) == list(range(TRAIN))


def test_val_size_that_leaves_no_training_images_is_refused(fashion_dir: Path) -> None:
    with pytest.raises(ConfigError, match="leaves no training images"):
        ImageDataModule("FashionMNIST", data_dir=str(fashion_dir), val_size=TRAIN).setup("fit")


def test_the_loaders_are_resumable_for_training_and_unpadded_for_evaluation(fashion_dir: Path) -> None:
    dm = fashion(fashion_dir)
    dm.setup("fit")
    dm.setup("test")
    train = dm.train_dataloader()
    assert isinstance(train, ResumableDataLoader) and isinstance(train.sampler, EpochSampler)
    assert isinstance(dm.val_dataloader().sampler, UnpaddedShardSampler)
    assert isinstance(dm.test_dataloader().sampler, UnpaddedShardSampler)


def test_training_images_are_augmented_and_evaluation_images_are_not(fashion_dir: Path) -> None:
    dm = fashion(fashion_dir, crop_padding=2, horizontal_flip=True)
    dm.setup("fit")
    torch.manual_seed(0)
    assert any(not torch.equal(dm.train_set[i][0], dm.train_set[i][0]) for i in range(5))
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])


def test_augment_false_makes_training_images_deterministic(fashion_dir: Path) -> None:
    dm = fashion(fashion_dir, augment=False)
    dm.setup("fit")
    assert torch.equal(dm.train_set[0][0], dm.train_set[0][0])


# --------------------------------------------------------------------------- normalisation


def test_statistics_are_computed_on_the_training_images_when_not_given(fashion_dir: Path) -> None:
    dm = fashion(fashion_dir, augment=False)
    dm.setup("fit")
    raw = dm._split("train").data[dm.train_set.dataset.indices].double() / 255  # noqa: SLF001 - the images as written
    assert dm.mean == pytest.approx([raw.mean().item()], abs=1e-6)
    assert dm.std == pytest.approx([raw.std(unbiased=False).item()], abs=1e-6)
    normalized = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])
    assert normalized.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert normalized.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_statistics_use_at_most_stats_images_training_images(fashion_dir: Path) -> None:
    few = fashion(fashion_dir, stats_images=5)
    few.setup("fit")
    every = fashion(fashion_dir)
    every.setup("fit")
    assert few.mean != every.mean


def test_given_statistics_are_used_as_they_are(fashion_dir: Path) -> None:
    dm = fashion(fashion_dir, augment=False, mean=[0.5], std=[0.25])
    dm.setup("fit")
    raw = dm._split("train").data[dm.train_set.dataset.indices[0]].float() / 255  # noqa: SLF001
    assert torch.allclose(dm.train_set[0][0][0], (raw - 0.5) / 0.25, atol=1e-6)
    assert (dm.mean, dm.std) == ([0.5], [0.25])


def test_mean_without_std_is_refused() -> None:
    with pytest.raises(ConfigError, match="give both 'mean' and 'std'"):
        ImageDataModule("FashionMNIST", mean=[0.5])


def test_statistics_with_the_wrong_number_of_channels_are_refused(fashion_dir: Path) -> None:
    with pytest.raises(ConfigError, match="1-channel images but mean/std give 3/3 values"):
        fashion(fashion_dir, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2]).setup("fit")


def test_channel_statistics_weigh_every_pixel_the_same() -> None:
    images = [torch.zeros(1, 1, 1), torch.ones(1, 1, 3)]  # 1 pixel at 0, 3 pixels at 1
    mean, std = channel_statistics([(image, 0) for image in images], lambda x: x, [0, 1])  # type: ignore[arg-type]
    assert mean == pytest.approx([0.75]) and std == pytest.approx([(0.75 - 0.75**2) ** 0.5])


# --------------------------------------------------------------------------- image folders


def test_an_image_folder_takes_its_classes_and_channels_from_the_files(folder_dir: Path) -> None:
    dm = folder(folder_dir)
    assert (dm.classes, dm.num_classes, dm.in_channels, dm.name) == (["cat", "dog", "fox"], 3, 3, "pets")
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (15, 3, 6)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 6, 6)


def test_a_grey_image_folder_has_one_channel(tmp_path: Path) -> None:
    write_png_folder(tmp_path / "train", {"a": 4, "b": 4}, mode="L")
    write_png_folder(tmp_path / "test", {"a": 1, "b": 1}, mode="L")
    dm = folder(tmp_path)
    dm.setup("fit")
    assert dm.in_channels == 1 and dm.train_set[0][0].shape == (1, 6, 6)


def test_an_alpha_channel_is_dropped(tmp_path: Path) -> None:
    write_png_folder(tmp_path / "train", {"a": 4, "b": 4}, mode="RGBA")
    write_png_folder(tmp_path / "test", {"a": 1, "b": 1}, mode="RGBA")
    dm = folder(tmp_path)
    dm.setup("fit")
    assert dm.in_channels == 3 and dm.train_set[0][0].shape == (3, 6, 6)


def test_image_size_resizes_images_of_different_sizes_to_one_square(tmp_path: Path) -> None:
    write_png_folder(tmp_path / "train", {"a": 3}, size=(8, 6))
    write_png_folder(tmp_path / "train", {"b": 3}, size=(5, 9), seed=2)
    write_png_folder(tmp_path / "test", {"a": 1, "b": 1})
    dm = folder(tmp_path, image_size=4)
    dm.setup("fit")
    assert {tuple(dm.train_set[i][0].shape) for i in range(len(dm.train_set))} == {(3, 4, 4)}


def test_a_missing_image_folder_names_the_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no folder .*/train/: an ImageFolder data_dir must hold train/ and test/"):
        _ = folder(tmp_path).num_classes


def test_test_classes_must_match_the_training_classes(tmp_path: Path) -> None:
    write_png_folder(tmp_path / "train", {"a": 4, "b": 4})
    write_png_folder(tmp_path / "test", {"a": 1, "c": 1})
    with pytest.raises(DataError, match="differ from those of train/"):
        folder(tmp_path).setup("test")


def test_an_image_folder_cannot_be_downloaded() -> None:
    with pytest.raises(ConfigError, match="cannot be downloaded"):
        ImageDataModule("ImageFolder", download=True)


# --------------------------------------------------------------------------- the offline script


@pytest.fixture
def script() -> Iterator[ModuleType]:
    with script_module("get_fashion_mnist.py", "get_fashion_mnist") as module:
        yield module


def test_the_script_unpacks_the_archives_where_torchvision_reads_them(tmp_path: Path, script: ModuleType) -> None:
    sources = tmp_path / "debian"
    sources.mkdir()
    archives = {}
    for name in script.expected_archives():  # type: ignore[attr-defined]
        archives[name] = sources / name
        archives[name].write_bytes(gzip.compress(name.encode()))
    written = script.unpack(archives, tmp_path / "data")  # type: ignore[attr-defined]
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert sorted(written) == sorted(raw / name.removesuffix(".gz") for name in archives)
    assert (raw / "train-images-idx3-ubyte").read_bytes() == b"train-images-idx3-ubyte.gz"


def test_the_script_refuses_archives_that_are_not_the_release(tmp_path: Path, script: ModuleType) -> None:
    names = script.expected_archives()  # type: ignore[attr-defined]
    for name in names:
        (tmp_path / name).write_bytes(gzip.compress(b"not fashion"))
    with pytest.raises(SystemExit, match="is not the Fashion-MNIST release's"):
        script.main([str(tmp_path / "data"), "--source", str(tmp_path)])  # type: ignore[attr-defined]

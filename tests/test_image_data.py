"""Specification of the image data modules: CIFAR-10/100 (ImageDataModule with He et al.'s recipe) from a local folder, and scikit-learn's digits."""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar

from conftest import CONFIGS, DEFAULTS
from skipln.cli import cli_main
from skipln.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from skipln.data.digits import DigitsDataModule
from skipln.data.images import ImageDataModule
from skipln.data.sharding import UnpaddedShardSampler
from skipln.errors import DataError

#: Images per file of the fake CIFAR folders (the real ones hold 10,000).
PER_FILE = 12


def _write_batch(path: Path, n: int, label_key: str, num_classes: int, rng: np.random.Generator) -> None:
    entry = {
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key: rng.integers(0, num_classes, size=n).tolist(),
    }
    path.write_bytes(pickle.dumps(entry))


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> Path:
    """A tiny folder in CIFAR-10's python format: 5 × 12 training images, 12 test images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        _write_batch(root / f"data_batch_{i}", PER_FILE, "labels", 10, rng)
    _write_batch(root / "test_batch", PER_FILE, "labels", 10, rng)
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    return tmp_path


@pytest.fixture
def cifar100_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    _write_batch(root / "train", 5 * PER_FILE, "fine_labels", 100, rng)
    _write_batch(root / "test", PER_FILE, "fine_labels", 100, rng)
    (root / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"class{i}" for i in range(100)]}))
    return tmp_path


@pytest.fixture
def no_md5_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake files cannot match CIFAR's md5 sums; the project's own code always checks them."""
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)


def test_cifar10_loads_a_local_folder_offline(cifar10_dir: Path, no_md5_check: None) -> None:
    dm = CIFAR10DataModule(data_dir=str(cifar10_dir), download=False, batch_size=8, val_size=10, num_workers=0)
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (5 * PER_FILE - 10, 10, PER_FILE)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (8,) and labels.dtype == torch.int64
    assert (dm.num_classes, dm.in_channels, dm.name) == (10, 3, "cifar10")


def test_cifar100_reads_the_fine_labels(cifar100_dir: Path, no_md5_check: None) -> None:
    dm = CIFAR100DataModule(data_dir=str(cifar100_dir), val_size=10, num_workers=0)
    dm.setup("fit")
    assert len(dm.train_set) == 5 * PER_FILE - 10
    _, label = dm.val_set[0]
    assert 0 <= label < 100
    assert (dm.num_classes, dm.name) == (100, "cifar100")


def test_images_are_normalized_with_the_data_set_statistics(cifar10_dir: Path, no_md5_check: None) -> None:
    dm = CIFAR10DataModule(data_dir=str(cifar10_dir), val_size=10, num_workers=0)
    dm.setup("test")
    image, _ = dm.test_set[0]
    raw, _ = torchvision.datasets.CIFAR10(str(cifar10_dir), train=False)[0]
    pixels = torch.tensor(np.array(raw), dtype=torch.float32).permute(2, 0, 1) / 255
    expected = (pixels - torch.tensor(dm.mean).view(3, 1, 1)) / torch.tensor(dm.std).view(3, 1, 1)
    assert torch.allclose(image, expected, atol=1e-5)


def test_missing_folder_error_names_the_expected_path_and_download(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError) as error:
        dm.setup("fit")
    message = str(error.value)
    assert f"{tmp_path / 'cifar-10-batches-py'}/" in message
    assert "data_batch_1" in message and "test_batch" in message and "batches.meta" in message
    assert "download: true" in message


def test_missing_file_is_named(cifar10_dir: Path, no_md5_check: None) -> None:
    (cifar10_dir / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing: data_batch_3"):
        CIFAR10DataModule(data_dir=str(cifar10_dir)).setup("fit")


def test_corrupt_files_fail_the_md5_check_with_a_clear_error(cifar10_dir: Path) -> None:
    with pytest.raises(DataError, match="corrupt.*download: true"):
        CIFAR10DataModule(data_dir=str(cifar10_dir), val_size=10).setup("fit")


def test_validation_split_is_deterministic_by_seed(cifar10_dir: Path, no_md5_check: None) -> None:
    def split(seed: int) -> tuple[list[int], list[int]]:
        dm = CIFAR10DataModule(data_dir=str(cifar10_dir), val_size=10, seed=seed, num_workers=0)
        dm.setup("fit")
        return list(dm.train_set.dataset.indices), list(dm.val_set.dataset.indices)

    train, val = split(0)
    assert split(0) == (train, val)
    assert split(1)[1] != val
    assert sorted(train + val) == list(range(5 * PER_FILE))


def test_validation_images_are_not_augmented(cifar10_dir: Path, no_md5_check: None) -> None:
    dm = CIFAR10DataModule(data_dir=str(cifar10_dir), val_size=10, num_workers=0)
    dm.setup("fit")
    torch.manual_seed(0)
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])
    assert not torch.equal(dm.train_set[0][0], dm.train_set[0][0])


def test_augment_false_makes_training_images_deterministic(cifar10_dir: Path, no_md5_check: None) -> None:
    dm = CIFAR10DataModule(data_dir=str(cifar10_dir), val_size=10, num_workers=0, augment=False)
    dm.setup("fit")
    assert torch.equal(dm.train_set[0][0], dm.train_set[0][0])


@pytest.mark.parametrize("val_size", [0, 50_000, -1])
def test_val_size_out_of_range_is_refused(val_size: int) -> None:
    with pytest.raises(ValueError, match="'val_size'"):
        CIFAR10DataModule(val_size=val_size)


def test_val_size_larger_than_the_local_training_set_is_refused(cifar10_dir: Path, no_md5_check: None) -> None:
    with pytest.raises(ValueError, match="leaves no training images"):
        CIFAR10DataModule(data_dir=str(cifar10_dir), val_size=5 * PER_FILE).setup("fit")


def test_cifar10_is_image_data_module_with_he_et_al_s_recipe(cifar10_dir: Path, no_md5_check: None) -> None:
    """One code path: the same split and, under one random state, the same augmented and normalized images."""
    preset = CIFAR10DataModule(data_dir=str(cifar10_dir), val_size=10, seed=3, num_workers=0)
    general = ImageDataModule(
        "CIFAR10", data_dir=str(cifar10_dir), val_size=10, seed=3, num_workers=0, crop_padding=4, horizontal_flip=True,
        mean=[0.4914, 0.4822, 0.4465], std=[0.2470, 0.2435, 0.2616],
    )  # fmt: skip
    assert isinstance(preset, ImageDataModule)
    for dm in (preset, general):
        dm.setup("fit")
    assert preset.val_set.dataset.indices == general.val_set.dataset.indices
    images = []
    for dm in (preset, general):
        torch.manual_seed(0)
        images.append(torch.stack([dm.train_set[i][0] for i in range(8)]))
    assert torch.equal(*images)


def test_the_hyperparameters_are_the_cifar_modules_own_arguments(cifar10_dir: Path) -> None:
    """What a checkpoint stores rebuilds the module; the arguments it fixes (dataset, mean, …) are not among them."""
    dm = CIFAR10DataModule(data_dir=str(cifar10_dir), val_size=10, seed=2, num_workers=0)
    assert dict(dm.hparams) == {
        "data_dir": str(cifar10_dir), "download": False, "batch_size": 128, "val_size": 10, "seed": 2, "num_workers": 0, "augment": True,
    }  # fmt: skip
    assert CIFAR10DataModule(**dm.hparams).hparams == dm.hparams


@pytest.mark.slow
def test_the_cli_links_cifar_100_s_classes_and_channels_into_the_model(cifar100_dir: Path, no_md5_check: None, workdir: Path) -> None:
    cli = cli_main(
        ["validate", f"--config={CONFIGS / 'resnet' / 'cifar100_resnet20.yaml'}", f"--data.init_args.data_dir={cifar100_dir}",
         "--data.init_args.val_size=10", "--data.init_args.batch_size=8", "--data.init_args.num_workers=0",
         "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"],
        default_config_files=[DEFAULTS],
    )  # fmt: skip
    assert cli is not None
    assert (cli.datamodule.num_classes, cli.datamodule.in_channels) == (100, 3)
    assert (cli.model.num_classes, cli.model.net.num_classes, cli.model.net.fc.out_features, cli.model.net.in_channels) == (100, 100, 100, 3)


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=16)
    dm.setup("fit")
    return dm


def test_processes_that_download_at_once_take_turns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every process of a torchrun/SLURM job downloads at its first question about the data; threads stand in for them.
    inside, overlapped = [0], []

    def slow_download(self: ImageDataModule, split: str, download: bool) -> list[int]:
        inside[0] += 1
        overlapped.append(inside[0] > 1)
        time.sleep(0.2)
        inside[0] -= 1
        return []

    monkeypatch.setattr(ImageDataModule, "_construct", slow_download)
    modules = [ImageDataModule("CIFAR10", data_dir=str(tmp_path / "data"), download=True) for _ in range(3)]
    threads = [threading.Thread(target=module.prepare_data) for module in modules]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(overlapped) == 6 and not any(overlapped)


def test_digits_are_one_channel_8x8_images_of_ten_classes(digits: DigitsDataModule) -> None:
    images, labels = next(iter(digits.train_dataloader()))
    assert images.shape == (16, 1, 8, 8) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() < 10
    assert (digits.num_classes, digits.in_channels, digits.name) == (10, 1, "digits")


def test_digits_split_is_60_20_20_and_covers_every_image_once(digits: DigitsDataModule) -> None:
    sizes = (len(digits.train_set), len(digits.val_set), len(digits.test_set))
    assert sizes == (1077, 360, 360)
    assert sum(sizes) == 1797


def test_digits_split_is_stratified(digits: DigitsDataModule) -> None:
    for split in (digits.train_set, digits.val_set, digits.test_set):
        share = torch.bincount(split.labels, minlength=10).float() / len(split)
        assert torch.all((share - 0.1).abs() < 0.02)


def test_digits_split_is_deterministic_by_seed(digits: DigitsDataModule) -> None:
    again = DigitsDataModule(seed=0)
    again.setup("fit")
    other = DigitsDataModule(seed=1)
    other.setup("fit")
    assert torch.equal(again.test_set.images, digits.test_set.images)
    assert not torch.equal(other.test_set.images, digits.test_set.images)


def test_digits_are_normalized_with_the_training_statistics(digits: DigitsDataModule) -> None:
    train = torch.stack([digits.val_set.transform(image) for image in digits.train_set.images])
    assert train.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert train.std().item() == pytest.approx(1.0, abs=1e-4)


def test_digits_augmentation_applies_to_training_images_only(digits: DigitsDataModule) -> None:
    torch.manual_seed(0)
    assert any(not torch.equal(digits.train_set[i][0], digits.train_set[i][0]) for i in range(5))
    assert torch.equal(digits.test_set[0][0], digits.test_set[0][0])


def test_digits_fractions_must_leave_training_images() -> None:
    with pytest.raises(ValueError, match="at least 10%"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.45)


# --------------------------------------------------------------------------- evaluation under DDP


@pytest.mark.parametrize("size", [7, 8])
def test_evaluation_shards_cover_every_example_exactly_once_without_padding(size: int) -> None:
    shards = [list(UnpaddedShardSampler(range(size), num_replicas=2, rank=rank)) for rank in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(size))
    assert [len(UnpaddedShardSampler(range(size), num_replicas=2, rank=rank)) for rank in (0, 1)] == [len(s) for s in shards]


def test_the_evaluation_loaders_use_the_unpadded_shard_sampler(digits: DigitsDataModule) -> None:
    # A DistributedSampler already, so Lightning does not put its padding one in its place
    # (tests/test_ddp.py shows that under two processes).
    assert isinstance(digits.val_dataloader().sampler, UnpaddedShardSampler)
    assert isinstance(digits.test_dataloader().sampler, UnpaddedShardSampler)
    assert list(digits.val_dataloader().sampler) == list(range(len(digits.val_set)))

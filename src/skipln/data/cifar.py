"""CIFAR-10 and CIFAR-100 on torchvision's datasets, with He et al.'s augmentation and a held-out validation split.

The files are CIFAR's "python version" (https://www.cs.toronto.edu/~kriz/cifar.html),
unpacked under ``data_dir``: ``cifar-10-batches-py/`` or ``cifar-100-python/``. With
``download: true`` torchvision fetches and verifies them once (on the first process only);
otherwise they must already be there.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import Dataset, Subset
from torchvision import datasets
from torchvision.transforms import v2

from skipln.data.image_loaders import ImageLoaders, Transformed, pin_on_gpu
from skipln.errors import ConfigError, DataError
from skipln.validation import is_int


class CIFARDataModule(ImageLoaders, LightningDataModule):
    """Shared logic of the CIFAR data modules; subclasses say which data set and its statistics.

    The 50,000 training images are split once, by ``seed``, into ``50,000 − val_size`` for
    training and ``val_size`` for validation (He et al. 2016 tuned on a 45k/5k split); the
    official 10,000 test images are the test set. Training images are padded by 4 pixels,
    randomly cropped back to 32×32 and flipped horizontally (``augment``); validation and
    test images are only normalized, with the training set's per-channel mean and std.

    Args:
        data_dir: folder that holds (or will hold) the data set's folder.
        download: fetch the files into ``data_dir`` if they are missing.
        batch_size: images per batch, per process.
        val_size: training images held out for validation, 1 ≤ val_size < 50,000.
        seed: seed of the train/validation split (independent of the run's seed).
        num_workers: data-loading worker processes, per process.
        augment: pad-crop-flip augmentation of the training images.
    """

    #: torchvision's class for the data set.
    dataset_class: ClassVar[type[datasets.CIFAR10]]
    #: The data set's folder inside ``data_dir`` and the files it must hold.
    folder: ClassVar[str]
    files: ClassVar[tuple[str, ...]]
    display_name: ClassVar[str]
    name: ClassVar[str]
    num_classes: ClassVar[int]
    in_channels: ClassVar[int] = 3
    train_size: ClassVar[int] = 50_000
    #: Per-channel mean and standard deviation of the training images (pixels scaled to [0, 1]).
    mean: ClassVar[tuple[float, float, float]]
    std: ClassVar[tuple[float, float, float]]

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        batch_size: int = 128,
        val_size: int = 5000,
        seed: int = 0,
        num_workers: int = 2,
        augment: bool = True,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if not is_int(batch_size) or batch_size < 1:
            raise ConfigError(f"{owner}: 'batch_size' must be an integer >= 1, got {batch_size!r}")
        if not is_int(val_size) or not 1 <= val_size < self.train_size:
            raise ConfigError(
                f"{owner}: 'val_size' must be an integer in [1, {self.train_size}), the training images held out "
                f"for validation; got {val_size!r}"
            )
        if not is_int(num_workers) or num_workers < 0:
            raise ConfigError(f"{owner}: 'num_workers' must be an integer >= 0, got {num_workers!r}")
        self.save_hyperparameters(logger=False)
        self.data_dir = Path(data_dir)
        self.download = download
        self.batch_size = batch_size
        self.val_size = val_size
        self.seed = seed
        self.num_workers = num_workers
        self.augment = augment
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def root(self) -> Path:
        """The folder that holds the data set's files."""
        return self.data_dir / self.folder

    def train_transform(self) -> v2.Transform:
        steps: list[v2.Transform] = [v2.ToImage()]
        if self.augment:
            steps += [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]
        return v2.Compose([*steps, *self._to_normalized_tensor()])

    def eval_transform(self) -> v2.Transform:
        return v2.Compose([v2.ToImage(), *self._to_normalized_tensor()])

    def _to_normalized_tensor(self) -> list[v2.Transform]:
        return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(self.mean), list(self.std))]

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                self.dataset_class(str(self.data_dir), train=train, download=True)

    def setup(self, stage: str | None = None) -> None:
        self._check_files()
        if stage in (None, "fit", "validate") and self.train_set is None:
            train = self._load(train=True)
            if len(train) <= self.val_size:
                raise ConfigError(
                    f"{type(self).__name__}: val_size={self.val_size} leaves no training images "
                    f"(the training set at {self.root}/ has {len(train)})"
                )
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed)).tolist()
            self.val_set = Transformed(Subset(train, order[: self.val_size]), self.eval_transform())
            self.train_set = Transformed(Subset(train, order[self.val_size :]), self.train_transform())
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = Transformed(self._load(train=False), self.eval_transform())

    def _check_files(self) -> None:
        missing = [f for f in self.files if not (self.root / f).is_file()]
        if not missing:
            return
        found = "the folder does not exist" if not self.root.is_dir() else f"missing: {', '.join(missing)}"
        raise DataError(
            f"{self.display_name} not found: expected the folder {self.root.absolute()}/ with "
            f"{', '.join(self.files)} (the python version from https://www.cs.toronto.edu/~kriz/cifar.html, "
            f"unpacked); {found}. Put the files there, or set `download: true` (data.init_args.download) "
            f"to fetch them."
        )

    def _load(self, train: bool) -> datasets.CIFAR10:
        try:
            return self.dataset_class(str(self.data_dir), train=train, download=False)
        except RuntimeError as error:
            # torchvision checks every file's md5 even without a download.
            raise DataError(
                f"{self.display_name} at {self.root.absolute()}/ is corrupt or incomplete (torchvision: {error}). Replace the "
                f"files with a fresh copy, or delete the folder and set `download: true` (data.init_args.download)."
            ) from error

    def pin_memory(self) -> bool:
        """Pin batches in memory when training on a GPU."""
        return pin_on_gpu(self.trainer)


class CIFAR10DataModule(CIFARDataModule):
    """CIFAR-10: 60,000 32×32 colour images in 10 classes (Krizhevsky 2009). See :class:`CIFARDataModule`."""

    dataset_class = datasets.CIFAR10
    folder = "cifar-10-batches-py"
    files = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
    display_name = "CIFAR-10"
    name = "cifar10"
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)


class CIFAR100DataModule(CIFARDataModule):
    """CIFAR-100: 60,000 32×32 colour images in 100 fine classes (Krizhevsky 2009). See :class:`CIFARDataModule`."""

    dataset_class = datasets.CIFAR100
    folder = "cifar-100-python"
    files = ("train", "test", "meta")
    display_name = "CIFAR-100"
    name = "cifar100"
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)


__all__ = ["CIFAR100DataModule", "CIFAR10DataModule", "CIFARDataModule", "Transformed"]

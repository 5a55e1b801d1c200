"""Handwritten digits that ship with scikit-learn: the image data set that needs no download.

``sklearn.datasets.load_digits`` holds 1,797 real 8×8 grey-scale digits (UCI "Optical
Recognition of Handwritten Digits", 16 grey levels), 10 classes, inside the scikit-learn
wheel — enough for a quickstart that trains a real ResNet to a meaningful accuracy on a CPU
in minutes, for tests, and for CI.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from skipln.data.image_loaders import ImageLoaders
from skipln.errors import ConfigError
from skipln.validation import is_int

#: The data set's grey levels run from 0 to 16.
_MAX_GREY_LEVEL = 16.0


class ImageTensors(Dataset):
    """Images held as one tensor ``(N, C, H, W)``, with ``transform`` applied per image."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor]) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.transform(self.images[index]), self.labels[index]


class DigitsDataModule(ImageLoaders, LightningDataModule):
    """scikit-learn's 8×8 digits, split train/validation/test, stratified by class.

    Pixels are scaled to [0, 1], then normalized with the training split's mean and std.
    Training images are padded by one (blank) pixel and randomly cropped back to 8×8
    (``augment``); digits are not flipped, since a flipped digit is another symbol.

    Args:
        batch_size: images per batch, per process.
        val_fraction: fraction of all images held out for validation.
        test_fraction: fraction of all images held out for testing.
        seed: seed of the split (independent of the run's seed).
        num_workers: data-loading worker processes; 0 loads in the main process, which is
            fastest for data this small.
        augment: pad-and-crop augmentation of the training images.
    """

    name = "digits"
    num_classes = 10
    in_channels = 1
    image_size = 8

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
        augment: bool = True,
    ) -> None:
        super().__init__()
        if not is_int(batch_size) or batch_size < 1:
            raise ConfigError(f"DigitsDataModule: 'batch_size' must be an integer >= 1, got {batch_size!r}")
        for arg, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < value < 1.0:
                raise ConfigError(f"DigitsDataModule: '{arg}' must be in (0, 1), got {value!r}")
        if val_fraction + test_fraction >= 0.9:
            raise ConfigError(
                f"DigitsDataModule: val_fraction + test_fraction must leave at least 10% of the images for "
                f"training, got {val_fraction} + {test_fraction}"
            )
        if not is_int(num_workers) or num_workers < 0:
            raise ConfigError(f"DigitsDataModule: 'num_workers' must be an integer >= 0, got {num_workers!r}")
        self.save_hyperparameters(logger=False)
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.augment = augment
        self.train_set: ImageTensors | None = None
        self.val_set: ImageTensors | None = None
        self.test_set: ImageTensors | None = None
        self.mean: float | None = None
        self.std: float | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / _MAX_GREY_LEVEL
        labels = torch.as_tensor(digits.target, dtype=torch.long)
        train_idx, val_idx, test_idx = self._split(labels)
        self.mean = images[train_idx].mean().item()
        self.std = images[train_idx].std().item()
        normalize = v2.Normalize([self.mean], [self.std])
        train_transform: Callable[[Tensor], Tensor] = normalize
        if self.augment:
            # Pad before normalizing, so the border is blank paper (0) like the digits' background.
            train_transform = v2.Compose([v2.RandomCrop(self.image_size, padding=1), normalize])
        self.train_set = ImageTensors(images[train_idx], labels[train_idx], train_transform)
        self.val_set = ImageTensors(images[val_idx], labels[val_idx], normalize)
        self.test_set = ImageTensors(images[test_idx], labels[test_idx], normalize)

    def _split(self, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        y = labels.numpy()
        rest, test = train_test_split(
            np.arange(len(y)), test_size=self.test_fraction, stratify=y, random_state=self.seed
        )
        train, val = train_test_split(
            rest, test_size=self.val_fraction / (1.0 - self.test_fraction), stratify=y[rest], random_state=self.seed
        )
        return torch.from_numpy(train), torch.from_numpy(val), torch.from_numpy(test)


__all__ = ["DigitsDataModule", "ImageTensors"]

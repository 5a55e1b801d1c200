"""CIFAR-10 and CIFAR-100: :class:`~skipln.data.images.ImageDataModule` with He et al.'s recipe fixed.

The files are CIFAR's "python version" (https://www.cs.toronto.edu/~kriz/cifar.html),
unpacked under ``data_dir``: ``cifar-10-batches-py/`` or ``cifar-100-python/``. With
``download: true`` torchvision fetches and verifies them once; otherwise they must already be
there, and a missing or damaged file stops the run naming it (ImageDataModule's check).

These classes keep the arguments the configs in ``configs/resnet/`` (and the checkpoints of
their runs) give; for another augmentation or normalization use ImageDataModule with
``dataset: CIFAR10`` directly.
"""

from __future__ import annotations

import inspect
from typing import ClassVar

from skipln.data.images import ImageDataModule
from skipln.errors import ConfigError
from skipln.validation import is_int


class CIFARDataModule(ImageDataModule):
    """A CIFAR data set with He et al.'s recipe (2016a, section 4.2); subclasses say which set and its statistics.

    The 50,000 training images are split once, by ``seed``, into ``50,000 − val_size`` for
    training and ``val_size`` for validation (He et al. tuned on a 45k/5k split); the official
    10,000 test images are the test set. Training images are zero-padded by 4 pixels, randomly
    cropped back to 32×32 and flipped horizontally (``augment``); every image is normalized with
    the training set's per-channel mean and std (fixed below, not recomputed).

    Args:
        data_dir: folder that holds (or will hold) the data set's folder.
        download: fetch the files into ``data_dir`` if they are missing.
        batch_size: images per batch, per process.
        val_size: training images held out for validation, 1 ≤ val_size < 50,000.
        seed: seed of the train/validation split (independent of the run's seed).
        num_workers: data-loading worker processes, per process.
        augment: pad-crop-flip augmentation of the training images.
    """

    #: The torchvision class name (ImageDataModule's ``dataset``).
    torchvision_name: ClassVar[str]
    #: Per-channel mean and standard deviation of the 50,000 training images, pixels in [0, 1].
    channel_mean: ClassVar[tuple[float, float, float]]
    channel_std: ClassVar[tuple[float, float, float]]
    #: Training images of both CIFARs: known before the files are read, so val_size is checked at once.
    train_images: ClassVar[int] = 50_000

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
        if not is_int(val_size) or not 1 <= val_size < self.train_images:
            raise ConfigError(
                f"{type(self).__name__}: 'val_size' must be an integer in [1, {self.train_images}), the training images "
                f"held out for validation; got {val_size!r}"
            )
        super().__init__(
            self.torchvision_name,
            data_dir=data_dir,
            download=download,
            batch_size=batch_size,
            val_size=val_size,
            seed=seed,
            num_workers=num_workers,
            augment=augment,
            crop_padding=4,
            horizontal_flip=True,
            mean=list(self.channel_mean),
            std=list(self.channel_std),
        )
        # ImageDataModule's save also collected the arguments fixed here: drop them, so that the
        # hyperparameters (and a checkpoint's) are this class's arguments, which rebuild it.
        self.save_hyperparameters(logger=False, ignore=list(FIXED_ARGUMENTS))


#: ImageDataModule's arguments that the CIFAR modules fix instead of taking (dataset, crop_padding, mean, …).
FIXED_ARGUMENTS = tuple(
    name
    for name in inspect.signature(ImageDataModule.__init__).parameters
    if name not in inspect.signature(CIFARDataModule.__init__).parameters
)


class CIFAR10DataModule(CIFARDataModule):
    """CIFAR-10: 60,000 32×32 colour images in 10 classes (Krizhevsky 2009). See :class:`CIFARDataModule`."""

    torchvision_name = "CIFAR10"
    channel_mean = (0.4914, 0.4822, 0.4465)
    channel_std = (0.2470, 0.2435, 0.2616)


class CIFAR100DataModule(CIFARDataModule):
    """CIFAR-100: 60,000 32×32 colour images in 100 fine classes (Krizhevsky 2009). See :class:`CIFARDataModule`."""

    torchvision_name = "CIFAR100"
    channel_mean = (0.5071, 0.4865, 0.4409)
    channel_std = (0.2673, 0.2564, 0.2762)


__all__ = ["CIFAR100DataModule", "CIFAR10DataModule", "CIFARDataModule"]

"""The data loaders of the image data modules (digits, any torchvision data set, CIFAR among them): resumable training, unpadded evaluation.

:class:`ImageLoaders` gives a data module its four ``*_dataloader`` methods from its
``train_set``, ``val_set``, ``test_set``, ``batch_size`` and ``num_workers``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.accelerators import CUDAAccelerator
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from skipln.data.example_seeding import ExampleSeeded, KeyedEpochSampler
from skipln.data.resumable import EpochSampler, ResumableDataLoader, run_seed
from skipln.data.sharding import UnpaddedShardSampler


class Transformed(Dataset):
    """``(image, label)`` pairs of ``dataset`` with ``transform`` applied to the image.

    Lets the training and validation splits share one copy of the images in memory while
    transforming them differently.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Tensor]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.dataset[index]
        return self.transform(image), label


def pin_on_gpu(trainer: Trainer | None) -> bool:
    """Pin batches in memory when training on a GPU (before a Trainer exists: when one is visible)."""
    if trainer is not None:
        return isinstance(trainer.accelerator, CUDAAccelerator)
    return torch.cuda.is_available()


def training_loader(dataset: Dataset, *, batch_size: int, num_workers: int, pin_memory: bool) -> ResumableDataLoader:
    """Shuffled by (run seed, epoch), sharded under DDP, resumable mid-epoch: a resumed run sees the same batches.

    With worker processes each example's augmentation is drawn from (run seed, epoch, example), so
    that a resumed run augments the rest of its epoch as the uninterrupted run did (see
    :mod:`skipln.data.example_seeding`).
    """
    seed = run_seed()
    sampler = EpochSampler(dataset, shuffle=True, seed=seed)  # type: ignore[arg-type]
    if num_workers > 0:
        sampler, dataset = KeyedEpochSampler(dataset, shuffle=True, seed=seed), ExampleSeeded(dataset, seed)  # type: ignore[arg-type]
    return ResumableDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


def evaluation_loader(dataset: Dataset, *, batch_size: int, num_workers: int, pin_memory: bool) -> DataLoader:
    """In order; under DDP each example on exactly one process (no padding, unlike Lightning's default)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=UnpaddedShardSampler(dataset),  # type: ignore[arg-type]
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


class ImageLoaders:
    """The ``*_dataloader`` methods of an image data module (a mixin before ``LightningDataModule``).

    Training: :func:`training_loader`; validation, test and predict (the test split):
    :func:`evaluation_loader`. Memory is pinned where :meth:`pin_memory` says (never, unless
    overridden).
    """

    train_set: Dataset | None
    val_set: Dataset | None
    test_set: Dataset | None
    batch_size: int
    num_workers: int

    def pin_memory(self) -> bool:
        return False

    def _require(self, dataset: Dataset | None) -> Dataset:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a data loader")
        return dataset

    def _evaluation(self, dataset: Dataset | None) -> DataLoader:
        return evaluation_loader(self._require(dataset), batch_size=self.batch_size, num_workers=self.num_workers, pin_memory=self.pin_memory())

    def train_dataloader(self) -> DataLoader:
        dataset = self._require(self.train_set)
        return training_loader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, pin_memory=self.pin_memory())

    def val_dataloader(self) -> DataLoader:
        return self._evaluation(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._evaluation(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._evaluation(self.test_set)


__all__ = ["ImageLoaders", "Transformed", "evaluation_loader", "pin_on_gpu", "training_loader"]

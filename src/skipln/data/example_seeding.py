"""Augmentation in data-loader workers drawn from ``(seed, epoch, example)``: exact resume with ``num_workers > 0``.

A worker process draws its augmentations (random crops, flips) from its own random stream,
which advances with every example it loads. Which examples a worker loads depends on where the
epoch started — batches are dealt to the workers in turn — so a run resumed mid-epoch would
augment the rest of the epoch with other random numbers than the uninterrupted run, though it
sees the same batches in the same order.

Here each example seeds the worker's generators (torch, numpy, Python) from ``(run seed, epoch,
example index)`` just before it is loaded: an example's augmentation in an epoch is the same
whatever worker loads it, how many workers there are, and where the epoch was resumed.
:class:`KeyedEpochSampler` hands the epoch to the workers with each index; :class:`ExampleSeeded`
wraps the data set. In the main process (``num_workers: 0``) nothing is seeded: there the global
random state is saved in checkpoints and restored instead (:class:`skipln.resume.ResumeState`), and
a run's numbers stay those of its global stream.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from skipln.data.resumable import EpochSampler


class KeyedEpochSampler(EpochSampler):
    """:class:`EpochSampler` that yields ``(epoch, index)`` pairs, for :class:`ExampleSeeded`."""

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = int(self.epoch)
        return ((epoch, index) for index in super().__iter__())


class ExampleSeeded(Dataset):
    """``dataset[index]``, loaded in a worker after seeding it from ``(seed, epoch, index)``; key ``(epoch, index)``.

    A plain integer key (a sampler Lightning put in, e.g. for ``overfit_batches``) loads without seeding.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        epoch, index = key
        if get_worker_info() is not None:  # never reseed the main process: its stream is the run's
            # Python hashes tuples of ints the same in every process (no hash randomisation for ints).
            seed = hash((self.seed, int(epoch), int(index))) & 0x7FFF_FFFF_FFFF_FFFF
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed & 0xFFFF_FFFF)
        return self.dataset[index]


__all__ = ["ExampleSeeded", "KeyedEpochSampler"]

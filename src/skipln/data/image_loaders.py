"""The data loaders of the image data modules (CIFAR, digits): resumable training, unpadded evaluation."""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset

from skipln.data.resumable import EpochSampler, ResumableDataLoader, run_seed
from skipln.data.sharding import UnpaddedShardSampler


def training_loader(dataset: Dataset, *, batch_size: int, num_workers: int, pin_memory: bool) -> ResumableDataLoader:
    """Shuffled by (run seed, epoch), sharded under DDP, resumable mid-epoch: a resumed run sees the same batches."""
    return ResumableDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(dataset, shuffle=True, seed=run_seed()),  # type: ignore[arg-type]
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


__all__ = ["evaluation_loader", "training_loader"]

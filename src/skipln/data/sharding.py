"""Evaluation data split across processes with every example exactly once.

Lightning's default under DDP gives each evaluation loader a ``DistributedSampler``, which
pads the split with repeated examples until it divides by the number of processes: a
validation set of 361 images on 2 processes is scored as 362, one image twice. The image
data modules give their validation and test loaders :class:`UnpaddedShardSampler` instead
(a ``DistributedSampler``, so Lightning leaves it in place): rank ``r`` of ``n`` takes
examples ``r, r + n, r + 2n, …`` and the ranks' shares may differ by one. The tasks' metrics
are torchmetrics objects synchronised once at the end of the epoch, so ranks with one batch
more or less need no padding to agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch.distributed as dist
from torch.utils.data import DistributedSampler


def process_world(num_replicas: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """``(num_replicas, rank)``: the ones given, else torch.distributed's when it is initialised, else one process."""
    distributed = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if distributed else 1
    if rank is None:
        rank = dist.get_rank() if distributed else 0
    return num_replicas, rank


class UnpaddedShardSampler(DistributedSampler):
    """This process's share of a data set, in order, without padding or shuffling.

    ``num_replicas`` and ``rank`` default to torch.distributed's when it is initialised,
    else to one process (which then takes every example).
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None) -> None:
        num_replicas, rank = process_world(num_replicas, rank)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]
        self.num_samples = math.ceil(max(len(dataset) - rank, 0) / num_replicas)
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


__all__ = ["UnpaddedShardSampler", "process_world"]

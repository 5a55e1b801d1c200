"""Batches by token count, with length bucketing, that stay correct under DDP.

Translation batches are sized in tokens, not sentences (fairseq's ``--max-tokens``): sentences
of similar length go together, so padding is small, and a batch of short sentences holds many
of them. The budget counts the padded size, ``len(batch) × max(length in batch)``, which is what
the model really computes on.

Using it with Lightning
-----------------------
Pass the sampler as ``DataLoader(dataset, batch_sampler=sampler, ...)``. Under DDP it shards
the batches itself, so Lightning must not inject its ``DistributedSampler``: set
``trainer.use_distributed_sampler: false`` (``Trainer(use_distributed_sampler=False)``) for
every multi-process run. With the default ``true``, Lightning stops with a ``TypeError``
("can't inject a (distributed) sampler into your batch sampler"). Single-process runs work
either way. Lightning calls ``set_epoch`` on ``dataloader.batch_sampler.sampler`` at each
epoch; :attr:`TokenBatchSampler.sampler` is the sampler itself so that call reaches it (a
plain PyTorch loop calls ``sampler.set_epoch(epoch)`` itself, as with ``DistributedSampler``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


class TokenBatchSampler(Sampler[list[int]]):
    """Yields lists of example indices whose padded size fits ``max_tokens``.

    Batches are formed once: examples sorted by length (ties broken by a permutation drawn
    from ``seed`` when shuffling, by index otherwise), then cut greedily wherever one more
    example would make ``count × longest`` exceed ``max_tokens``. An example longer than
    ``max_tokens`` on its own forms a batch of one (filter such examples beforehand where
    the budget must hold strictly). So the number of batches never changes between epochs,
    and neither does ``len(sampler)``, which Lightning uses to plan the LR schedule.

    Each epoch, with ``shuffle``, the order of the batches is permuted with ``seed + epoch``;
    without it, batches come shortest first, the same every time (validation, test, predict).

    Distributed: with ``num_replicas`` processes, rank ``r`` takes batches ``r``,
    ``r + num_replicas``, … of the epoch's order. To give every rank the same number of
    batches, the batch list is first made divisible by ``num_replicas`` by halving the
    batches with the most examples (at most ``num_replicas - 1`` halvings). Every example
    therefore appears exactly once per epoch, on exactly one rank, and the ranks' data are
    disjoint. Only when every batch already holds a single example and their number still
    does not divide (fewer examples than ranks, or one-example batches only) are batches
    repeated from the start of the list; those examples are then seen twice in that epoch —
    in evaluation, their scores count twice, and the batches' ``ids`` tell them apart.

    Args:
        lengths: the size of each example in tokens (for a pair, the longer side as the model
            sees it, specials included).
        max_tokens: the budget of one batch, ``count × longest``.
        shuffle: permute the batches every epoch (training) or keep length order.
        seed: the seed of the tie-break permutation and of each epoch's order.
        num_replicas: the number of processes; default: torch.distributed's world size
            when it is initialised, else 1.
        rank: this process's rank; default: torch.distributed's rank, else 0.
    """

    def __init__(
        self,
        lengths: Sequence[int] | torch.Tensor,
        max_tokens: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__()
        if max_tokens < 1:
            raise ValueError(f"TokenBatchSampler: max_tokens must be at least 1, got {max_tokens}")
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"TokenBatchSampler: need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        if lengths.dim() != 1:
            raise ValueError(f"TokenBatchSampler: lengths must be one length per example, got shape {tuple(lengths.shape)}")
        self.max_tokens = int(max_tokens)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self._skip = 0
        self.batches = _divisible(_chunk(lengths, self.max_tokens, _length_order(lengths, shuffle, self.seed)), self.num_replicas)

    @property
    def sampler(self) -> TokenBatchSampler:
        """This sampler: Lightning's epoch hook calls ``batch_sampler.sampler.set_epoch``."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batch order the next iteration yields (as ``DistributedSampler``)."""
        self.epoch = int(epoch)

    def skip(self, batches: int) -> None:
        """Leave out this rank's first ``batches`` batches of the next iteration only (a resumed epoch)."""
        self._skip = int(batches)

    def epoch_order(self) -> list[list[int]]:
        """All ranks' batches of the current epoch, in order (rank ``r`` takes every ``num_replicas``-th from ``r``)."""
        if not self.shuffle:
            return self.batches
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return [self.batches[i] for i in torch.randperm(len(self.batches), generator=generator).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        start, self._skip = self._skip, 0
        yield from self.epoch_order()[self.rank :: self.num_replicas][start:]

    def __len__(self) -> int:
        return len(self.batches) // self.num_replicas

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({sum(map(len, self.batches))} examples in {len(self.batches)} batches, "
            f"max_tokens={self.max_tokens}, shuffle={self.shuffle}, rank {self.rank} of {self.num_replicas})"
        )


def _length_order(lengths: torch.Tensor, shuffle: bool, seed: int) -> torch.Tensor:
    """Indices sorted by length; equal lengths in a seeded random order, or by index."""
    if shuffle:
        tiebreak = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed))
    else:
        tiebreak = torch.arange(len(lengths))
    return tiebreak[torch.sort(lengths[tiebreak], stable=True).indices]


def _chunk(lengths: torch.Tensor, max_tokens: int, order: torch.Tensor) -> list[list[int]]:
    """Cut ``order`` into batches whose ``count × longest`` stays within ``max_tokens``."""
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = 0
    for index, length in zip(order.tolist(), lengths[order].tolist()):
        # Lengths arrive in increasing order, so the newcomer is the longest of the batch.
        if batch and (len(batch) + 1) * max(longest, length) > max_tokens:
            batches.append(batch)
            batch, longest = [], 0
        batch.append(index)
        longest = max(longest, length)
    if batch:
        batches.append(batch)
    return batches


def _divisible(batches: list[list[int]], parts: int) -> list[list[int]]:
    """Make the number of batches a multiple of ``parts``: halve the fullest, else repeat."""
    batches = list(batches)
    while len(batches) % parts and any(len(b) > 1 for b in batches):
        fullest = max(range(len(batches)), key=lambda i: len(batches[i]))
        batch = batches[fullest]
        half = len(batch) // 2
        batches[fullest : fullest + 1] = [batch[:half], batch[half:]]
    if batches and len(batches) % parts:
        missing = parts - len(batches) % parts
        batches += [batches[i % len(batches)] for i in range(missing)]
    return batches

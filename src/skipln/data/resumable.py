"""Training data loaders that a checkpoint can stop and restart part-way through an epoch.

A plain ``DataLoader`` restarts its epoch from the first batch, and draws its shuffle from the
global random state, so a run resumed from a mid-epoch checkpoint would see other batches
than the run that was interrupted. Here the order of an epoch is a function of
``(seed, epoch)`` alone, and the loader remembers how many batches of the epoch it has handed
out:

- :class:`EpochSampler` shuffles with ``seed + epoch`` (it is PyTorch's
  ``DistributedSampler``, which Lightning leaves alone under DDP) and can leave out the first
  examples of the next epoch it yields;
- :class:`ResumableDataLoader` is a ``DataLoader`` with ``state_dict`` / ``load_state_dict``:
  Lightning stores that state in every checkpoint (the fit loop's ``combined_loader`` entry)
  and hands it back on resume, and the loader then skips, at the sampler, the batches the
  interrupted run had already trained on — they are never loaded, so no augmentation random
  numbers are drawn for them.

Its batch sampler can be any sampler with ``set_epoch``, ``epoch`` and ``skip(batches)``
(:class:`~skipln.data.batching.TokenBatchSampler`), or its sampler one with ``skip(examples)``
(:class:`EpochSampler`) under a plain ``batch_size``; with any other sampler (one Lightning puts
in for ``overfit_batches``) the batches to skip are loaded and dropped.

Exactness: with ``num_workers: 0`` a resumed run sees the same batches and draws the same
random numbers as the uninterrupted run (the global random state itself comes back through
:class:`skipln.resume.ResumeState`). With worker processes the batches are the same, in the
same order, but a worker's own random stream depends on which examples it loaded before: the
image data modules therefore seed each example from ``(seed, epoch, index)`` in the workers
(:mod:`skipln.data.example_seeding`), and a resumed run augments as the uninterrupted one did.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from skipln.data.sharding import process_world


def run_seed() -> int:
    """The run's seed as ``seed_everything`` recorded it (``PL_GLOBAL_SEED``); 0 when none was set.

    Lightning seeds the ``DistributedSampler`` it injects under DDP the same way, so an epoch's
    order depends on the run's seed and on nothing else.
    """
    value = os.environ.get("PL_GLOBAL_SEED", "0")
    return int(value) if value.lstrip("-").isdigit() else 0


class EpochSampler(DistributedSampler):
    """Yields the examples of one epoch in an order fixed by ``(seed, epoch)``; can start part-way.

    ``DistributedSampler``'s shuffle (a permutation drawn with ``seed + epoch``), in one process
    as well as under DDP: ``num_replicas`` and ``rank`` default to torch.distributed's when it is
    initialised, else to one process. ``skip(n)`` leaves out the first ``n`` examples of the
    next iteration only (a resumed epoch); later epochs are whole again.
    """

    def __init__(
        self,
        dataset: Sized,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        num_replicas, rank = process_world(num_replicas, rank)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)  # type: ignore[arg-type]
        self._skip = 0

    def skip(self, examples: int) -> None:
        """Leave out the first ``examples`` of the next iteration (once)."""
        self._skip = int(examples)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self._skip = self._skip, 0
        return iter(indices[start:])


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose position in the epoch is saved in checkpoints and restored on resume.

    ``state_dict()`` is ``{"epoch": e, "batches": n}``: ``n`` batches of epoch ``e`` have been
    handed out. After ``load_state_dict``, the next iteration — if it is of the same epoch —
    starts at batch ``n``; an iteration of a later epoch (the checkpoint was taken at the end
    of an epoch) is whole. ``len()`` stays the length of a whole epoch, which is what Lightning
    counts progress and plans schedules with.

    Worker processes are seeded from a generator reset from ``(seed, epoch, rank)`` at every
    epoch, never from the global random state, so starting an iteration draws no global random
    numbers (the uninterrupted and the resumed run draw the same ones).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.generator is None:
            self.generator = torch.Generator()
        self._epoch = 0
        self._yielded = 0
        self._resume: dict[str, int] | None = None

    def _skipper(self) -> Any:
        for candidate in (self.batch_sampler, self.sampler):
            if callable(getattr(candidate, "skip", None)):
                return candidate
        return None

    def _sampler_epoch(self) -> int:
        for candidate in (self.batch_sampler, self.sampler):
            epoch = getattr(candidate, "epoch", None)
            if isinstance(epoch, int):
                return epoch
        return 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # A generator: nothing below runs until the first batch is asked for, i.e. after Lightning
        # has called set_epoch for the epoch about to start.
        epoch = self._sampler_epoch()
        resume, self._resume = self._resume, None
        start = resume["batches"] if resume is not None and resume["epoch"] == epoch else 0
        self._epoch, self._yielded = epoch, start
        skipper = self._skipper()
        if start and skipper is not None:
            skipper.skip(start if skipper is self.batch_sampler else start * (self.batch_size or 1))
        sampler = self.batch_sampler if hasattr(self.batch_sampler, "seed") else self.sampler
        seed, rank = int(getattr(sampler, "seed", 0)), int(getattr(sampler, "rank", 0))
        # Python hashes tuples of ints the same in every process (no hash randomisation for ints).
        self.generator.manual_seed(hash((seed, epoch, rank)) & 0x7FFF_FFFF_FFFF_FFFF)
        batches = super().__iter__()
        if start and skipper is None:
            # A sampler Lightning put in (e.g. for `overfit_batches`) cannot skip: load and drop the batches.
            for _ in zip(range(start), batches):
                pass
        for batch in batches:
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """How far into which epoch this loader is (Lightning saves it in every checkpoint)."""
        return {"epoch": self._epoch, "batches": self._yielded}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Start the next iteration of epoch ``state_dict["epoch"]`` after its first ``batches`` batches."""
        self._resume = {"epoch": int(state_dict["epoch"]), "batches": int(state_dict["batches"])}
        self._epoch, self._yielded = self._resume["epoch"], self._resume["batches"]


__all__ = ["EpochSampler", "ResumableDataLoader", "run_seed"]

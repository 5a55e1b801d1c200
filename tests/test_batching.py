"""TokenBatchSampler: token budgets, length bucketing, epochs and DDP sharding."""

from __future__ import annotations

import random

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from skipln.data import batching
from skipln.data.batching import TokenBatchSampler


@pytest.fixture
def lengths() -> list[int]:
    rng = random.Random(0)
    return [rng.randint(1, 60) for _ in range(500)]


def flatten(batches: list[list[int]]) -> list[int]:
    return [i for batch in batches for i in batch]


def test_batches_respect_max_tokens_as_count_times_longest(lengths: list[int]) -> None:
    sampler = TokenBatchSampler(lengths, max_tokens=200, seed=0)
    for batch in sampler:
        assert len(batch) * max(lengths[i] for i in batch) <= 200


def test_batches_are_filled_greedily_up_to_the_budget(lengths: list[int]) -> None:
    # A batch is closed only when the next example in length order would not fit.
    sampler = TokenBatchSampler(lengths, max_tokens=200, shuffle=False)
    for batch, following in zip(sampler.batches, sampler.batches[1:]):
        longest = max(lengths[i] for i in batch + following[:1])
        assert (len(batch) + 1) * longest > 200


def test_batches_are_length_buckets_whose_ranges_do_not_overlap(lengths: list[int]) -> None:
    sampler = TokenBatchSampler(lengths, max_tokens=300, seed=0)
    ranges = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in sampler)
    for (_, high), (low, _) in zip(ranges, ranges[1:]):
        assert high <= low


def test_every_example_appears_exactly_once_per_epoch(lengths: list[int]) -> None:
    sampler = TokenBatchSampler(lengths, max_tokens=200, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sorted(flatten(list(sampler))) == list(range(len(lengths)))


def test_len_is_the_number_of_batches_and_the_same_every_epoch(lengths: list[int]) -> None:
    sampler = TokenBatchSampler(lengths, max_tokens=200, seed=0)
    counts = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        counts.append(len(list(sampler)))
    assert counts == [len(sampler)] * 3


def test_epoch_order_is_reshuffled_by_epoch_and_reproducible(lengths: list[int]) -> None:
    def order(epoch: int) -> list[list[int]]:
        sampler = TokenBatchSampler(lengths, max_tokens=200, seed=7)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(map(tuple, order(1))) == sorted(map(tuple, order(2)))  # same batches, new order


def test_seed_changes_the_order(lengths: list[int]) -> None:
    first = list(TokenBatchSampler(lengths, max_tokens=200, seed=0))
    second = list(TokenBatchSampler(lengths, max_tokens=200, seed=1))
    assert first != second


def test_without_shuffle_batches_come_shortest_first_every_epoch(lengths: list[int]) -> None:
    sampler = TokenBatchSampler(lengths, max_tokens=200, shuffle=False)
    first = list(sampler)
    sampler.set_epoch(5)
    assert list(sampler) == first
    order = flatten(first)
    assert [lengths[i] for i in order] == sorted(lengths)


def test_an_example_longer_than_the_budget_forms_a_batch_of_its_own() -> None:
    sampler = TokenBatchSampler([3, 50, 3, 3], max_tokens=10, shuffle=False)
    assert [1] in list(sampler)
    assert sorted(flatten(list(sampler))) == [0, 1, 2, 3]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_get_equal_batch_counts_and_disjoint_data_covering_every_example(lengths: list[int], world: int) -> None:
    for shuffle in (True, False):
        ranks = [TokenBatchSampler(lengths, max_tokens=200, shuffle=shuffle, seed=1, num_replicas=world, rank=r) for r in range(world)]
        for sampler in ranks:
            sampler.set_epoch(2)
        shards = [list(sampler) for sampler in ranks]
        assert len({len(shard) for shard in shards}) == 1
        assert all(len(shard) == len(sampler) for shard, sampler in zip(shards, ranks))
        seen = [flatten(shard) for shard in shards]
        assert sorted(i for rank in seen for i in rank) == list(range(len(lengths)))


def test_an_uneven_number_of_batches_is_evened_out_by_halving_not_repeating() -> None:
    # Three batches of four for two ranks: one batch is halved, nothing is repeated.
    lengths = [5] * 12
    single = TokenBatchSampler(lengths, max_tokens=20, shuffle=False)
    assert len(single) == 3
    shards = [list(TokenBatchSampler(lengths, max_tokens=20, shuffle=False, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 2
    assert sorted(flatten(shards[0]) + flatten(shards[1])) == list(range(12))


def test_with_fewer_examples_than_ranks_batches_are_repeated() -> None:
    shards = [list(TokenBatchSampler([4, 4, 4], max_tokens=4, shuffle=False, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 2
    ids = flatten(shards[0]) + flatten(shards[1])
    assert set(ids) == {0, 1, 2} and len(ids) == 4  # one example is seen twice


def test_rank_and_world_size_come_from_torch_distributed_when_initialised(monkeypatch: pytest.MonkeyPatch, lengths: list[int]) -> None:
    monkeypatch.setattr(batching.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(batching.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(batching.dist, "get_rank", lambda: 1)
    sampler = TokenBatchSampler(lengths, max_tokens=200, seed=0)
    assert (sampler.num_replicas, sampler.rank) == (2, 1)
    assert list(sampler) == list(TokenBatchSampler(lengths, max_tokens=200, seed=0, num_replicas=2, rank=1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 10, "num_replicas": 2, "rank": 2}, "rank")],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenBatchSampler([1, 2, 3], **kwargs)


class _RecordOrder(L.LightningModule):
    """Records the indices of each training epoch, in the order they arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.epochs: list[list[int]] = []

    def on_train_epoch_start(self) -> None:
        self.epochs.append([])

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.epochs[-1].extend(batch.tolist())
        return self.weight * 0.0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_reshuffles_it_every_epoch(lengths: list[int]) -> None:
    sampler = TokenBatchSampler(lengths, max_tokens=400, seed=0)
    loader = DataLoader(torch.arange(len(lengths)), batch_sampler=sampler)
    module = _RecordOrder()
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(module, loader)
    expected = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        expected.append(flatten(list(sampler)))
    assert module.epochs == expected

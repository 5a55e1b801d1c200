"""Greedy and beam search: agreement with each other, with recomputation, with exhaustive search; lengths and eos."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from torch import Tensor

from skipln.decoding import Hypotheses, SpecialTokens, beam_search, greedy_search
from skipln.decoding.greedy import rows_at_limit
from skipln.models.transformer import Transformer

PAD, BOS, EOS = 0, 1, 2
SPECIAL = SpecialTokens(bos=BOS, eos=EOS, pad=PAD)


def random_model(vocab: int = 13, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(vocab, encoder_layers=1, decoder_layers=2, dim=16, ffn_dim=32, heads=2).eval()


def batch(lengths: list[int], vocab: int = 13, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Right-padded random sources of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (len(lengths), max(lengths)), generator=generator)
    for row, length in enumerate(lengths):
        src[row, length:] = PAD
    return src, torch.tensor(lengths)


class MarkovModel:
    """A scripted model: the next token's logits depend only on the previous token (``table[prev]``).

    It ignores the source; ``max_positions`` is large. Enough to control exactly what a search sees.
    """

    max_positions = 1024

    def __init__(self, table: Tensor) -> None:
        self.table = table

    def encode(self, src_tokens: Tensor, src_lengths: Tensor) -> Tensor:
        return src_lengths

    def decode(self, prev_output_tokens: Tensor, encoder_out: Any, last_only: bool = False) -> Tensor:
        logits = self.table[prev_output_tokens]
        return logits[:, -1:] if last_only else logits

    def new_cache(self) -> None:
        return None

    def decode_step(self, prev_tokens_last: Tensor, encoder_out: Any, cache: Any, step: int) -> Tensor:
        return self.table[prev_tokens_last]

    def reorder_cache(self, cache: Any, new_order: Tensor) -> None:
        pass


def assert_same(a: Hypotheses, b: Hypotheses) -> None:
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.lengths, b.lengths)
    torch.testing.assert_close(a.scores, b.scores)


def test_beam_size_one_gives_exactly_the_greedy_output() -> None:
    model, (src, lengths) = random_model(), batch([7, 3, 5, 1])
    options = {"max_len_a": 1.0, "max_len_b": 4, "lenpen": 0.7}
    assert_same(beam_search(model, src, lengths, SPECIAL, beam_size=1, **options), greedy_search(model, src, lengths, SPECIAL, **options))


@pytest.mark.parametrize("beam_size", [1, 4])
def test_cached_decoding_gives_the_same_result_as_recomputing_every_step(beam_size: int) -> None:
    model, (src, lengths) = random_model(), batch([6, 2, 4])
    options = {"beam_size": beam_size, "max_len_a": 1.0, "max_len_b": 5}
    assert_same(
        beam_search(model, src, lengths, SPECIAL, use_cache=True, **options),
        beam_search(model, src, lengths, SPECIAL, use_cache=False, **options),
    )


def test_greedy_cached_decoding_gives_the_same_result_as_recomputing_every_step() -> None:
    model, (src, lengths) = random_model(), batch([6, 2, 4])
    assert_same(
        greedy_search(model, src, lengths, SPECIAL, max_len_b=8, use_cache=True),
        greedy_search(model, src, lengths, SPECIAL, max_len_b=8, use_cache=False),
    )


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_padding_in_the_batch_does_not_change_a_sentences_translation(search: str) -> None:
    model, (src, lengths) = random_model(), batch([8, 2, 5])
    options: dict[str, Any] = {"max_len_a": 1.0, "max_len_b": 3}
    run = greedy_search if search == "greedy" else lambda *a, **k: beam_search(*a, beam_size=3, **k)
    together = run(model, src, lengths, SPECIAL, **options)
    for row, length in enumerate(lengths.tolist()):
        alone = run(model, src[row : row + 1, :length], lengths[row : row + 1], SPECIAL, **options)
        width = int(alone.lengths[0])
        assert together.lengths[row] == width
        assert torch.equal(together.tokens[row, :width], alone.tokens[0, :width])
        torch.testing.assert_close(together.scores[row], alone.scores[0])


def sequence_score(model: Transformer, src: Tensor, lengths: Tensor, hypothesis: list[int], lenpen: float) -> float:
    """Sum of the model's log-probabilities of ``hypothesis`` (eos included) / length ** lenpen."""
    prev = torch.tensor([[BOS, *hypothesis[:-1]]])
    lprobs = torch.log_softmax(model.decode(prev, model.encode(src, lengths)).float(), dim=-1)[0]
    total = sum(float(lprobs[t, token]) for t, token in enumerate(hypothesis))
    return total / len(hypothesis) ** lenpen


@pytest.mark.parametrize("lenpen", [0.0, 1.0, 3.0])
def test_a_beam_wider_than_the_search_space_finds_the_exhaustive_best(lenpen: float) -> None:
    # Vocabulary: pad, bos, eos and two words; up to 3 words before eos: 2 + 4 + 8 = 14 hypotheses,
    # all of which a beam of 16 keeps, so the result must be the best of them.
    vocab, max_len = 5, 3
    model, (src, lengths) = random_model(vocab=vocab, seed=3), batch([4], vocab=vocab)
    found = beam_search(model, src, lengths, SPECIAL, beam_size=16, max_len_b=max_len, lenpen=lenpen)
    candidates = [
        [*words, EOS] for n in range(1, max_len + 1) for words in itertools.product([3, 4], repeat=n)
    ]
    scores = [sequence_score(model, src, lengths, c, lenpen) for c in candidates]
    best = max(range(len(candidates)), key=scores.__getitem__)
    assert found.tokens[0, : found.lengths[0]].tolist() == candidates[best]
    assert float(found.scores[0]) == pytest.approx(scores[best], abs=1e-5)


def test_hypotheses_end_with_one_eos_then_padding_and_contain_no_pad_or_bos() -> None:
    model, (src, lengths) = random_model(), batch([5, 1, 7, 3])
    found = beam_search(model, src, lengths, SPECIAL, beam_size=3, max_len_a=1.0, max_len_b=2)
    for row, length in zip(found.tokens, found.lengths.tolist(), strict=True):
        words, tail = row[: length - 1], row[length - 1 :]
        assert tail[0] == EOS and bool((tail[1:] == PAD).all())
        assert not any(token in (PAD, BOS, EOS) for token in words.tolist())


def markov(vocab: int, preferred: dict[int, int]) -> MarkovModel:
    """Uniform next-token logits except ``preferred[prev]``, which is strongly favoured."""
    table = torch.zeros(vocab, vocab)
    for prev, nxt in preferred.items():
        table[prev, nxt] = 10.0
    return MarkovModel(table)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_model_that_never_ends_is_stopped_at_a_times_source_length_plus_b(beam_size: int) -> None:
    model = markov(6, {BOS: 3, 3: 4, 4: 3})  # alternates words, eos never preferred
    src, lengths = batch([2, 5, 3], vocab=6)
    found = beam_search(model, src, lengths, SPECIAL, beam_size=beam_size, max_len_a=1.5, max_len_b=1)  # type: ignore[arg-type]
    limits = [math.floor(1.5 * n + 1) for n in (2, 5, 3)]
    assert found.lengths.tolist() == [n + 1 for n in limits]
    for row, limit in zip(found.tokens, limits, strict=True):
        assert row[limit] == EOS


def test_no_row_is_forced_to_end_before_the_shortest_limit_and_each_row_at_its_own_limit() -> None:
    limits = torch.tensor([3, 5, 3])
    assert rows_at_limit(limits, 3, 2) is None
    assert rows_at_limit(limits, 3, 3).tolist() == [True, False, True]  # type: ignore[union-attr]
    assert rows_at_limit(limits, 3, 5).tolist() == [True, True, True]  # type: ignore[union-attr]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_model_eager_to_end_still_produces_min_len_tokens(beam_size: int) -> None:
    model = markov(6, {BOS: EOS, 3: EOS, 4: EOS, 5: EOS})
    src, lengths = batch([4, 2], vocab=6)
    found = beam_search(model, src, lengths, SPECIAL, beam_size=beam_size, min_len=3)  # type: ignore[arg-type]
    assert found.lengths.tolist() == [4, 4]


def test_an_early_finished_hypothesis_wins_over_longer_ones_that_score_worse() -> None:
    # bos → 3 (likely) → eos (likely): "3 eos" finishes at step 1; every longer path is less likely.
    model = markov(6, {BOS: 3, 3: EOS, 4: EOS, 5: EOS})
    src, lengths = batch([3], vocab=6)
    found = beam_search(model, src, lengths, SPECIAL, beam_size=3, max_len_b=10)  # type: ignore[arg-type]
    assert found.tokens[0].tolist() == [3, EOS]


def test_length_penalty_above_one_prefers_the_longer_of_two_finished_hypotheses() -> None:
    # bos → 3 or 4 equally; 3 → eos; 4 → 5 → eos: "3 eos" (2 tokens) and "4 5 eos" (3 tokens).
    table = torch.full((6, 6), -30.0)
    table[BOS, 3] = table[BOS, 4] = 0.0
    table[3, EOS] = table[4, 5] = table[5, EOS] = 0.0
    model = MarkovModel(table)
    src, lengths = batch([3], vocab=6)
    short = beam_search(model, src, lengths, SPECIAL, beam_size=2, lenpen=0.0)  # type: ignore[arg-type]
    long = beam_search(model, src, lengths, SPECIAL, beam_size=2, lenpen=2.0)  # type: ignore[arg-type]
    assert short.tokens[0].tolist() == [3, EOS]
    assert long.tokens[0].tolist() == [4, 5, EOS]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beam_size": 0}, "'beam_size' must be an integer >= 1"),
        ({"max_len_a": -1.0}, "'max_len_a' must be a number >= 0"),
        ({"min_len": -2}, "'min_len' must be an integer >= 0"),
        ({"lenpen": math.nan}, "'lenpen' must be a finite number"),
    ],
)
def test_invalid_search_arguments_are_rejected_with_the_argument_named(options: dict[str, Any], message: str) -> None:
    model, (src, lengths) = random_model(), batch([3])
    with pytest.raises(ValueError, match=message):
        beam_search(model, src, lengths, SPECIAL, **options)

"""Greedy decoding, and what every search shares: the model's interface, the output, the per-step rules.

The rules follow fairseq's ``SequenceGenerator``:

* A hypothesis is scored by the sum of its tokens' log-probabilities (end-of-sentence
  included) divided by ``length ** lenpen``, ``length`` counting the end-of-sentence token.
* At most ``max_len = max_len_a · source_length + max_len_b`` tokens come before the
  end-of-sentence token, which is forced at that step; at least ``min_len`` do. Unlike
  fairseq, ``source_length`` is each sentence's own length, not the padded batch's, so a
  translation does not depend on the other sentences of its batch.
* Padding and beginning-of-sentence tokens are never generated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from skipln.validation import is_int


class IncrementalSeq2Seq(Protocol):
    """What a search needs from a model (:class:`skipln.models.transformer.Transformer` has it).

    The decoder's batch may be a multiple ``k`` of the encoder's: rows ``i·k … i·k + k − 1``
    are hypotheses of sentence ``i``.
    """

    max_positions: int

    def encode(self, src_tokens: Tensor, src_lengths: Tensor) -> Any: ...

    def decode(self, prev_output_tokens: Tensor, encoder_out: Any, last_only: bool = False) -> Tensor: ...

    def new_cache(self) -> Any: ...

    def decode_step(self, prev_tokens_last: Tensor, encoder_out: Any, cache: Any, step: int) -> Tensor: ...

    def reorder_cache(self, cache: Any, new_order: Tensor) -> None: ...


@dataclass(frozen=True)
class SpecialTokens:
    """The ids of the tokenizer's special tokens."""

    bos: int
    eos: int
    pad: int


@dataclass
class Hypotheses:
    """The best hypothesis of each sentence.

    Attributes:
        tokens: ``(sentences, time)``, each row ending in the end-of-sentence token and
            right-padded with the padding token (no beginning-of-sentence token).
        lengths: ``(sentences,)`` tokens of each hypothesis, end-of-sentence included.
        scores: ``(sentences,)`` sum of log-probabilities divided by ``length ** lenpen``.
    """

    tokens: Tensor
    lengths: Tensor
    scores: Tensor


def check_search_args(beam_size: int, lenpen: float, max_len_a: float, max_len_b: int, min_len: int) -> None:
    """Raise a ``ValueError`` naming the first invalid argument of a search."""
    if not is_int(beam_size) or beam_size < 1:
        raise ValueError(f"'beam_size' must be an integer >= 1, got {beam_size!r}")
    if not math.isfinite(lenpen):
        raise ValueError(f"'lenpen' must be a finite number, got {lenpen!r}")
    if not math.isfinite(max_len_a) or max_len_a < 0:
        raise ValueError(f"'max_len_a' must be a number >= 0, got {max_len_a!r}")
    if not is_int(max_len_b) or max_len_b < 0:
        raise ValueError(f"'max_len_b' must be an integer >= 0, got {max_len_b!r}")
    if not is_int(min_len) or min_len < 0:
        raise ValueError(f"'min_len' must be an integer >= 0, got {min_len!r}")


def max_lengths(model: IncrementalSeq2Seq, src_lengths: Tensor, max_len_a: float, max_len_b: int) -> Tensor:
    """Tokens allowed before the end-of-sentence token, per sentence: ``a · length + b``, within the model's positions."""
    limit = (max_len_a * src_lengths.double() + max_len_b).floor().long()
    # Position 0 holds the beginning-of-sentence token, so max_len tokens need max_len + 1 positions.
    return limit.clamp(min=0, max=model.max_positions - 1)


def next_log_probs(
    model: IncrementalSeq2Seq,
    tokens: Tensor,
    encoder_out: Any,
    cache: Any | None,
    step: int,
    special: SpecialTokens,
    min_len: int,
    forced_eos: Tensor | None,
) -> Tensor:
    """Log-probabilities ``(rows, vocab)`` of the token after position ``step``, with the search's rules applied.

    Args:
        tokens: ``(rows, > step)`` the inputs so far; ``tokens[:, step]`` is the newest.
        cache: the model's incremental state, or ``None`` to recompute from all of ``tokens``
            (slower; the reference an incremental decoder must match).
        forced_eos: ``(rows,)`` rows that must end now (their maximum length is reached), or
            ``None`` when none must (see :func:`rows_at_limit`).
    """
    if cache is None:
        logits = model.decode(tokens[:, : step + 1], encoder_out, last_only=True)[:, -1]
    else:
        logits = model.decode_step(tokens[:, step], encoder_out, cache, step)
    lprobs = F.log_softmax(logits.float(), dim=-1)
    lprobs[:, special.pad] = -math.inf
    if special.bos != special.eos:
        lprobs[:, special.bos] = -math.inf
    eos_lprobs = None if forced_eos is None else lprobs[:, special.eos].clone()
    if step < min_len:
        lprobs[:, special.eos] = -math.inf
    if forced_eos is not None:
        # A row at its maximum length may only end: every other token is impossible, eos keeps its probability.
        # In place, with a broadcast mask: no second (rows, vocab) tensor per step (it was a tenth of beam search's time).
        lprobs.masked_fill_(forced_eos[:, None], -math.inf)
        lprobs[:, special.eos] = torch.where(forced_eos, eos_lprobs, lprobs[:, special.eos])
    return lprobs


def rows_at_limit(limits: Tensor, shortest: int, step: int) -> Tensor | None:
    """The rows whose maximum length (``limits``) is reached at ``step``; ``None`` before any row's is.

    ``shortest`` is ``int(limits.min())``, read once per search: until then no step pays for the
    mask over the whole ``(rows, vocab)`` log-probabilities (2% of a beam search on a CPU).
    """
    return limits <= step if step >= shortest else None


@torch.no_grad()
def greedy_search(
    model: IncrementalSeq2Seq,
    src_tokens: Tensor,
    src_lengths: Tensor,
    special: SpecialTokens,
    *,
    lenpen: float = 1.0,
    max_len_a: float = 0.0,
    max_len_b: int = 200,
    min_len: int = 1,
    use_cache: bool = True,
) -> Hypotheses:
    """The most probable next token at every step, for a batch of sentences at once.

    Args:
        model: an encoder-decoder with an incremental decoder (:class:`IncrementalSeq2Seq`),
            in eval mode.
        src_tokens: ``(sentences, source_time)`` right-padded source token ids.
        src_lengths: ``(sentences,)`` real tokens per source sentence.
        special: the tokenizer's bos, eos and pad ids.
        lenpen: length penalty of the score (see :class:`Hypotheses`); does not change the tokens.
        max_len_a, max_len_b: at most ``a · source_length + b`` tokens before eos.
        min_len: at least this many tokens before eos.
        use_cache: decode incrementally with the model's key/value cache; ``False``
            recomputes every prefix from scratch (same tokens, slower).
    """
    check_search_args(1, lenpen, max_len_a, max_len_b, min_len)
    sentences = src_tokens.shape[0]
    device = src_tokens.device
    encoder_out = model.encode(src_tokens, src_lengths)
    limits = max_lengths(model, src_lengths, max_len_a, max_len_b)
    steps = int(limits.max()) + 1 if sentences else 0
    shortest = int(limits.min()) if sentences else 0

    tokens = torch.full((sentences, steps + 1), special.pad, dtype=torch.long, device=device)
    tokens[:, 0] = special.bos
    scores = torch.zeros(sentences, device=device)
    lengths = torch.zeros(sentences, dtype=torch.long, device=device)
    finished = torch.zeros(sentences, dtype=torch.bool, device=device)
    cache = model.new_cache() if use_cache else None

    for step in range(steps):
        lprobs = next_log_probs(model, tokens, encoder_out, cache, step, special, min_len, rows_at_limit(limits, shortest, step))
        best_lprobs, best = lprobs.max(dim=-1)
        best = best.masked_fill(finished, special.pad)
        tokens[:, step + 1] = best
        scores += best_lprobs.masked_fill(finished, 0.0)
        ended = ~finished & (best == special.eos)
        lengths.masked_fill_(ended, step + 1)
        finished |= ended
        if bool(finished.all()):
            break

    scores = scores / lengths.clamp(min=1).double().pow(lenpen).to(scores.dtype)
    width = int(lengths.max()) if sentences else 0
    return Hypotheses(tokens[:, 1 : width + 1], lengths, scores)


__all__ = [
    "Hypotheses",
    "IncrementalSeq2Seq",
    "SpecialTokens",
    "check_search_args",
    "greedy_search",
    "max_lengths",
    "next_log_probs",
    "rows_at_limit",
]

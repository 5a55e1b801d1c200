"""Beam search over a batch of sentences, vectorised across sentences and beams (fairseq's algorithm).

At each step every live hypothesis of a sentence is extended by every token; of the
``beam × vocab`` candidates the ``2 · beam`` best are kept (at most ``beam`` of them end in
eos, so at least ``beam`` do not). Candidates that end in eos and rank among the first
``beam`` are *finished*: they are scored ``sum of log-probs / length ** lenpen`` and stored.
The ``beam`` best candidates that do not end in eos live on. A sentence is done when it has
``beam`` finished hypotheses; its result is the best-scoring of them. Scoring, lengths and
the forced end follow :mod:`skipln.decoding.greedy`.

The only Python loop is over steps: choosing, finishing and reordering are tensor operations
over all sentences at once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from skipln.decoding.greedy import (
    Hypotheses,
    IncrementalSeq2Seq,
    SpecialTokens,
    check_search_args,
    max_lengths,
    next_log_probs,
    rows_at_limit,
)


@torch.no_grad()
def beam_search(
    model: IncrementalSeq2Seq,
    src_tokens: Tensor,
    src_lengths: Tensor,
    special: SpecialTokens,
    *,
    beam_size: int = 5,
    lenpen: float = 1.0,
    max_len_a: float = 0.0,
    max_len_b: int = 200,
    min_len: int = 1,
    use_cache: bool = True,
) -> Hypotheses:
    """The best hypothesis of each sentence under beam search.

    Args:
        model: an encoder-decoder with an incremental decoder, in eval mode.
        src_tokens: ``(sentences, source_time)`` right-padded source token ids.
        src_lengths: ``(sentences,)`` real tokens per source sentence.
        special: the tokenizer's bos, eos and pad ids.
        beam_size: hypotheses kept per sentence; 1 gives exactly greedy search's tokens.
        lenpen: length penalty: scores are divided by ``length ** lenpen``; above 1 favours
            longer translations, below 1 shorter ones.
        max_len_a, max_len_b: at most ``a · source_length + b`` tokens before eos.
        min_len: at least this many tokens before eos.
        use_cache: decode incrementally with the model's key/value cache; ``False``
            recomputes every prefix from scratch (same result, slower).
    """
    check_search_args(beam_size, lenpen, max_len_a, max_len_b, min_len)
    beam = beam_size
    sentences = src_tokens.shape[0]
    rows = sentences * beam
    device = src_tokens.device
    encoder_out = model.encode(src_tokens, src_lengths)
    limits = max_lengths(model, src_lengths, max_len_a, max_len_b)
    steps = int(limits.max()) + 1 if sentences else 0
    row_limits = limits.repeat_interleave(beam)
    shortest = int(limits.min()) if sentences else 0

    # Row r = sentence r // beam, hypothesis r % beam. Column 0 holds bos.
    tokens = torch.full((rows, steps + 1), special.pad, dtype=torch.long, device=device)
    tokens[:, 0] = special.bos
    # Only the first hypothesis of each sentence starts alive, so step 0 has no duplicates.
    live_scores = torch.full((sentences, beam), -math.inf, device=device)
    live_scores[:, 0] = 0.0
    # Finished hypotheses, `beam` slots per sentence plus a spare one that is never read.
    finished_tokens = torch.full((sentences, beam + 1, steps), special.pad, dtype=torch.long, device=device)
    finished_scores = torch.full((sentences, beam + 1), -math.inf, device=device)
    finished_lengths = torch.zeros((sentences, beam + 1), dtype=torch.long, device=device)
    finished_count = torch.zeros(sentences, dtype=torch.long, device=device)
    sentence_index = torch.arange(sentences, device=device)[:, None].expand(sentences, beam)
    sentence_rows = sentence_index[:, :1] * beam  # the first row of each sentence
    candidate_rank = torch.arange(2 * beam, device=device)
    cache = model.new_cache() if use_cache else None

    for step in range(steps):
        lprobs = next_log_probs(
            model, tokens, encoder_out, cache, step, special, min_len, rows_at_limit(row_limits, shortest, step)
        )
        vocab = lprobs.shape[-1]
        if 2 * beam > beam * vocab:
            raise ValueError(f"beam_search: beam_size {beam} needs a vocabulary of at least 2 tokens, got {vocab}")
        candidates = lprobs.add_(live_scores.reshape(rows, 1)).view(sentences, beam * vocab)
        cand_scores, cand_index = candidates.topk(2 * beam, dim=1)  # sorted, best first
        cand_beam = cand_index // vocab
        cand_token = cand_index % vocab
        cand_rows = sentence_rows + cand_beam
        ends = cand_token == special.eos

        # Finish the eos candidates among the first `beam`, in rank order, while the sentence has room.
        done = finished_count >= beam
        finishing = ends[:, :beam] & torch.isfinite(cand_scores[:, :beam]) & ~done[:, None]
        slot = finished_count[:, None] + finishing.long().cumsum(dim=1) - 1
        finishing &= slot < beam
        # Every candidate is written; those that do not finish go to a spare slot (index `beam`),
        # which keeps the step free of data-dependent shapes.
        slot = torch.where(finishing, slot, beam)
        hypotheses = tokens.index_select(0, cand_rows[:, :beam].reshape(-1))[:, 1:].view(sentences, beam, steps)
        hypotheses[:, :, step] = special.eos
        finished_tokens[sentence_index, slot] = hypotheses
        finished_scores[sentence_index, slot] = cand_scores[:, :beam] / float(step + 1) ** lenpen
        finished_lengths[sentence_index, slot] = step + 1
        finished_count += finishing.sum(dim=1)
        if bool((finished_count >= beam).all()) or step == steps - 1:
            break

        # The `beam` best candidates that do not end live on: sort the others behind them, stably.
        keep = (ends.long() * 2 * beam + candidate_rank).topk(beam, dim=1, largest=False).indices
        live_scores = cand_scores.gather(1, keep)
        new_order = cand_rows.gather(1, keep).view(rows)
        tokens = tokens.index_select(0, new_order)
        tokens[:, step + 1] = cand_token.gather(1, keep).view(rows)
        if cache is not None:
            model.reorder_cache(cache, new_order)

    best = finished_scores[:, :beam].argmax(dim=1)
    index = sentence_index[:, 0]
    lengths = finished_lengths[index, best]
    width = int(lengths.max()) if sentences else 0
    return Hypotheses(finished_tokens[index, best, :width], lengths, finished_scores[index, best])


__all__ = ["beam_search"]

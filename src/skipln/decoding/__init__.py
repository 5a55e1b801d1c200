"""Searches over a model's incremental decoder, apart from the model (as fairseq's ``sequence_generator``).

A model provides ``encode``, ``decode`` (every position at once), ``new_cache``,
``decode_step`` and ``reorder_cache`` (:class:`IncrementalSeq2Seq`); a search turns them into
translations::

    special = SpecialTokens(bos=tokenizer.bos_id, eos=tokenizer.eos_id, pad=tokenizer.pad_id)
    best = beam_search(model.eval(), src_tokens, src_lengths, special, beam_size=5, max_len_a=1.2, max_len_b=10)
    texts = [tokenizer.decode(row.tolist()) for row in best.tokens]
"""

from skipln.decoding.beam import beam_search
from skipln.decoding.greedy import Hypotheses, IncrementalSeq2Seq, SpecialTokens, greedy_search

__all__ = ["Hypotheses", "IncrementalSeq2Seq", "SpecialTokens", "beam_search", "greedy_search"]

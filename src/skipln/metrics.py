"""Corpus BLEU as a torchmetrics ``Metric``: exactly ``sacrebleu.corpus_bleu``, synchronised across processes.

BLEU is a function of sums over sentences (n-gram matches and totals, hypothesis and
reference lengths), so each process keeps every sentence's statistics together with the
sentence's id in its data split; at ``compute()`` torchmetrics gathers them from all
processes, a sentence that a distributed sampler handed to two processes (to even out the
shards) is counted once, and sacreBLEU's own formula turns the sums into the score.

Why not ``torchmetrics.text.SacreBLEUScore``: it keeps only the sums, so duplicated sentences
would be counted twice, and it does not implement sacreBLEU's default ``exp`` smoothing, so
it differs from ``sacrebleu.corpus_bleu`` whenever an n-gram order has no match.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from sacrebleu.metrics import BLEU
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

MAX_NGRAM_ORDER = 4
_STATS = 2 + 2 * MAX_NGRAM_ORDER  # hypothesis length, reference length, matches per order, totals per order


class CorpusBLEU(Metric):
    """Corpus-level BLEU of hypotheses against one reference each (0–100).

    Args:
        tokenize: sacreBLEU's tokenizer: ``"13a"`` (sacreBLEU's default, for detokenized
            text) or ``"none"`` (split on whitespace only: BLEU over the tokens of text that is
            already tokenized, as fairseq-era papers report), or any other sacreBLEU tokenizer
            (``"intl"``, ``"char"``, ``"zh"``, ...).
        lowercase: compare lowercased text.
        smooth_method: sacreBLEU's smoothing (``"exp"``, its default, ``"floor"``,
            ``"add-k"``, ``"none"``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, tokenize: str = "13a", lowercase: bool = False, smooth_method: str = "exp", **kwargs: object) -> None:
        super().__init__(**kwargs)
        if tokenize not in BLEU.TOKENIZERS:
            raise ValueError(f"CorpusBLEU: 'tokenize' must be one of sacreBLEU's {sorted(BLEU.TOKENIZERS)}, got {tokenize!r}")
        if smooth_method not in BLEU.SMOOTH_DEFAULTS:
            raise ValueError(
                f"CorpusBLEU: 'smooth_method' must be one of {sorted(BLEU.SMOOTH_DEFAULTS)}, got {smooth_method!r}"
            )
        self.tokenize = tokenize
        self.lowercase = lowercase
        self.smooth_method = smooth_method
        # effective_order only changes sentence-level scores, not the counts taken from them here.
        self._bleu = BLEU(tokenize=tokenize, lowercase=lowercase, effective_order=True)
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.add_state("stats", default=[], dist_reduce_fx="cat")

    def update(self, hypotheses: Sequence[str], references: Sequence[str], ids: Tensor | Sequence[int]) -> None:
        """Add sentences.

        Args:
            hypotheses: the system's output for each sentence.
            references: the reference translation of each sentence.
            ids: each sentence's index in its data split; a sentence seen again (on this or
                another process) is counted once.
        """
        if not len(hypotheses) == len(references) == len(ids):
            raise ValueError(
                f"CorpusBLEU.update: got {len(hypotheses)} hypotheses, {len(references)} references and {len(ids)} ids; "
                f"they must correspond one to one"
            )
        rows = []
        for hypothesis, reference in zip(hypotheses, references, strict=True):
            score = self._bleu.sentence_score(hypothesis, [reference])
            rows.append([score.sys_len, score.ref_len, *score.counts, *score.totals])
        self.ids.append(torch.as_tensor(ids, dtype=torch.long, device=self.device).reshape(-1))
        self.stats.append(torch.tensor(rows, dtype=torch.long, device=self.device).reshape(-1, _STATS))

    def compute(self) -> Tensor:
        """The BLEU score of every distinct sentence seen so far; 0 when there is none."""
        # Before a sync the states are lists of tensors; after one, concatenated tensors, in
        # which a process without sentences contributes an empty float tensor.
        if isinstance(self.ids, list) and not self.ids:
            return torch.tensor(0.0, dtype=torch.float64, device=self.device)
        ids, stats = dim_zero_cat(self.ids).long(), dim_zero_cat(self.stats).long().reshape(-1, _STATS)
        if ids.numel() == 0:
            return torch.tensor(0.0, dtype=torch.float64, device=self.device)
        stats = stats[_first_occurrences(ids)].sum(dim=0).tolist()
        score = BLEU.compute_bleu(
            correct=stats[2 : 2 + MAX_NGRAM_ORDER],
            total=stats[2 + MAX_NGRAM_ORDER :],
            sys_len=stats[0],
            ref_len=stats[1],
            smooth_method=self.smooth_method,
            max_ngram_order=MAX_NGRAM_ORDER,
        )
        return torch.tensor(score.score, dtype=torch.float64, device=self.device)


def _first_occurrences(ids: Tensor) -> Tensor:
    """Indices of the first occurrence of each distinct id."""
    unique, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full_like(unique, ids.numel())
    return first.scatter_reduce(0, inverse, torch.arange(ids.numel(), device=ids.device), reduce="amin")


__all__ = ["CorpusBLEU"]

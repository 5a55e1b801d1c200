"""Label-smoothed cross-entropy with a hand-written backward pass.

Autograd's backward of the plain formula (log-softmax, a gather for the reference token, a
sum over the vocabulary, their weighted sum, the mask) makes four passes over a
``(tokens, vocabulary)`` tensor and allocates three of them; with a vocabulary of thousands
that is a tenth of a small Transformer's training step on a CPU. The gradient has a closed
form, ``softmax − smoothed target``, which one pass computes (see
:class:`_LabelSmoothedCrossEntropy`). The forward is the same computation as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx


class _LabelSmoothedCrossEntropy(torch.autograd.Function):
    """``(loss, nll)`` sums; the gradient of ``loss`` w.r.t. the logits is ``p − b − a·onehot(t)`` per kept row.

    With ``a = 1 − ε − b`` on the reference token's NLL and ``b = ε/(V−1)`` on the sum of all
    ``−log p(v)``: ``∂nll/∂z = p − onehot(t)`` and ``∂(Σ_v −log p(v))/∂z = V·p − 1``, so
    ``∂loss/∂z = (a + b·V)·p − b − a·onehot(t)``, and ``a + b·V = 1``. Rows whose target is the
    ignored index have no gradient. ``nll`` is reported, not trained on: it has no gradient.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, logits: Tensor, target: Tensor, epsilon: float, ignore_index: int) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        vocab = logits.shape[-1]
        flat = logits.reshape(-1, vocab)
        # Half precision is upcast: a sum over thousands of log-probabilities needs float32's mantissa.
        lprobs = F.log_softmax(flat if flat.dtype in (torch.float32, torch.float64) else flat.float(), dim=-1)
        flat_target = target.reshape(-1)
        keep = flat_target != ignore_index
        safe_target = flat_target.masked_fill(~keep, 0)
        nll = -lprobs.gather(-1, safe_target[:, None]).squeeze(-1)
        smooth = -lprobs.sum(dim=-1)
        other = epsilon / (vocab - 1)
        loss = (1.0 - epsilon - other) * nll + other * smooth
        ctx.save_for_backward(lprobs, safe_target, keep)
        ctx.epsilon, ctx.shape, ctx.dtype = epsilon, logits.shape, logits.dtype
        nll_sum = nll.masked_fill(~keep, 0.0).sum()
        ctx.mark_non_differentiable(nll_sum)
        return loss.masked_fill(~keep, 0.0).sum(), nll_sum

    @staticmethod
    def backward(ctx: FunctionCtx, grad_loss: Tensor, grad_nll: Tensor | None) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        lprobs, safe_target, keep = ctx.saved_tensors
        other = ctx.epsilon / (lprobs.shape[-1] - 1)
        # Per row: 0 where the target is ignored, else the incoming gradient.
        row_scale = (keep.to(lprobs.dtype) * grad_loss)[:, None]
        grad = lprobs.exp()
        # (p − b)·s in one pass over the (tokens, vocabulary) tensor, in place.
        torch.addcmul(-other * row_scale, grad, row_scale, out=grad)
        grad.scatter_add_(-1, safe_target[:, None], -(1.0 - ctx.epsilon - other) * row_scale)
        return grad.to(ctx.dtype).view(ctx.shape), None, None, None


def label_smoothed_nll_loss(logits: Tensor, target: Tensor, epsilon: float, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Label-smoothed cross-entropy as fairseq computes it, summed over the non-ignored tokens.

    The smoothed target puts ``1 − ε`` on the reference token and spreads ``ε`` evenly over the
    other ``V − 1`` tokens (PyTorch's ``label_smoothing`` spreads it over all ``V``)::

        loss = (1 − ε − ε/(V−1)) · nll + ε/(V−1) · Σ_v −log p(v)

    Args:
        logits: ``(..., V)`` unnormalised scores, ``V ≥ 2``; computed in float32 if they are in
            half precision (float16, bfloat16), and the gradient is returned in their dtype.
        target: ``(...)`` reference token ids.
        epsilon: the smoothing ε, in [0, 1).
        ignore_index: target id that contributes nothing (padding).

    Returns:
        ``(loss, nll_loss)``: the smoothed loss and the plain negative log-likelihood, each a
        sum; only ``loss`` carries a gradient (``nll_loss`` is for logging and perplexity).
    """
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"label_smoothed_nll_loss: logits {tuple(logits.shape)} do not match target {tuple(target.shape)}")
    if logits.shape[-1] < 2:
        raise ValueError(f"label_smoothed_nll_loss: needs a vocabulary of at least 2, got {logits.shape[-1]}")
    return _LabelSmoothedCrossEntropy.apply(logits, target, float(epsilon), int(ignore_index))


__all__ = ["label_smoothed_nll_loss"]

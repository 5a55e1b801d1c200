"""The label-smoothed loss: its value is fairseq's formula, its hand-written gradient is autograd's."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from skipln.losses import label_smoothed_nll_loss


def formula(logits: Tensor, target: Tensor, epsilon: float, ignore_index: int) -> Tensor:
    """The smoothed loss written out, left to autograd: the specification of the fused function."""
    lprobs = F.log_softmax(logits, dim=-1)
    keep = target != ignore_index
    nll = -lprobs.gather(-1, target.masked_fill(~keep, 0).unsqueeze(-1)).squeeze(-1)
    other = epsilon / (logits.shape[-1] - 1)
    loss = (1.0 - epsilon - other) * nll - other * lprobs.sum(dim=-1)
    return loss.masked_fill(~keep, 0.0).sum()


def test_label_smoothed_loss_is_cross_entropy_with_the_smoothed_target_distribution() -> None:
    # p = (1/2, 1/4, 1/4), reference token 0, ε = 0.1: the target puts 0.9 on token 0 and 0.05 on
    # each other token, so the loss is 0.9·log 2 + 2 · 0.05·log 4 and the NLL is log 2.
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    loss, nll = label_smoothed_nll_loss(logits, torch.tensor([0]), epsilon=0.1, ignore_index=-100)
    assert float(loss) == pytest.approx(0.9 * math.log(2) + 2 * 0.05 * math.log(4), rel=1e-6)
    assert float(nll) == pytest.approx(math.log(2), rel=1e-6)


def test_label_smoothed_loss_without_smoothing_is_summed_cross_entropy() -> None:
    logits, target = torch.randn(4, 5, 7), torch.randint(0, 7, (4, 5))
    loss, nll = label_smoothed_nll_loss(logits, target, epsilon=0.0, ignore_index=-100)
    expected = F.cross_entropy(logits.view(-1, 7), target.view(-1), reduction="sum")
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(nll, expected)


def test_label_smoothed_loss_equals_pytorch_smoothing_over_all_tokens_rescaled() -> None:
    # fairseq spreads ε over the V − 1 other tokens, PyTorch ε' over all V: equal when ε' = ε·V/(V−1).
    logits, target = torch.randn(3, 4, 9), torch.randint(0, 9, (3, 4))
    loss, _ = label_smoothed_nll_loss(logits, target, epsilon=0.1, ignore_index=-100)
    expected = F.cross_entropy(logits.view(-1, 9), target.view(-1), label_smoothing=0.1 * 9 / 8, reduction="sum")
    torch.testing.assert_close(loss, expected)


def test_label_smoothed_loss_ignores_padding_positions() -> None:
    logits, target = torch.randn(2, 4, 6), torch.randint(1, 6, (2, 4))
    target[0, 2:] = 0
    loss, nll = label_smoothed_nll_loss(logits, target, epsilon=0.1, ignore_index=0)
    kept_loss, kept_nll = label_smoothed_nll_loss(logits[target != 0], target[target != 0], epsilon=0.1, ignore_index=0)
    torch.testing.assert_close((loss, nll), (kept_loss, kept_nll))


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
def test_the_gradient_equals_autograd_of_the_formula_with_padding(epsilon: float) -> None:
    logits = torch.randn(3, 5, 11, dtype=torch.float64)
    target = torch.randint(1, 11, (3, 5))
    target[1, 3:] = 0
    fused = logits.clone().requires_grad_()
    reference = logits.clone().requires_grad_()
    (2.5 * label_smoothed_nll_loss(fused, target, epsilon, ignore_index=0)[0]).backward()
    (2.5 * formula(reference, target, epsilon, ignore_index=0)).backward()
    torch.testing.assert_close(fused.grad, reference.grad)
    assert torch.all(fused.grad[1, 3:] == 0)  # padding positions get no gradient


def test_the_gradient_passes_torch_gradcheck() -> None:
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 5, 2, 1])
    assert torch.autograd.gradcheck(lambda z: label_smoothed_nll_loss(z, target, 0.1, ignore_index=1)[0], (logits,))


def test_bfloat16_logits_get_a_bfloat16_gradient_close_to_the_float32_one() -> None:
    logits, target = torch.randn(8, 13), torch.randint(0, 13, (8,))
    low = logits.to(torch.bfloat16).requires_grad_()
    full = low.detach().float().requires_grad_()
    label_smoothed_nll_loss(low, target, 0.1, ignore_index=-100)[0].backward()
    label_smoothed_nll_loss(full, target, 0.1, ignore_index=-100)[0].backward()
    assert low.grad.dtype == torch.bfloat16
    torch.testing.assert_close(low.grad.float(), full.grad, atol=1e-2, rtol=1e-2)


def test_the_nll_is_reported_without_a_gradient() -> None:
    logits = torch.randn(2, 5, requires_grad=True)
    loss, nll = label_smoothed_nll_loss(logits, torch.tensor([1, 2]), 0.1, ignore_index=-100)
    assert loss.requires_grad and not nll.requires_grad


def test_mismatched_shapes_are_refused_with_both_shapes_named() -> None:
    with pytest.raises(ValueError, match=r"logits \(2, 3, 5\) do not match target \(2, 4\)"):
        label_smoothed_nll_loss(torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long), 0.1, ignore_index=0)

"""skipln's Dropout: nn.Dropout's law and gradient, a faster mask for CPU tensors, nn.Dropout's own path otherwise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from skipln.models.dropout import Dropout

P = 0.1


def test_a_training_output_is_the_input_kept_and_scaled_or_zero() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 512)
    y = Dropout(P).train()(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - P))


def test_a_fraction_one_minus_p_of_the_elements_is_kept() -> None:
    torch.manual_seed(0)
    kept = (Dropout(P).train()(torch.ones(1000, 1000)) != 0).float().mean().item()
    assert abs(kept - (1 - P)) < 0.002  # 1e6 draws: the standard error is 0.0003


def test_the_gradient_is_the_forward_mask() -> None:
    torch.manual_seed(0)
    x = torch.ones(32, 64, requires_grad=True)
    y = Dropout(P).train()(x)
    upstream = torch.randn(32, 64)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, upstream * y.detach())


def test_the_same_seed_draws_the_same_mask() -> None:
    x = torch.randn(16, 128)
    torch.manual_seed(3)
    first = Dropout(P).train()(x)
    torch.manual_seed(3)
    assert torch.equal(Dropout(P).train()(x), first)


def test_evaluation_passes_the_input_through() -> None:
    x = torch.randn(8, 16)
    assert torch.equal(Dropout(P).eval()(x), x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_output_is_what_nn_dropout_computes_from_the_same_mask(dtype: torch.dtype) -> None:
    x = torch.randn(64, 512).to(dtype)
    torch.manual_seed(0)
    y = Dropout(P).train()(x)
    kept = y != 0
    assert y.dtype == dtype
    assert torch.equal(y, (x * kept).mul_(1 / (1 - P)))  # nn.Dropout: input.mul(mask).mul_(scale)
    assert abs(kept.float().mean().item() - (1 - P)) < 0.01


def test_a_half_precision_gradient_is_the_scaled_mask() -> None:
    torch.manual_seed(0)
    x = torch.ones(32, 64, dtype=torch.bfloat16, requires_grad=True)
    y = Dropout(P).train()(x)
    upstream = torch.randn(32, 64).to(torch.bfloat16)
    y.backward(upstream)
    assert torch.equal(x.grad, (upstream * (y.detach() != 0)).mul_(1 / (1 - P)))


def test_float64_gets_nn_dropouts_own_draws() -> None:
    x = torch.randn(16, 128, dtype=torch.float64)
    torch.manual_seed(5)
    ours = Dropout(P).train()(x)
    torch.manual_seed(5)
    assert torch.equal(ours, F.dropout(x, P, training=True))


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_rates_zero_and_one_behave_as_nn_dropout(p: float) -> None:
    x = torch.randn(8, 16)
    torch.manual_seed(0)
    ours = Dropout(p).train()(x)
    torch.manual_seed(0)
    assert torch.equal(ours, F.dropout(x, p, training=True))

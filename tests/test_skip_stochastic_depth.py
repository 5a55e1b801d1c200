"""Stochastic depth (skipln.skip.stochastic_depth) and what each strategy family preserves under it.

The model drops the branch before the strategy combines it with the skip. Where a family's
formula is a sum of the skip and the branch (Plain, xSkip, ReZero, SkipInit, Pre-LN,
Sandwich-LN after its second norm, ResiDual's un-normalized stream), the expected output
while training equals the output at inference. Where the sum is normalized (Post-LN, xSkip+LN,
rSkip+LN, DeepNorm, Admin, learnable λ, B2T), what is preserved is the expected sum inside
the norm, and a dropped block gives the norm of the skip alone.

Expectations are read over many copies of one input: the drop is drawn per sample, so the
mean over rows is a Monte-Carlo estimate with a known spread (|F|/√rows at rate 0.5).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from skipln.errors import ConfigError
from skipln.skip import (
    B2T,
    Admin,
    BlockSite,
    DeepNorm,
    DropPath,
    DroppedBranch,
    LearnableSkipLN,
    Plain,
    PostLN,
    PreLN,
    RecursiveSkipLN,
    ResiDual,
    ReZero,
    SandwichLN,
    Scaled,
    SkipInit,
    SkipStrategy,
    linear_drop_rates,
    split_branch,
)

FEATURES = 6
ROWS = 40_000
RATE = 0.5
TOLERANCE = 0.15  # > 5 standard errors of the mean for branch entries up to |F| ≈ 6


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomize(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-1.0, 1.0)
    return module


def copies_of_one_input() -> Tensor:
    return torch.randn(1, FEATURES).expand(ROWS, FEATURES).contiguous()


def training_drop() -> DropPath:
    return DropPath(RATE).train()


def identity_norm(features: int) -> nn.Module:
    return nn.Identity()


def mean_and_inference(run: Callable[[Callable[[Tensor], Tensor]], Tensor], body: nn.Module) -> tuple[Tensor, Tensor]:
    """``run`` with the branch dropped (mean over rows), and with the plain body (row 0)."""
    return run(DroppedBranch(body, training_drop())).mean(dim=0), run(body)[0]


# --------------------------------------------------------------------------- the drop itself


def test_linear_decay_rule_gives_block_l_of_L_the_rate_l_over_L() -> None:
    assert linear_drop_rates(0.2, 4) == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert linear_drop_rates(0.0, 3) == [0.0, 0.0, 0.0]


def test_drop_path_zeroes_whole_samples_and_scales_the_kept_ones_by_one_over_keep() -> None:
    branch = torch.randn(1000, 3, 4) + 3.0
    out = training_drop()(branch)
    dropped = (out == 0).flatten(1).all(dim=1)
    kept = torch.isclose(out, branch / (1 - RATE)).flatten(1).all(dim=1)
    assert torch.all(dropped ^ kept)
    assert 0.4 < dropped.float().mean().item() < 0.6


@pytest.mark.parametrize("drop", [DropPath(RATE).eval(), DropPath(0.0).train()], ids=["eval", "rate0"])
def test_drop_path_passes_the_branch_unchanged_in_eval_mode_or_at_rate_zero(drop: DropPath) -> None:
    branch = torch.randn(8, 5)
    assert drop(branch) is branch


@pytest.mark.parametrize("rate", [-0.1, 1.0, True, "0.1"])
def test_a_rate_outside_zero_to_one_is_refused(rate: object) -> None:
    with pytest.raises(ConfigError, match=r"'rate' must be a probability in \[0, 1\)"):
        DropPath(rate)  # type: ignore[arg-type]


def test_split_branch_gives_body_and_drop_of_a_dropped_branch_and_identity_otherwise() -> None:
    body, drop = nn.Linear(2, 2), DropPath(0.3)
    assert split_branch(DroppedBranch(body, drop)) == (body, drop)
    plain_body, keep = split_branch(body)
    x = torch.randn(2, 2)
    assert plain_body is body and keep(x) is x


# --------------------------------------------------------------------------- additive families: E[y] is the inference output


ADDITIVE = [Plain(), Scaled(2.0), ReZero(), SkipInit(0.5), PreLN(), SandwichLN()]


@pytest.mark.parametrize("strategy", ADDITIVE, ids=lambda s: s.tag)
def test_additive_families_keep_the_expected_output_equal_to_inference(strategy: SkipStrategy) -> None:
    # ReZero's α starts at 0; randomize() gives every parameter (α, the norms' affine) a value.
    connection = randomize(strategy.build(FEATURES))
    body = randomize(nn.Linear(FEATURES, FEATURES))
    x = copies_of_one_input()
    mean, inference = mean_and_inference(lambda branch: connection(x, branch), body)
    torch.testing.assert_close(mean, inference, atol=TOLERANCE, rtol=0)


def test_sandwich_ln_drops_after_its_second_norm_so_a_dropped_block_is_the_identity() -> None:
    connection = randomize(SandwichLN().build(FEATURES))
    body = randomize(nn.Linear(FEATURES, FEATURES))
    x = copies_of_one_input()
    y = connection(x, DroppedBranch(body, training_drop()))
    identity_rows = torch.isclose(y, x).all(dim=1)
    assert 0.4 < identity_rows.float().mean().item() < 0.6


def test_residual_keeps_the_expected_unnormalized_stream_equal_to_inference() -> None:
    strategy = ResiDual()
    connection = randomize(strategy.build(FEATURES))
    boundary = strategy.build_boundary(FEATURES)
    body = randomize(nn.Linear(FEATURES, FEATURES))
    x = copies_of_one_input()
    mean, inference = mean_and_inference(lambda branch: connection(boundary.enter(x), branch).total, body)
    torch.testing.assert_close(mean, inference, atol=TOLERANCE, rtol=0)


# --------------------------------------------------------------------------- normalized sums: E[sum inside the norm] is kept


POST_NORM = [PostLN(), PostLN(2.0), RecursiveSkipLN(2), RecursiveSkipLN(3), DeepNorm(), Admin(), LearnableSkipLN(0.5)]


@pytest.mark.parametrize("strategy", POST_NORM, ids=lambda s: s.tag)
def test_normalized_families_keep_the_expected_sum_inside_the_norm(strategy: SkipStrategy) -> None:
    # With the norm taken out (an identity "norm"), what remains is the sum the norm receives.
    connection = randomize(strategy.build(FEATURES, norm=identity_norm)).eval()  # eval: Admin unprofiled
    body = randomize(nn.Linear(FEATURES, FEATURES))
    x = copies_of_one_input()
    mean, inference = mean_and_inference(lambda branch: connection(x, branch), body)
    torch.testing.assert_close(mean, inference, atol=TOLERANCE, rtol=0)


def test_b2t_keeps_the_expected_sums_inside_its_norms_over_a_layer() -> None:
    strategy = B2T()
    sites = [BlockSite(0, 1, "encoder", j, 2) for j in range(2)]
    connections = [randomize(strategy.build(FEATURES, norm=identity_norm, site=site)) for site in sites]
    boundary = strategy.build_boundary(FEATURES)
    bodies = [randomize(nn.Linear(FEATURES, FEATURES)) for _ in sites]
    x = copies_of_one_input()

    def layer(dropped: bool) -> Tensor:
        h = boundary.enter(x)
        for connection, body in zip(connections, bodies, strict=True):
            h = connection(h, DroppedBranch(body, training_drop()) if dropped else body)
        return boundary(h)

    torch.testing.assert_close(layer(dropped=True).mean(dim=0), layer(dropped=False)[0], atol=2 * TOLERANCE, rtol=0)


@pytest.mark.parametrize("strategy", [PostLN(), PostLN(2.0), RecursiveSkipLN(2), DeepNorm()], ids=lambda s: s.tag)
def test_a_dropped_normalized_block_is_its_formula_with_a_zero_branch(strategy: SkipStrategy) -> None:
    # Post-LN dropped is LN(x), rSkip+LN dropped LN(x + LN(x)): the definition LN(λx + drop(F(x))).
    connection = randomize(strategy.build(FEATURES))
    body = randomize(nn.Linear(FEATURES, FEATURES))
    x = torch.randn(1, FEATURES).expand(400, FEATURES).contiguous()
    y = connection(x, DroppedBranch(body, training_drop()))
    dropped = connection(x, torch.zeros_like)
    kept = connection(x, lambda t: body(t) / (1 - RATE))
    is_dropped = torch.isclose(y, dropped, atol=1e-6).all(dim=1)
    is_kept = torch.isclose(y, kept, atol=1e-6).all(dim=1)
    assert torch.all(is_dropped ^ is_kept) and is_dropped.any() and is_kept.any()

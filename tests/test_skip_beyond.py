"""The strategies beyond the paper compute exactly the formulas of their papers.

DeepNorm (Wang et al. 2022), ReZero (Bachlechner et al. 2020), SkipInit (De & Smith 2020),
Admin (Liu et al. 2020), Sandwich-LN (Ding et al. 2021), B2T (Takase et al. 2023), ResiDual
(Xie et al. 2023) and the learnable-λ Skip + LN; each is checked against the formula written
out by hand, with norms whose affine parameters are random so that a skipped or swapped norm
shows.
"""

from __future__ import annotations

import math
import multiprocessing
import pickle
import socket
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from torch import Tensor, nn

from skipln.errors import ConfigError
from skipln.skip import (
    B2T,
    Admin,
    BlockSite,
    DeepNorm,
    LearnableSkipLN,
    ReZero,
    ResiDual,
    SandwichLN,
    SkipInit,
    SkipStrategy,
    needs_profiling,
    profile,
)
from skipln.skip.base import FinalNorm, StackBoundary
from skipln.skip.deepnorm import deepnorm_constants

FEATURES = 6
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "skip"

NEW_STRATEGIES: list[SkipStrategy] = [
    DeepNorm(),
    ReZero(),
    SkipInit(),
    Admin(),
    SandwichLN(),
    B2T(),
    ResiDual(),
    LearnableSkipLN(),
]


def ln(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    """LayerNorm written out, with the module's own affine parameters."""
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def gn1(x: Tensor, norm: nn.GroupNorm) -> Tensor:
    """GroupNorm(1, C) written out: LN over (C, H, W) with a per-channel affine."""
    mean = x.mean((1, 2, 3), keepdim=True)
    var = x.var((1, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)


def randomize(module: nn.Module) -> nn.Module:
    """Random parameters, so a test notices a norm or scale that is skipped or swapped."""
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-2.0, 2.0)
    return module


def linear() -> nn.Linear:
    return randomize(nn.Linear(FEATURES, FEATURES))


def var(t: Tensor) -> float:
    return t.var(unbiased=False).item()


@pytest.fixture
def x() -> Tensor:
    return torch.randn(3, 5, FEATURES)


def encoder_sites(depth: int, sublayers: int = 1) -> list[BlockSite]:
    return [
        BlockSite(layer=i, depth=depth, stack="encoder", sublayer=j, sublayers=sublayers)
        for i in range(depth)
        for j in range(sublayers)
    ]


def run_stack(strategy: SkipStrategy, x: Tensor, bodies: Sequence[Callable[[Tensor], Tensor]], sites: Sequence[BlockSite]):
    """A toy model: one boundary around one connection per body; returns (y, connections, boundary)."""
    # eval(): Admin warns when trained before its profiling pass, which these formula checks skip.
    connections = [randomize(strategy.build(FEATURES, site=site)).eval() for site in sites]
    boundary = randomize(strategy.build_boundary(FEATURES, site=sites[-1]))
    h = boundary.enter(x)
    for connection, body in zip(connections, bodies, strict=True):
        h = connection(h, body)
    return boundary(h), connections, boundary


# --- DeepNorm ---------------------------------------------------------------------------


def test_deepnorm_is_ln_of_alpha_x_plus_f(x: Tensor) -> None:
    site = BlockSite(layer=2, depth=6, stack="encoder", encoder_depth=6, decoder_depth=6)
    connection = randomize(DeepNorm().build(FEATURES, site=site))
    body = linear()
    alpha = 0.81 * (6**4 * 6) ** (1 / 16)
    torch.testing.assert_close(connection(x, body), ln(alpha * x + body(x), connection.norm))


@pytest.mark.parametrize(
    ("site", "alpha", "beta"),
    [
        # encoder-decoder, 6+6: the values DeepNet's Table 1 gives (α ≈ 1.42, β ≈ 0.50; α ≈ 2.06, β ≈ 0.34)
        (BlockSite(depth=6, stack="encoder", encoder_depth=6, decoder_depth=6), 0.81 * 7776 ** (1 / 16), 0.87 * 7776 ** (-1 / 16)),
        (BlockSite(depth=6, stack="decoder", encoder_depth=6, decoder_depth=6), 18**0.25, 72**-0.25),
        # encoder-decoder, 18+18
        (BlockSite(depth=18, stack="encoder", encoder_depth=18, decoder_depth=18), 0.81 * (18**5) ** (1 / 16), 0.87 * (18**5) ** (-1 / 16)),
        (BlockSite(depth=18, stack="decoder", encoder_depth=18, decoder_depth=18), 54**0.25, 216**-0.25),
        # encoder-only and decoder-only, 6 layers
        (BlockSite(depth=6, stack="encoder", encoder_depth=6), 12**0.25, 48**-0.25),
        (BlockSite(depth=6, stack="decoder", decoder_depth=6), 12**0.25, 48**-0.25),
    ],
)
def test_deepnorm_constants_are_the_papers(site: BlockSite, alpha: float, beta: float) -> None:
    assert deepnorm_constants(site) == pytest.approx((alpha, beta), rel=1e-12)


def test_deepnorm_constants_for_six_plus_six_match_the_published_rounding() -> None:
    encoder = deepnorm_constants(BlockSite(depth=6, stack="encoder", encoder_depth=6, decoder_depth=6))
    decoder = deepnorm_constants(BlockSite(depth=6, stack="decoder", encoder_depth=6, decoder_depth=6))
    assert encoder == pytest.approx((1.42, 0.50), abs=0.005)
    assert decoder == pytest.approx((2.06, 0.34), abs=0.005)


class ToyAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))


def test_deepnorm_init_branch_gives_xavier_normal_with_gain_beta_except_query_and_key() -> None:
    d = 128
    site = BlockSite(depth=6, stack="encoder", encoder_depth=6, decoder_depth=6)
    _, beta = deepnorm_constants(site)
    connection = DeepNorm().build(d, site=site)
    attention, ffn = ToyAttention(d), nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))
    connection.init_branch(attention)
    connection.init_branch(ffn)

    def xavier_std(layer: nn.Linear, gain: float) -> float:
        return gain * math.sqrt(2.0 / (layer.in_features + layer.out_features))

    expected = [
        (attention.q_proj, 1.0),
        (attention.k_proj, 1.0),
        (attention.v_proj, beta),
        (attention.out_proj, beta),
        (ffn[0], beta),
        (ffn[2], beta),
    ]
    for layer, gain in expected:
        assert layer.weight.std().item() == pytest.approx(xavier_std(layer, gain), rel=0.03)
        assert layer.weight.mean().item() == pytest.approx(0.0, abs=0.01)


def test_deepnorm_init_branch_handles_torch_multihead_attention() -> None:
    d = 128
    beta = 0.3
    attention = nn.MultiheadAttention(d, num_heads=4)
    DeepNorm(beta=beta).build(d, site=BlockSite(depth=6)).init_branch(attention)
    q, k, v = attention.in_proj_weight.chunk(3)
    for weight, gain in ((q, 1.0), (k, 1.0), (v, beta), (attention.out_proj.weight, beta)):
        assert weight.std().item() == pytest.approx(gain / math.sqrt(d), rel=0.03)


def test_deepnorm_overrides_replace_the_constants(x: Tensor) -> None:
    connection = randomize(DeepNorm(alpha=3.0, beta=0.2).build(FEATURES, site=BlockSite(depth=12)))
    assert (connection.alpha, connection.beta) == (3.0, 0.2)
    body = linear()
    torch.testing.assert_close(connection(x, body), ln(3.0 * x + body(x), connection.norm))


def test_deepnorm_rejects_a_resnet_stack_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="'encoder' and 'decoder' stacks.*'backbone'.*PostLN"):
        DeepNorm().build(16, site=BlockSite(depth=9, stack="backbone"))


def test_deepnorm_init_branch_rejects_a_body_without_linear_layers() -> None:
    with pytest.raises(ConfigError, match="Conv2d has none"):
        DeepNorm().build(4, site=BlockSite(depth=2)).init_branch(nn.Conv2d(4, 4, 3))


# --- ReZero and SkipInit ------------------------------------------------------------------


def test_rezero_block_is_the_identity_at_initialisation(x: Tensor) -> None:
    torch.testing.assert_close(ReZero().build(FEATURES)(x, linear()), x)


def test_rezero_is_x_plus_alpha_f(x: Tensor) -> None:
    connection = randomize(ReZero().build(FEATURES))
    body = linear()
    torch.testing.assert_close(connection(x, body), x + connection.alpha * body(x))


def test_rezero_has_exactly_one_scalar_parameter_and_no_norm() -> None:
    parameters = list(ReZero().build(FEATURES, norm=nn.LayerNorm).parameters())
    assert [p.shape for p in parameters] == [torch.Size([])]


def test_skipinit_starts_alpha_at_the_given_value() -> None:
    assert SkipInit().build(FEATURES).alpha.item() == 0.0
    assert SkipInit(0.1).build(FEATURES).alpha.item() == pytest.approx(0.1)


def test_skipinit_inv_sqrt_depth_counts_every_residual_block_of_the_stack() -> None:
    site = BlockSite(layer=0, depth=6, sublayers=2, stack="encoder")
    assert SkipInit("inv_sqrt_depth").build(FEATURES, site=site).alpha.item() == pytest.approx(1 / math.sqrt(12))


def test_skipinit_scales_the_body_and_shortcuts_the_skip() -> None:
    x = torch.randn(2, 4, 5, 5)
    connection = SkipInit(0.25).build(8)
    shortcut, body = nn.Conv2d(4, 8, 1), nn.Conv2d(4, 8, 3, padding=1)
    torch.testing.assert_close(connection(x, body, shortcut), shortcut(x) + 0.25 * body(x))


# --- Admin --------------------------------------------------------------------------------


def test_admin_is_ln_of_omega_times_x_plus_f(x: Tensor) -> None:
    connection = randomize(Admin().build(FEATURES)).eval()
    body = linear()
    omega = connection.omega.weight
    assert omega.shape == (FEATURES,)
    torch.testing.assert_close(connection(x, body), ln(omega * x + body(x), connection.norm))


def test_admin_profiling_sets_omega_to_the_accumulated_variances_of_a_three_block_stack() -> None:
    connections = [randomize(Admin().build(FEATURES, site=site)) for site in encoder_sites(3)]
    bodies = [linear() for _ in range(3)]
    model = nn.ModuleList(connections)
    x = 3.0 * torch.randn(4, 5, FEATURES)

    def run() -> None:
        h = x
        for connection, body in zip(connections, bodies, strict=True):
            h = connection(h, body)

    assert profile(model, run) == 3

    # Admin's rule written out: ω₁ = 1; ω_{i+1}² = Var[ω_i·x_i] + Var[F_i(x_i)].
    expected, omega, h = [], 1.0, x
    with torch.no_grad():
        for connection, body in zip(connections, bodies, strict=True):
            expected.append(omega)
            f = body(h)
            omega_next = math.sqrt(var(omega * h) + var(f))
            h = ln(omega * h + f, connection.norm)
            omega = omega_next
    assert expected[1] > 1.0 and expected[2] > expected[1]
    for connection, value in zip(connections, expected, strict=True):
        torch.testing.assert_close(connection.omega.weight, torch.full((FEATURES,), value))


def test_admin_accumulates_encoder_and_decoder_apart() -> None:
    encoder = [Admin().build(FEATURES, site=BlockSite(layer=i, depth=2, stack="encoder")) for i in range(2)]
    decoder = [Admin().build(FEATURES, site=BlockSite(layer=i, depth=2, stack="decoder")) for i in range(2)]
    model = nn.ModuleList(encoder + decoder)
    x = torch.randn(2, 3, FEATURES)

    def run() -> None:
        for stack in (encoder, decoder):
            h = x
            for connection in stack:
                h = connection(h, linear())

    profile(model, run)
    assert encoder[0].omega.weight[0].item() == 1.0
    assert decoder[0].omega.weight[0].item() == 1.0
    assert decoder[1].omega.weight[0].item() > 1.0


def test_admin_needs_profiling_until_profiled_and_not_after() -> None:
    model = nn.ModuleList([Admin().build(FEATURES)])
    assert needs_profiling(model)
    profile(model, lambda: model[0](torch.randn(2, FEATURES), linear()))
    assert not needs_profiling(model)


def test_admin_profiled_state_survives_a_checkpoint() -> None:
    trained = nn.ModuleList([Admin().build(FEATURES)])
    profile(trained, lambda: trained[0](torch.randn(2, FEATURES), linear()))
    restored = nn.ModuleList([Admin().build(FEATURES)])
    restored.load_state_dict(trained.state_dict())
    assert not needs_profiling(restored)
    torch.testing.assert_close(restored[0].omega.weight, trained[0].omega.weight)


def test_profile_that_misses_a_connection_names_it_and_changes_nothing() -> None:
    model = nn.ModuleDict({name: Admin().build(FEATURES) for name in ("first", "second", "third")})

    def run_two_of_three() -> None:
        model["second"](model["first"](3.0 * torch.randn(2, FEATURES), linear()), linear())

    with pytest.raises(RuntimeError, match=r"did not reach 1 of 3 .*\(third\)"):
        profile(model, run_two_of_three)
    for connection in model.values():
        assert connection.needs_profiling
        torch.testing.assert_close(connection.omega.weight, torch.ones(FEATURES))


def test_profile_of_a_model_without_such_connections_does_not_run_it() -> None:
    calls = []
    assert profile(nn.ModuleList([SandwichLN().build(FEATURES)]), lambda: calls.append(1)) == 0
    assert calls == []


def _profile_on_one_rank(rank: int, world_size: int, port: int, results: Any) -> None:
    # One thread: a forked child must not reuse the parent's OpenMP pool.
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size, timeout=timedelta(seconds=20)
    )
    try:
        torch.manual_seed(0)
        model = nn.ModuleList(Admin().build(FEATURES, site=site) for site in encoder_sites(2))
        body = linear()
        torch.manual_seed(100 + rank)
        batch = (1.0 + rank) * torch.randn(3, FEATURES)  # each rank profiles its own batch
        profile(model, lambda: model[1](model[0](batch, body), body))
        results.put((rank, [c.omega.weight.tolist() for c in model], needs_profiling(model)))
    finally:
        torch.distributed.destroy_process_group()


def test_profile_under_distributed_leaves_every_rank_with_rank_zeros_omega() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_profile_on_one_rank, args=(rank, 2, port, results)) for rank in range(2)]
    for worker in workers:
        worker.start()
    try:
        outcome = dict((rank, rest) for rank, *rest in (results.get(timeout=30) for _ in workers))
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    (omega_0, pending_0), (omega_1, pending_1) = outcome[0], outcome[1]
    assert omega_0[1][0] > 1.0
    assert omega_0 == omega_1
    assert not pending_0 and not pending_1


def test_admin_warns_when_trained_before_profiling(x: Tensor) -> None:
    connection = Admin().build(FEATURES).train()
    with pytest.warns(UserWarning, match="before the profiling pass"):
        connection(x, linear())


# --- Sandwich-LN --------------------------------------------------------------------------


def test_sandwich_ln_is_x_plus_ln_of_f_of_ln_x(x: Tensor) -> None:
    connection = randomize(SandwichLN().build(FEATURES))
    body = linear()
    expected = x + ln(body(ln(x, connection.norm_in)), connection.norm_out)
    torch.testing.assert_close(connection(x, body), expected)


def test_sandwich_ln_normalizes_input_and_output_at_their_own_widths_where_the_block_widens() -> None:
    connection = randomize(SandwichLN().build(FEATURES, site=BlockSite(in_features=4)))
    body, shortcut = randomize(nn.Linear(4, FEATURES)), randomize(nn.Linear(4, FEATURES))
    x = torch.randn(3, 4)
    expected = shortcut(x) + ln(body(ln(x, connection.norm_in)), connection.norm_out)
    torch.testing.assert_close(connection(x, body, shortcut), expected)


def test_sandwich_ln_ends_the_stack_with_a_norm() -> None:
    assert isinstance(SandwichLN().build_boundary(FEATURES), FinalNorm)


# --- B2T ----------------------------------------------------------------------------------


def test_b2t_encoder_stack_equals_the_hand_unrolled_layers(x: Tensor) -> None:
    bodies = [linear() for _ in range(4)]  # layer 0: attention, FFN; layer 1: attention, FFN
    y, connections, _ = run_stack(B2T(), x, bodies, encoder_sites(2, sublayers=2))
    norms = [c.norm for c in connections]
    h = x
    for layer in range(2):
        attention, ffn = bodies[2 * layer], bodies[2 * layer + 1]
        inner = ln(h + attention(h), norms[2 * layer])
        h = ln(inner + ffn(inner) + h, norms[2 * layer + 1])
    torch.testing.assert_close(y, h)


def test_b2t_decoder_layer_adds_its_input_before_the_last_of_three_norms(x: Tensor) -> None:
    sites = [BlockSite(layer=0, depth=1, stack="decoder", sublayer=j, sublayers=3) for j in range(3)]
    self_attention, cross_attention, ffn = bodies = [linear() for _ in range(3)]
    y, connections, _ = run_stack(B2T(), x, bodies, sites)
    n0, n1, n2 = (c.norm for c in connections)
    h1 = ln(x + self_attention(x), n0)
    h2 = ln(h1 + cross_attention(h1), n1)
    torch.testing.assert_close(y, ln(h2 + ffn(h2) + x, n2))


def test_b2t_rejects_one_block_layers() -> None:
    with pytest.raises(ConfigError, match="sublayers=1"):
        B2T().build(16, site=BlockSite(layer=0, depth=9, stack="backbone"))


def test_b2t_connection_given_a_tensor_says_to_enter_the_boundary(x: Tensor) -> None:
    connection = B2T().build(FEATURES, site=encoder_sites(1, sublayers=2)[0])
    with pytest.raises(TypeError, match=r"boundary\.enter\(x\)"):
        connection(x, linear())


# --- ResiDual -----------------------------------------------------------------------------


def test_residual_stack_equals_the_hand_unrolled_dual_streams(x: Tensor) -> None:
    bodies = [linear() for _ in range(3)]
    y, connections, boundary = run_stack(ResiDual(), x, bodies, encoder_sites(3))
    a = d = x
    for connection, body in zip(connections, bodies, strict=True):
        f = body(a)
        a, d = ln(a + f, connection.norm), d + f
    torch.testing.assert_close(y, a + ln(d, boundary.norm))


def test_residual_applies_a_shortcut_to_both_streams() -> None:
    x = torch.randn(2, 4, 3, 3)
    strategy = ResiDual()
    norm = lambda c: nn.GroupNorm(1, c)  # noqa: E731
    connection = randomize(strategy.build(8, norm=norm))
    boundary = randomize(strategy.build_boundary(8, norm=norm))
    shortcut, body = nn.Conv2d(4, 8, 1), nn.Conv2d(4, 8, 1)
    y = boundary(connection(boundary.enter(x), body, shortcut))
    f = body(x)
    a, d = gn1(shortcut(x) + f, connection.norm), shortcut(x) + f
    torch.testing.assert_close(y, a + gn1(d, boundary.norm))


# --- Learnable λ --------------------------------------------------------------------------


def test_learnable_skip_ln_is_ln_of_lambda_x_plus_f(x: Tensor) -> None:
    connection = randomize(LearnableSkipLN().build(FEATURES))
    body = linear()
    torch.testing.assert_close(connection(x, body), ln(connection.scale.weight * x + body(x), connection.norm))


def test_learnable_skip_ln_per_channel_scales_the_channels_of_feature_maps() -> None:
    x = torch.randn(2, 4, 3, 3)
    connection = randomize(LearnableSkipLN(per_channel=True).build(4, norm=lambda c: nn.GroupNorm(1, c)))
    body = randomize(nn.Conv2d(4, 4, 1))
    lam = connection.scale.weight.view(1, 4, 1, 1)
    torch.testing.assert_close(connection(x, body), gn1(lam * x + body(x), connection.norm))


def test_learnable_skip_ln_starts_at_init() -> None:
    assert LearnableSkipLN(0.5).build(FEATURES).scale.weight.item() == 0.5
    torch.testing.assert_close(LearnableSkipLN(2.0, per_channel=True).build(3).scale.weight, torch.full((3,), 2.0))


@pytest.mark.parametrize("per_channel", [False, True])
def test_learnable_lambda_receives_a_gradient(x: Tensor, per_channel: bool) -> None:
    connection = LearnableSkipLN(per_channel=per_channel).build(FEATURES)
    y = connection(x, linear())
    (y * torch.randn_like(y)).sum().backward()
    grad = connection.scale.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().min() > 0


def test_per_channel_scale_on_a_mismatched_layout_says_what_to_fix() -> None:
    connection = LearnableSkipLN(per_channel=True).build(4)  # LayerNorm: channels last
    with pytest.raises(ValueError, match="per-channel scale of 4 channels at axis -1"):
        connection(torch.randn(2, 4, 3, 3), torch.zeros_like)


# --- every new strategy -------------------------------------------------------------------


@pytest.mark.parametrize("strategy", NEW_STRATEGIES, ids=lambda s: s.tag)
def test_stack_keeps_the_shape_and_calls_each_body_once(x: Tensor, strategy: SkipStrategy) -> None:
    calls: list[int] = []

    def body(index: int) -> Callable[[Tensor], Tensor]:
        layer = linear()

        def f(t: Tensor) -> Tensor:
            calls.append(index)
            return layer(t)

        return f

    y, _, _ = run_stack(strategy, x, [body(i) for i in range(4)], encoder_sites(2, sublayers=2))
    assert isinstance(y, Tensor) and y.shape == x.shape
    assert calls == [0, 1, 2, 3]


@pytest.mark.parametrize("strategy", NEW_STRATEGIES, ids=lambda s: s.tag)
def test_normalizations_come_from_the_norm_argument(strategy: SkipStrategy) -> None:
    sites = [BlockSite(layer=0, depth=1, stack="decoder", sublayer=j, sublayers=2) for j in range(2)]
    made: list[nn.Module] = []

    def norm(channels: int) -> nn.Module:
        made.append(nn.GroupNorm(1, channels))
        return made[-1]

    modules = [strategy.build(4, norm=norm, site=site) for site in sites] + [strategy.build_boundary(4, norm=norm)]
    norms = [m for module in modules for m in module.modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm))]
    assert {id(m) for m in norms} == {id(m) for m in made}
    assert not any(isinstance(m, nn.LayerNorm) for m in norms)


def test_only_b2t_and_residual_have_a_stream_that_is_not_a_tensor() -> None:
    assert {s.tag for s in NEW_STRATEGIES if not s.tensor_stream} == {"b2t", "residual"}


@pytest.mark.parametrize("strategy", [s for s in NEW_STRATEGIES if s.tensor_stream], ids=lambda s: s.tag)
def test_tensor_stream_strategies_pass_the_tensor_through_their_boundary(strategy: SkipStrategy, x: Tensor) -> None:
    boundary = strategy.build_boundary(FEATURES)
    assert boundary.enter(x) is x
    assert type(boundary) is StackBoundary or isinstance(boundary, FinalNorm)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("class_path: skipln.skip.DeepNorm", DeepNorm()),
        ("class_path: skipln.skip.DeepNorm\ninit_args: {alpha: 2, beta: 0.5}", DeepNorm(alpha=2.0, beta=0.5)),
        ("class_path: skipln.skip.ReZero", ReZero()),
        ("class_path: skipln.skip.SkipInit\ninit_args: {init: 0.1}", SkipInit(0.1)),
        ("class_path: skipln.skip.SkipInit\ninit_args: {init: inv_sqrt_depth}", SkipInit("inv_sqrt_depth")),
        ("class_path: skipln.skip.Admin", Admin()),
        ("class_path: skipln.skip.SandwichLN", SandwichLN()),
        ("class_path: skipln.skip.B2T", B2T()),
        ("class_path: skipln.skip.ResiDual", ResiDual()),
        ("class_path: skipln.skip.LearnableSkipLN\ninit_args: {init: 0.5, per_channel: true}", LearnableSkipLN(0.5, True)),
    ],
)
def test_strategy_round_trips_through_yaml_class_path(yaml_text: str, expected: SkipStrategy) -> None:
    parser = ArgumentParser()
    parser.add_argument("--skip", type=SkipStrategy)
    config = parser.parse_string("skip:\n  " + yaml_text.replace("\n", "\n  "))
    assert parser.instantiate_classes(config).skip == expected
    assert parser.instantiate_classes(parser.parse_string(parser.dump(config))).skip == expected


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("deepnorm.yaml", DeepNorm()),
        ("rezero.yaml", ReZero()),
        ("skipinit.yaml", SkipInit(0.0)),
        ("admin.yaml", Admin()),
        ("sandwich_ln.yaml", SandwichLN()),
        ("b2t.yaml", B2T()),
        ("residual.yaml", ResiDual()),
        ("learnable_ln.yaml", LearnableSkipLN(1.0, per_channel=False)),
        ("learnable_ln_channel.yaml", LearnableSkipLN(1.0, per_channel=True)),
    ],
)
def test_skip_config_file_sets_only_the_models_strategy(file: str, expected: SkipStrategy) -> None:
    config: dict[str, Any] = yaml.safe_load((CONFIGS / file).read_text())
    skip = config["model"]["init_args"]["net"]["init_args"]["skip"]
    assert list(config) == ["model"] and list(config["model"]) == ["init_args"]
    assert list(config["model"]["init_args"]) == ["net"] and list(config["model"]["init_args"]["net"]) == ["init_args"]
    assert list(config["model"]["init_args"]["net"]["init_args"]) == ["skip"]
    parser = ArgumentParser()
    parser.add_argument("--skip", type=SkipStrategy)
    assert parser.instantiate_classes(parser.parse_object({"skip": skip})).skip == expected


@pytest.mark.parametrize("strategy", [*NEW_STRATEGIES, DeepNorm(1.5, 0.3), SkipInit("inv_sqrt_depth")], ids=repr)
def test_strategies_pickle_and_compare_by_hyperparameters(strategy: SkipStrategy) -> None:
    copy = pickle.loads(pickle.dumps(strategy))
    assert copy == strategy and hash(copy) == hash(strategy)


def test_strategies_with_different_hyperparameters_differ() -> None:
    assert DeepNorm() != DeepNorm(alpha=2.0)
    assert SkipInit(0.0) != SkipInit(0.1)
    assert LearnableSkipLN() != LearnableSkipLN(per_channel=True)
    assert ReZero() != SkipInit()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DeepNorm(alpha=0.0), "'alpha' must be a real number > 0"),
        (lambda: DeepNorm(beta=-1.0), "'beta' must be a real number > 0"),
        (lambda: DeepNorm(alpha=float("nan")), "'alpha' must be a finite real number"),
        (lambda: SkipInit("zero"), "'init' must be a finite real number or 'inv_sqrt_depth'"),
        (lambda: SkipInit(float("inf")), "'init' must be a finite real number"),
        (lambda: LearnableSkipLN(init=float("nan")), "'init' must be a finite real number"),
        (lambda: LearnableSkipLN(per_channel="yes"), "'per_channel' must be true or false"),  # type: ignore[arg-type]
    ],
)
def test_invalid_hyperparameters_name_the_argument_and_allowed_values(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


@pytest.mark.parametrize(
    ("strategy", "tag"),
    [
        (DeepNorm(), "deepnorm"),
        (DeepNorm(alpha=2.0, beta=0.5), "deepnorm-a2-b0.5"),
        (ReZero(), "rezero"),
        (SkipInit(), "skipinit"),
        (SkipInit(0.1), "skipinit-0.1"),
        (SkipInit("inv_sqrt_depth"), "skipinit-inv_sqrt_depth"),
        (Admin(), "admin"),
        (SandwichLN(), "sandwich_ln"),
        (B2T(), "b2t"),
        (ResiDual(), "residual"),
        (LearnableSkipLN(), "learnable_ln"),
        (LearnableSkipLN(0.5, per_channel=True), "learnable_ln-channel-init0.5"),
    ],
)
def test_tags_name_strategy_and_hyperparameters(strategy: SkipStrategy, tag: str) -> None:
    assert strategy.tag == tag

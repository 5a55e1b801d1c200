"""The encoder-decoder Transformer: shapes, masks, the skip-strategy contract, embeddings, incremental decoding."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from skipln.errors import ConfigError
from skipln.models.attention import MultiheadAttention
from skipln.models.transformer import (
    FeedForward,
    SinusoidalPositions,
    Transformer,
    transformer_base,
    transformer_big,
    transformer_iwslt_de_en,
)
from skipln.skip import (
    B2T,
    Admin,
    BlockSite,
    DeepNorm,
    Plain,
    PostLN,
    PreLN,
    RecursiveSkipLN,
    ResiDual,
    ReZero,
    SandwichLN,
    SkipConnection,
    SkipStrategy,
    StackBoundary,
)

VOCAB = 23


def tiny(skip: SkipStrategy | None = None, **overrides: Any) -> Transformer:
    """A 2+2-layer model, small enough for milliseconds per forward; eval mode (no dropout)."""
    args: dict[str, Any] = {"encoder_layers": 2, "decoder_layers": 2, "dim": 16, "ffn_dim": 32, "heads": 2, **overrides}
    if skip is not None:
        args["skip"] = skip
    return Transformer(VOCAB, **args).eval()


def tokens(*shape: int) -> Tensor:
    return torch.randint(3, VOCAB, shape)


# --------------------------------------------------------------------------- shapes and masks


def test_forward_gives_logits_per_target_position_over_the_vocabulary() -> None:
    model = tiny()
    logits = model(tokens(3, 7), torch.tensor([7, 4, 1]), tokens(3, 5))
    assert logits.shape == (3, 5, VOCAB)


def test_source_padding_never_changes_the_encoder_output_at_real_tokens() -> None:
    model = tiny()
    src = tokens(1, 5)
    alone = model.encode(src, torch.tensor([5])).states
    padded_src = torch.cat([src, tokens(1, 4)], dim=1)  # junk after the real tokens: must be masked
    padded = model.encode(padded_src, torch.tensor([5])).states
    torch.testing.assert_close(padded[:, :5], alone)


def test_source_padding_never_changes_the_decoder_output() -> None:
    model = tiny()
    src, prev = tokens(1, 5), tokens(1, 4)
    alone = model(src, torch.tensor([5]), prev)
    padded = model(torch.cat([src, tokens(1, 3)], dim=1), torch.tensor([5]), prev)
    torch.testing.assert_close(padded, alone)


def test_target_padding_never_changes_the_logits_at_real_positions() -> None:
    model = tiny()
    src, prev = tokens(1, 5), tokens(1, 4)
    alone = model(src, torch.tensor([5]), prev)
    padded = model(src, torch.tensor([5]), torch.cat([prev, tokens(1, 3)], dim=1))
    torch.testing.assert_close(padded[:, :4], alone)


def test_decoder_is_causal_a_token_affects_its_own_and_later_positions_only() -> None:
    model = tiny()
    src, prev = tokens(1, 5), tokens(1, 6)
    before = model(src, torch.tensor([5]), prev)
    changed = prev.clone()
    changed[0, 3] = (prev[0, 3] + 1 - 3) % (VOCAB - 3) + 3
    after = model(src, torch.tensor([5]), changed)
    torch.testing.assert_close(after[:, :3], before[:, :3])
    assert not torch.allclose(after[:, 3:], before[:, 3:])


def test_decoder_rows_may_be_a_multiple_of_the_encoder_batch() -> None:
    # Beam search keeps one encoder row per sentence and k consecutive decoder rows for it.
    model = tiny()
    src, lengths, prev = tokens(2, 6), torch.tensor([6, 3]), tokens(6, 4)
    grouped = model.decode(prev, model.encode(src, lengths))
    repeated = model.decode(prev, model.encode(src.repeat_interleave(3, 0), lengths.repeat_interleave(3)))
    torch.testing.assert_close(grouped, repeated)


def test_decode_last_only_projects_just_the_last_position_onto_the_vocabulary() -> None:
    # A search without a cache reads only the newest position: the others' projection is wasted work.
    model = tiny()
    src, lengths, prev = tokens(2, 6), torch.tensor([6, 3]), tokens(2, 5)
    encoder_out = model.encode(src, lengths)
    projected: list[tuple[int, ...]] = []
    model.output_projection.register_forward_hook(lambda _m, args, _out: projected.append(tuple(args[0].shape)))
    last = model.decode(prev, encoder_out, last_only=True)
    torch.testing.assert_close(last, model.decode(prev, encoder_out)[:, -1:])
    assert projected[0] == (2, 1, 16)


def test_sequences_beyond_max_positions_are_rejected_with_advice() -> None:
    model = tiny(max_positions=8)
    with pytest.raises(ConfigError, match="max_positions"):
        model(tokens(1, 9), torch.tensor([9]), tokens(1, 3))


# --------------------------------------------------------------------------- the skip-strategy contract


@dataclass
class Stream:
    """An opaque stream, as ResiDual's: the model must pass it along without looking inside."""

    h: Tensor


class SpyConnection(SkipConnection):
    def __init__(self, log: SpyLog, site: BlockSite) -> None:
        super().__init__()
        self.log, self.site = log, site

    def forward(self, x: Stream, sublayer: Callable[[Tensor], Tensor], shortcut: Any = None) -> Stream:
        assert isinstance(x, Stream), "the model must hand the previous connection's stream on unchanged"
        self.log.forwards.append(self.site)
        return Stream(x.h + sublayer(x.h))

    def init_branch(self, branch: nn.Module) -> None:
        self.log.inits.append((self.site, branch))


class SpyBoundary(StackBoundary):
    def enter(self, x: Tensor) -> Stream:
        return Stream(x)

    def forward(self, h: Stream) -> Tensor:
        return h.h


@dataclass
class SpyLog:
    sites: list[BlockSite]
    boundary_sites: list[BlockSite]
    forwards: list[BlockSite]
    inits: list[tuple[BlockSite, nn.Module]]


class SpyStrategy(SkipStrategy):
    """Records every build, forward and init_branch; its stream is not a tensor."""

    tensor_stream = False

    def __init__(self) -> None:
        self.log = SpyLog([], [], [], [])

    def build(self, features: int, *, norm: Any = None, site: BlockSite | None = None) -> SkipConnection:
        assert site is not None
        self.log.sites.append(site)
        return SpyConnection(self.log, site)

    def build_boundary(self, features: int, *, norm: Any = None, site: BlockSite | None = None) -> StackBoundary:
        assert site is not None
        self.log.boundary_sites.append(site)
        return SpyBoundary()


def expected_sites(encoder: int, decoder: int) -> list[BlockSite]:
    depths = {"encoder_depth": encoder, "decoder_depth": decoder}
    return [
        *(BlockSite(i, encoder, "encoder", j, 2, **depths) for i in range(encoder) for j in range(2)),
        *(BlockSite(i, decoder, "decoder", j, 3, **depths) for i in range(decoder) for j in range(3)),
    ]


def test_every_residual_block_is_built_by_the_strategy_with_its_site() -> None:
    spy = SpyStrategy()
    tiny(spy, encoder_layers=3, decoder_layers=2)
    assert spy.log.sites == expected_sites(3, 2)  # 2 per encoder layer, 3 per decoder layer
    assert spy.log.boundary_sites == [
        BlockSite(2, 3, "encoder", 1, 2, encoder_depth=3, decoder_depth=2),
        BlockSite(1, 2, "decoder", 2, 3, encoder_depth=3, decoder_depth=2),
    ]


def test_a_forward_pass_runs_every_connection_once_in_order() -> None:
    spy = SpyStrategy()
    model = tiny(spy, encoder_layers=3, decoder_layers=2)
    model(tokens(2, 5), torch.tensor([5, 2]), tokens(2, 4))
    assert spy.log.forwards == expected_sites(3, 2)


def test_init_branch_receives_each_connections_body_once() -> None:
    spy = SpyStrategy()
    tiny(spy, encoder_layers=2, decoder_layers=2)
    sites = [site for site, _ in spy.log.inits]
    assert sites == expected_sites(2, 2)
    for site, body in spy.log.inits:
        last = site.sublayer == site.sublayers - 1
        assert isinstance(body, FeedForward if last else MultiheadAttention)
    attention = next(body for _, body in spy.log.inits if isinstance(body, MultiheadAttention))
    assert all(isinstance(getattr(attention, name), nn.Linear) for name in ("q_proj", "k_proj", "v_proj", "out_proj"))


STRATEGIES = [
    Plain(),
    PostLN(),
    PreLN(),
    RecursiveSkipLN(2),
    B2T(),
    ResiDual(),
    DeepNorm(),
    ReZero(),
    SandwichLN(),
    Admin(),
]


@pytest.mark.parametrize("skip", STRATEGIES, ids=lambda s: s.tag)
def test_incremental_decoding_matches_the_full_decoder_for_every_strategy(skip: SkipStrategy) -> None:
    model = tiny(skip)
    src, lengths, prev = tokens(3, 6), torch.tensor([6, 4, 2]), tokens(3, 5)
    encoder_out = model.encode(src, lengths)
    full = model.decode(prev, encoder_out)
    cache = model.new_cache()
    steps = [model.decode_step(prev[:, t], encoder_out, cache, t) for t in range(prev.shape[1])]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, rtol=1e-4, atol=1e-5)


def test_reorder_cache_makes_each_row_continue_another_rows_prefix() -> None:
    model = tiny()
    src, lengths = tokens(2, 5), torch.tensor([5, 3])
    prev = tokens(4, 4)  # two hypotheses per sentence
    encoder_out = model.encode(src, lengths)
    new_order = torch.tensor([1, 1, 3, 2])  # stays within each sentence, as beam search does
    cache = model.new_cache()
    for t in range(3):
        model.decode_step(prev[:, t], encoder_out, cache, t)
    model.reorder_cache(cache, new_order)
    reordered = prev[new_order].clone()
    reordered[:, 3] = prev[:, 3]
    step = model.decode_step(reordered[:, 3], encoder_out, cache, 3)
    torch.testing.assert_close(step, model.decode(reordered, encoder_out)[:, 3], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- stochastic depth


def test_drop_path_rates_grow_linearly_over_each_stacks_own_depth() -> None:
    model = tiny(encoder_layers=2, decoder_layers=4, drop_path_rate=0.4)
    assert [layer.drop_path.rate for layer in model.encoder_layers] == pytest.approx([0.2, 0.4])
    assert [layer.drop_path.rate for layer in model.decoder_layers] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert all(layer.drop_path is None for layer in [*tiny().encoder_layers, *tiny().decoder_layers])


@pytest.mark.parametrize("skip", STRATEGIES, ids=lambda s: s.tag)
def test_stochastic_depth_is_off_at_inference_and_cached_decoding_matches_the_model_without_it(skip: SkipStrategy) -> None:
    torch.manual_seed(0)
    plain = tiny(skip)
    dropping = tiny(skip, drop_path_rate=0.5)
    dropping.load_state_dict(plain.state_dict())
    src, lengths, prev = tokens(3, 6), torch.tensor([6, 4, 2]), tokens(3, 5)
    encoder_out = dropping.encode(src, lengths)
    full = dropping.decode(prev, encoder_out)
    torch.testing.assert_close(full, plain.decode(prev, plain.encode(src, lengths)), rtol=0, atol=0)
    cache = dropping.new_cache()
    steps = [dropping.decode_step(prev[:, t], encoder_out, cache, t) for t in range(prev.shape[1])]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, rtol=1e-4, atol=1e-5)


def test_in_training_stochastic_depth_drops_branches_per_sentence() -> None:
    model = tiny(dropout=0.0, drop_path_rate=0.5).train()
    src, lengths = tokens(1, 6).expand(64, 6), torch.full((64,), 6)
    states = model.encode(src, lengths).states  # 64 copies of one sentence, each with its own draws
    assert len({tuple(row.flatten().tolist()) for row in states.round(decimals=4)}) > 1
    without = tiny(dropout=0.0).train().encode(src, lengths).states
    assert torch.equal(without, without[:1].expand_as(without))


def test_the_name_says_when_the_model_drops_blocks() -> None:
    assert tiny(drop_path_rate=0.2).name == "transformer-2x2-d16-dp0.2"


# --------------------------------------------------------------------------- embeddings and options


def test_share_all_embeddings_uses_one_table_for_encoder_decoder_and_output() -> None:
    shared, separate = tiny(share_all_embeddings=True), tiny()
    table = shared.encoder_embed.tokens.weight
    assert shared.decoder_embed.tokens.weight is table
    assert shared.output_projection is None
    states = torch.randn(2, 3, 16)
    torch.testing.assert_close(shared.output_layer(states), states @ table.T)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(separate) - count(shared) == 2 * VOCAB * 16


def test_share_decoder_input_output_embed_ties_only_the_decoder() -> None:
    model = tiny(share_decoder_input_output_embed=True)
    assert model.output_projection is None
    assert model.decoder_embed.tokens.weight is not model.encoder_embed.tokens.weight
    states = torch.randn(2, 3, 16)
    torch.testing.assert_close(model.output_layer(states), states @ model.decoder_embed.tokens.weight.T)


def test_a_shared_table_receives_gradient_from_all_three_uses() -> None:
    model = tiny(share_all_embeddings=True).train()
    model(tokens(2, 4), torch.tensor([4, 4]), tokens(2, 3)).sum().backward()
    assert model.encoder_embed.tokens.weight.grad is model.decoder_embed.tokens.weight.grad
    assert model.encoder_embed.tokens.weight.grad.abs().sum() > 0


def test_sinusoidal_positions_start_with_sin_zero_and_cos_one() -> None:
    table = SinusoidalPositions(10, 8)(10)
    torch.testing.assert_close(table[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    torch.testing.assert_close(table[3, 0], torch.sin(torch.tensor(3.0)))  # the fastest frequency is 1


def test_learned_positions_are_parameters_of_each_stack() -> None:
    learned = tiny(positions="learned", max_positions=16)
    fixed = tiny(max_positions=16)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(learned) - count(fixed) == 2 * 16 * 16


def test_embeddings_are_scaled_by_sqrt_dim_unless_disabled() -> None:
    assert tiny().encoder_embed.scale == pytest.approx(4.0)
    assert tiny(scale_embedding=False).encoder_embed.scale == 1.0


def test_gelu_activation_is_used_when_asked() -> None:
    model = tiny(activation="gelu")
    assert isinstance(model.encoder_layers[0].ffn.activation, nn.GELU)


def test_name_gives_depths_and_dimension() -> None:
    assert tiny(encoder_layers=3, decoder_layers=1).name == "transformer-3x1-d16"


def test_factories_have_the_standard_sizes() -> None:
    def sizes(model: Transformer) -> tuple[int, int, int, int]:
        layer = model.encoder_layers[0]
        return model.dim, layer.ffn.fc1.out_features, layer.self_attn.heads, len(model.decoder_layers)

    with torch.device("meta"):  # sizes only: no memory, no initialisation cost
        assert sizes(transformer_iwslt_de_en(100)) == (512, 1024, 4, 6)
        assert sizes(transformer_base(100)) == (512, 2048, 8, 6)
        assert sizes(transformer_big(100)) == (1024, 4096, 16, 6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"heads": 3}, "'heads' \\(3\\) must divide 'dim' \\(16\\)"),
        ({"activation": "tanh"}, "'activation' must be one of"),
        ({"positions": "rotary"}, "'positions' must be one of"),
        ({"dropout": 1.0}, "'dropout' must be a probability"),
        ({"encoder_layers": 0}, "'encoder_layers' must be an integer >= 1"),
        ({"skip": "post_ln"}, "'skip' must be a skipln.skip.SkipStrategy"),
        ({"drop_path_rate": 1.0}, "'drop_path_rate' must be a probability in"),
    ],
)
def test_invalid_arguments_are_rejected_with_the_argument_named(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny(**overrides)

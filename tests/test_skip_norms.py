"""Every normalizing strategy takes ``norm`` (LayerNorm, RMSNorm, DyT, BatchNorm), in both models.

The norms are checked against their formulas written out by hand, the models against which
norm modules they hold, and the strategy files against what they build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from torch import nn

from skipln.errors import ConfigError
from skipln.models.resnet import LayerNorm2d, ResNet, SkipBatchNorm2d, SkipDyT2d, SkipRMSNorm2d
from skipln.models.transformer import Transformer
from skipln.skip import (
    B2T,
    NORM_KINDS,
    Admin,
    DeepNorm,
    DyT,
    LearnableSkipLN,
    PostLN,
    PreLN,
    RecursiveSkipLN,
    ResiDual,
    RMSNorm2d,
    SandwichLN,
    SkipConnection,
    SkipStrategy,
    StackBoundary,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "skip"
NORMALIZING: list[type[SkipStrategy]] = [PostLN, PreLN, RecursiveSkipLN, DeepNorm, Admin, SandwichLN, B2T, ResiDual, LearnableSkipLN]
# DeepNorm and B2T are for Transformers; a post-activation ResNet needs a tensor stream (not ResiDual's).
IN_A_PREACT_RESNET = [cls for cls in NORMALIZING if cls not in (DeepNorm, B2T)]

TOKEN_NORM_TYPES = {"layer": nn.LayerNorm, "rms": nn.RMSNorm, "dyt": DyT}
FEATURE_MAP_NORM_TYPES = {"layer": LayerNorm2d, "rms": SkipRMSNorm2d, "dyt": SkipDyT2d, "batch": SkipBatchNorm2d}
ALL_NORM_TYPES = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.BatchNorm2d, RMSNorm2d, DyT)


def randomize(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-2.0, 2.0)
    return module


def skip_norms(model: nn.Module) -> list[nn.Module]:
    """The norms inside the model's skip connections and stack boundaries (not the bodies' own BN)."""
    owners = [m for m in model.modules() if isinstance(m, (SkipConnection, StackBoundary))]
    return [m for owner in owners for m in owner.modules() if isinstance(m, ALL_NORM_TYPES)]


def tiny_transformer(skip: SkipStrategy) -> Transformer:
    return Transformer(23, skip, encoder_layers=2, decoder_layers=2, dim=8, ffn_dim=16, heads=2).eval()


# --------------------------------------------------------------------------- the norms themselves


def test_rms_norm_2d_divides_each_sample_by_its_rms_over_c_h_w_and_applies_a_per_channel_gain() -> None:
    norm = randomize(RMSNorm2d(3))
    x = torch.randn(4, 3, 5, 6) * torch.tensor([0.1, 1.0, 10.0, 100.0]).view(4, 1, 1, 1) + 2.0
    rms = x.pow(2).mean(dim=(1, 2, 3), keepdim=True).add(norm.eps).sqrt()
    torch.testing.assert_close(norm(x), x / rms * norm.weight.view(1, 3, 1, 1))


def test_rms_norm_2d_keeps_the_mean_unlike_layer_norm() -> None:
    x = torch.randn(2, 4, 3, 3) + 5.0
    assert RMSNorm2d(4)(x).mean().item() > 0.5
    assert abs(LayerNorm2d(4)(x).mean().item()) < 1e-5


def test_rms_norm_2d_has_one_gain_per_channel_and_no_bias() -> None:
    assert [tuple(p.shape) for p in RMSNorm2d(8).parameters()] == [(8,)]


@pytest.mark.parametrize(("shape", "axis"), [((3, 5, 4), -1), ((2, 4, 3, 3), 1)])
def test_dyt_is_gamma_tanh_alpha_x_plus_beta_per_channel(shape: tuple[int, ...], axis: int) -> None:
    norm = randomize(DyT(4, channel_axis=axis))
    x = torch.randn(*shape) * 3.0
    view = [1] * len(shape)
    view[axis] = 4
    expected = norm.weight.view(view) * torch.tanh(norm.alpha * x) + norm.bias.view(view)
    torch.testing.assert_close(norm(x), expected)


def test_dyt_starts_at_the_papers_alpha_with_identity_affine() -> None:
    norm = DyT(4)
    assert norm.alpha.item() == 0.5 and torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


def test_token_rms_norm_of_a_post_rms_block_is_the_hand_formula() -> None:
    connection = randomize(PostLN(norm="rms").build(6))
    body = randomize(nn.Linear(6, 6))
    x = torch.randn(3, 5, 6)
    s = x + body(x)
    expected = s / s.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt() * connection.norm.weight
    torch.testing.assert_close(connection(x, body), expected)


# --------------------------------------------------------------------------- the choice, in both models


@pytest.mark.parametrize("kind", ["layer", "rms", "dyt"])
@pytest.mark.parametrize("strategy", NORMALIZING, ids=lambda cls: cls.__name__)
def test_every_normalizing_strategy_builds_the_chosen_norm_over_a_transformers_features(
    strategy: type[SkipStrategy], kind: str
) -> None:
    norms = skip_norms(tiny_transformer(strategy(norm=kind)))
    assert norms and all(type(n) is TOKEN_NORM_TYPES[kind] for n in norms)


@pytest.mark.parametrize("kind", ["layer", "rms", "dyt", "batch"])
@pytest.mark.parametrize("strategy", IN_A_PREACT_RESNET, ids=lambda cls: cls.__name__)
def test_every_normalizing_strategy_builds_the_chosen_norm_over_a_resnets_feature_maps(
    strategy: type[SkipStrategy], kind: str
) -> None:
    model = ResNet(8, "preact", skip=strategy(norm=kind))
    norms = skip_norms(model)
    assert norms and all(type(n) is FEATURE_MAP_NORM_TYPES[kind] for n in norms)
    assert model.eval()(torch.randn(2, 3, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("strategy", NORMALIZING, ids=lambda cls: cls.__name__)
def test_norm_left_unset_keeps_the_models_own_normalization(strategy: type[SkipStrategy]) -> None:
    assert all(type(n) is nn.LayerNorm for n in skip_norms(tiny_transformer(strategy())))


def test_norm_left_unset_keeps_the_bn_ablation_and_a_chosen_norm_takes_precedence() -> None:
    assert all(type(n) is SkipBatchNorm2d for n in skip_norms(ResNet(8, "basic", skip=PostLN(), skip_norm="batch")))
    chosen = ResNet(8, "basic", skip=PostLN(norm="rms"), skip_norm="batch")
    assert all(type(n) is SkipRMSNorm2d for n in skip_norms(chosen))
    assert chosen.name == "resnet8"  # no BN in its skip connections, so no -skipbn


def test_default_norms_leave_parameter_counts_unchanged_and_rms_drops_the_biases() -> None:
    def count(model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    assert count(ResNet(20, "basic", skip=PostLN(norm="layer"))) == count(ResNet(20, "basic", skip=PostLN()))
    # One LN per block: 2C parameters; RMS keeps the gain only.
    assert count(ResNet(20, "basic", skip=PostLN())) - count(ResNet(20, "basic", skip=PostLN(norm="rms"))) == 3 * (16 + 32 + 64)


def test_a_per_channel_skip_scale_follows_the_chosen_norms_channel_axis() -> None:
    model = ResNet(8, "preact", skip=LearnableSkipLN(per_channel=True, norm="dyt"))
    assert all(block.connection.scale.axis == 1 for block in model.blocks)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    transformer = tiny_transformer(LearnableSkipLN(per_channel=True, norm="rms"))
    assert all(connection.scale.axis == -1 for connection, _ in transformer.connections())


def test_a_kind_the_model_does_not_offer_is_refused_naming_the_kinds_it_offers() -> None:
    with pytest.raises(ConfigError, match=r"norm='batch' is not offered.*layer, rms, dyt"):
        tiny_transformer(PostLN(norm="batch"))


def test_a_model_that_passes_a_single_factory_refuses_a_norm_kind_clearly() -> None:
    with pytest.raises(ConfigError, match="leave the strategy's norm unset"):
        PostLN(norm="rms").build(4, norm=lambda c: nn.GroupNorm(1, c))
    assert isinstance(PostLN().build(4, norm=lambda c: nn.GroupNorm(1, c)).norm, nn.GroupNorm)


@pytest.mark.parametrize("strategy", NORMALIZING, ids=lambda cls: cls.__name__)
def test_an_unknown_norm_is_refused_naming_the_argument_and_the_kinds(strategy: type[SkipStrategy]) -> None:
    with pytest.raises(ConfigError, match=r"'norm' must be one of layer, rms, dyt, batch, or null"):
        strategy(norm="group")


# --------------------------------------------------------------------------- names and files


@pytest.mark.parametrize(
    ("strategy", "tag"),
    [
        (PostLN(norm="rms"), "post_ln-rms"),
        (PostLN(norm="layer"), "post_ln"),
        (PostLN(2.0, norm="dyt"), "xskip_ln-2-dyt"),
        (RecursiveSkipLN(2, norm="rms"), "rskip_ln-r2-rms"),
        (PreLN(norm="rms"), "pre_ln-rms"),
        (DeepNorm(norm="rms"), "deepnorm-rms"),
        (SandwichLN(norm="batch"), "sandwich_ln-batch"),
        (LearnableSkipLN(per_channel=True, norm="rms"), "learnable_ln-channel-rms"),
    ],
)
def test_a_chosen_norm_other_than_layer_norm_is_in_the_tag(strategy: SkipStrategy, tag: str) -> None:
    assert strategy.tag == tag


def test_strategies_with_different_norms_differ() -> None:
    assert PostLN(norm="rms") != PostLN() and PostLN(norm=None) == PostLN()


@pytest.mark.parametrize(
    ("file", "expected"),
    [("post_rms.yaml", PostLN(1.0, norm="rms")), ("rskip_rms2.yaml", RecursiveSkipLN(2, share_norm=False, norm="rms"))],
)
def test_rms_strategy_files_build_the_rms_strategies(file: str, expected: SkipStrategy) -> None:
    config: dict[str, Any] = yaml.safe_load((CONFIGS / file).read_text())
    assert list(config["model"]["init_args"]["net"]["init_args"]) == ["skip"]
    parser = ArgumentParser()
    parser.add_argument("--skip", type=SkipStrategy)
    skip = parser.instantiate_classes(parser.parse_object({"skip": config["model"]["init_args"]["net"]["init_args"]["skip"]})).skip
    assert skip == expected


def test_every_strategy_file_of_a_normalizing_strategy_lists_its_norm() -> None:
    # A file lists every argument, so switching strategies cannot keep the previous one's norm.
    normalizing = {f"skipln.skip.{cls.__name__}" for cls in NORMALIZING}
    for path in sorted(CONFIGS.glob("*.yaml")):
        skip = yaml.safe_load(path.read_text())["model"]["init_args"]["net"]["init_args"]["skip"]
        if skip["class_path"] in normalizing:
            assert "norm" in skip.get("init_args", {}), path.name


def test_norm_kinds_are_the_documented_four() -> None:
    assert NORM_KINDS == ("layer", "rms", "dyt", "batch")


def test_a_forward_and_backward_through_rskip_rms_trains_every_gain() -> None:
    model = ResNet(8, "preact", skip=RecursiveSkipLN(2, norm="rms"))
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    gains = [n.weight for n in skip_norms(model)]
    assert len(gains) == 6 and all(g.grad is not None and torch.any(g.grad != 0) for g in gains)

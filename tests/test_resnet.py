"""Specification of skipln.models.resnet: CIFAR ResNets whose every residual sum is the injected strategy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from skipln.errors import ConfigError
from skipln.models.resnet import LayerNorm2d, ResNet, SkipBatchNorm2d, SubsampleZeroPad
from skipln.skip import (
    BlockSite,
    Plain,
    PostLN,
    PreLN,
    RecursiveSkipLN,
    SandwichLN,
    Scaled,
    SkipConnection,
    SkipStrategy,
    StackBoundary,
    linear_drop_rates,
)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class SpyConnection(SkipConnection):
    """``shortcut(x) + F(x)``, recording every call."""

    def __init__(self, log: list[dict]) -> None:
        super().__init__()
        self.log = log
        self.branches: list[nn.Module] = []

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor], shortcut: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        calls = []

        def body(t: Tensor) -> Tensor:
            calls.append(t)
            return sublayer(t)

        skip = x if shortcut is None else shortcut(x)
        y = skip + body(x)
        self.log.append({"connection": self, "body_calls": len(calls), "shortcut": shortcut, "x": x, "skip": skip})
        return y

    def init_branch(self, branch: nn.Module) -> None:
        self.branches.append(branch)


class SpyBoundary(StackBoundary):
    def __init__(self) -> None:
        super().__init__()
        self.entered = 0
        self.exited = 0

    def enter(self, x: Tensor) -> Tensor:
        self.entered += 1
        return x

    def forward(self, h: Tensor) -> Tensor:
        self.exited += 1
        return h


class SpyStrategy(SkipStrategy):
    """Plain skip that records what the model asked of it."""

    def __init__(self, tensor_stream: bool = True) -> None:
        self.log: list[dict] = []
        self.built: list[tuple[int, BlockSite | None, object]] = []
        self.boundaries: list[tuple[int, SpyBoundary]] = []
        self.tensor_stream = tensor_stream

    def build(self, features: int, *, norm=None, site: BlockSite | None = None) -> SkipConnection:
        self.built.append((features, site, norm))
        return SpyConnection(self.log)

    def build_boundary(self, features: int, *, norm=None, site: BlockSite | None = None) -> StackBoundary:
        boundary = SpyBoundary()
        self.boundaries.append((features, boundary))
        return boundary

    def hparams(self) -> dict:
        return {"tensor_stream": self.tensor_stream}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(
    ("depth", "expected", "literature"),
    [(20, 269_722, "0.27M"), (56, 853_018, "0.85M"), (110, 1_727_962, "1.7M")],
)
def test_parameter_count_matches_he_et_al_with_shortcut_a(depth: int, expected: int, literature: str) -> None:
    for block in ("basic", "preact"):
        count = count_parameters(ResNet(depth, block))
        assert count == expected
        assert f"{count / 1e6:.2g}M" == literature


def test_shortcut_b_adds_two_projections() -> None:
    extra = count_parameters(ResNet(20, "basic", shortcut="B")) - count_parameters(ResNet(20, "basic"))
    assert extra == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # 1×1 conv + BN affine, at each of the two downsamplings


@pytest.mark.parametrize("block", ["basic", "preact"])
def test_output_is_logits_for_each_block_style(block: str) -> None:
    model = ResNet(8, block, num_classes=7)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)
    assert model.forward_features(torch.randn(2, 3, 16, 16)).shape == (2, 64)


def test_in_channels_sets_the_stem_input() -> None:
    model = ResNet(8, "basic", in_channels=1)
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_wrong_number_of_input_channels_says_which_setting_to_change() -> None:
    with pytest.raises(ConfigError, match="in_channels"):
        ResNet(8, "basic", in_channels=1)(torch.randn(2, 3, 8, 8))


@pytest.mark.parametrize("block", ["basic", "preact"])
def test_every_block_builds_one_connection_at_its_site(block: str) -> None:
    spy = SpyStrategy()
    ResNet(20, block, skip=spy)
    assert [features for features, _, _ in spy.built] == [16] * 3 + [32] * 3 + [64] * 3
    widens = {3: 16, 6: 32}  # the first block of stages 2 and 3 takes the narrower stage's output
    assert [site for _, site, _ in spy.built] == [
        BlockSite(layer=i, depth=9, stack="backbone", in_features=widens.get(i)) for i in range(9)
    ]
    assert len(spy.boundaries) == 1 and spy.boundaries[0][0] == 64


@pytest.mark.parametrize("block", ["basic", "preact"])
def test_every_residual_sum_goes_through_the_strategy(block: str) -> None:
    spy = SpyStrategy()
    model = ResNet(20, block, skip=spy)
    model(torch.randn(2, 3, 16, 16))
    assert len(spy.log) == 9
    assert [call["connection"] for call in spy.log] == [b.connection for b in model.blocks]
    assert all(call["body_calls"] == 1 for call in spy.log)
    boundary = spy.boundaries[0][1]
    assert (boundary.entered, boundary.exited) == (1, 1)


def test_downsampling_shortcut_is_handed_to_the_strategy() -> None:
    spy = SpyStrategy()
    ResNet(20, "basic", skip=spy)(torch.randn(2, 3, 16, 16))
    with_shortcut = [i for i, call in enumerate(spy.log) if call["shortcut"] is not None]
    assert with_shortcut == [3, 6]  # the first block of stages 2 and 3
    downsampling = spy.log[3]
    assert downsampling["x"].shape == (2, 16, 16, 16)
    assert downsampling["skip"].shape == (2, 32, 8, 8)


def test_strategy_scales_the_shortcut_output_too() -> None:
    # With λ = 0 no block passes its input on, so the output no longer depends on the stem's features directly.
    torch.manual_seed(0)
    plain = ResNet(8, "preact", skip=Plain())
    torch.manual_seed(0)
    zero = ResNet(8, "preact", skip=Scaled(0.0))
    x = torch.randn(2, 3, 8, 8)
    h = plain.stem(x)
    for block, zero_block in zip(plain.blocks, zero.blocks, strict=True):
        assert torch.allclose(zero_block(h), block.body(h))
        h = block(h)


def test_init_branch_receives_each_block_body_once() -> None:
    spy = SpyStrategy()
    model = ResNet(14, "basic", skip=spy)
    assert [block.connection.branches for block in model.blocks] == [[block.body] for block in model.blocks]


def test_strategy_parameters_keep_the_strategy_initialisation() -> None:
    class HalfNormConnection(SkipConnection):
        def __init__(self, features: int) -> None:
            super().__init__()
            self.norm = nn.GroupNorm(1, features)
            nn.init.constant_(self.norm.weight, 0.5)

        def forward(self, x: Tensor, sublayer, shortcut=None) -> Tensor:
            return self.norm((x if shortcut is None else shortcut(x)) + sublayer(x))

    class HalfNorm(SkipStrategy):
        def build(self, features: int, *, norm=None, site=None) -> SkipConnection:
            return HalfNormConnection(features)

    model = ResNet(8, "basic", skip=HalfNorm())
    assert all(torch.all(block.connection.norm.weight == 0.5) for block in model.blocks)


def test_convolutions_get_he_initialisation() -> None:
    model = ResNet(20, "basic", width=32)
    weight = model.blocks[4].body[0].weight  # 64 → 64 channels, 3×3
    fan_out = weight.shape[0] * 9
    assert weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)


def test_skip_norm_layer_gives_the_strategy_ln_over_chw() -> None:
    model = ResNet(8, "basic", skip=RecursiveSkipLN(recursions=2))
    norms = [n for block in model.blocks for n in block.connection.norms]
    assert len(norms) == 6 and all(type(n) is LayerNorm2d for n in norms)
    assert [n.num_channels for n in norms[::2]] == [16, 32, 64]


def test_skip_norm_batch_gives_the_strategy_batchnorm() -> None:
    model = ResNet(8, "basic", skip=PostLN(), skip_norm="batch")
    assert all(isinstance(block.connection.norm, SkipBatchNorm2d) for block in model.blocks)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_layer_norm_2d_normalizes_each_sample_over_channels_height_and_width() -> None:
    norm = LayerNorm2d(4)
    x = torch.randn(3, 4, 5, 6) * torch.tensor([1.0, 10.0, 100.0]).view(3, 1, 1, 1) + 7.0
    y = norm(x)
    flat = y.flatten(1)
    assert torch.allclose(flat.mean(dim=1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(flat.var(dim=1, unbiased=False), torch.ones(3), atol=1e-3)
    # Per sample, not per channel: channels keep their differences.
    per_channel = y.mean(dim=(2, 3))
    assert per_channel.std().item() > 0.0
    assert torch.allclose(y, nn.functional.layer_norm(x, x.shape[1:]), atol=1e-5)


def test_layer_norm_2d_has_a_per_channel_affine() -> None:
    assert LayerNorm2d(8).weight.shape == (8,)


def test_shortcut_a_subsamples_and_zero_pads_without_parameters() -> None:
    shortcut = SubsampleZeroPad(2, 4, stride=2)
    x = torch.randn(1, 2, 4, 4)
    y = shortcut(x)
    assert y.shape == (1, 4, 2, 2)
    assert torch.equal(y[:, :2], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 2:]) == 0
    assert count_parameters(shortcut) == 0


@pytest.mark.parametrize("depth", [0, 19, 21, 111, -4])
def test_depth_not_6n_plus_2_is_refused_with_the_valid_depths(depth: int) -> None:
    with pytest.raises(ValueError, match=r"6n\+2.*20, 26, 32.*110") as error:
        ResNet(depth, "basic")
    assert repr(depth) in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block": "bottleneck"}, "'block' must be one of"),
        ({"skip_norm": "group"}, "'skip_norm' must be one of"),
        ({"shortcut": "C"}, "'shortcut' must be one of"),
        ({"width": 0}, "'width' must be an integer >= 1"),
        ({"skip": "plain"}, "'skip' must be a skipln.skip.SkipStrategy"),
    ],
)
def test_invalid_arguments_are_named(kwargs: dict, message: str) -> None:
    args = {"depth": 20, "block": "basic", **kwargs}
    with pytest.raises(ValueError, match=message):
        ResNet(**args)


def test_post_activation_refuses_a_strategy_whose_stream_is_not_a_tensor() -> None:
    with pytest.raises(ConfigError, match="block: preact"):
        ResNet(8, "basic", skip=SpyStrategy(tensor_stream=False))
    ResNet(8, "preact", skip=SpyStrategy(tensor_stream=False))


def test_a_strategy_that_ignores_in_features_fails_clearly_in_a_downsampling_block() -> None:
    class InputNormConnection(SkipConnection):
        def __init__(self, norm: nn.Module) -> None:
            super().__init__()
            self.norm = norm

        def forward(self, x: Tensor, sublayer, shortcut=None) -> Tensor:
            return (x if shortcut is None else shortcut(x)) + sublayer(self.norm(x))

    class OutputWidthPreLN(SkipStrategy):
        def build(self, features: int, *, norm=None, site=None) -> SkipConnection:
            return InputNormConnection(norm(features))  # built for the output's channels: wrong where the block widens

    with pytest.raises(ConfigError, match="in_features"):
        ResNet(20, "preact", skip=OutputWidthPreLN())(torch.randn(2, 3, 8, 8))


@pytest.mark.parametrize("block", ["basic", "preact"])
@pytest.mark.parametrize("skip", [PreLN(), SandwichLN()], ids=lambda s: s.tag)
def test_input_normalizing_strategies_run_in_every_block_including_the_downsampling_ones(block: str, skip: SkipStrategy) -> None:
    model = ResNet(20, block, skip=skip)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    norms_in = [b.connection.norm if isinstance(skip, PreLN) else b.connection.norm_in for b in model.blocks]
    assert [n.num_channels for n in norms_in] == [16, 16, 16, 16, 32, 32, 32, 64, 64]


def test_name_reads_as_the_literature_names_the_model() -> None:
    assert ResNet(20, "basic").name == "resnet20"
    assert ResNet(110, "preact").name == "preact_resnet110"
    assert ResNet(8, "basic", width=32, shortcut="B").name == "resnet8-w32-B"


def test_the_name_says_when_the_skip_connections_normalize_with_batch_norm() -> None:
    assert ResNet(20, "basic", skip=PostLN(), skip_norm="batch").name == "resnet20-skipbn"
    assert ResNet(20, "basic", skip=PostLN(), skip_norm="layer").name == "resnet20"
    # Without a norm in its skip connections, the setting changes nothing, and the name says nothing.
    assert ResNet(20, "basic", skip=Plain(), skip_norm="batch").name == "resnet20"


def test_model_stores_its_strategy() -> None:
    strategy = RecursiveSkipLN(recursions=3)
    assert ResNet(8, "basic", skip=strategy).skip is strategy


# --------------------------------------------------------------------------- stochastic depth


def test_drop_path_rate_grows_linearly_over_the_blocks_and_is_absent_by_default() -> None:
    model = ResNet(20, "basic", drop_path_rate=0.3)
    assert [block.drop_path.rate for block in model.blocks] == pytest.approx(linear_drop_rates(0.3, 9))
    assert all(block.drop_path is None for block in ResNet(20, "basic").blocks)


@pytest.mark.parametrize("skip", [Plain(), PostLN(), RecursiveSkipLN(2), PreLN(), SandwichLN()], ids=lambda s: s.tag)
def test_stochastic_depth_adds_no_parameters_and_leaves_inference_unchanged(skip: SkipStrategy) -> None:
    plain, dropping = ResNet(20, "preact", skip=skip), ResNet(20, "preact", skip=skip, drop_path_rate=0.5)
    assert count_parameters(dropping) == count_parameters(plain)
    dropping.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(dropping.eval()(x), plain.eval()(x), rtol=0, atol=0)


def test_in_training_a_dropped_block_passes_only_its_skip_per_sample() -> None:
    model = ResNet(20, "preact", skip=Plain(), drop_path_rate=0.9).eval()
    block = model.blocks[2]  # inside the first stage: identity shortcut, rate 0.3
    block.drop_path.train()
    h = torch.randn(1, 16, 8, 8).expand(200, 16, 8, 8).contiguous()
    y = block(h)
    dropped = torch.isclose(y, h).flatten(1).all(dim=1)
    kept = torch.isclose(y, h + block.body(h) / (1 - block.drop_path.rate), atol=1e-5).flatten(1).all(dim=1)
    assert torch.all(dropped ^ kept) and 0.2 < dropped.float().mean().item() < 0.4


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_a_drop_path_rate_outside_zero_to_one_is_refused_by_name(rate: float) -> None:
    with pytest.raises(ConfigError, match="ResNet: 'drop_path_rate' must be a probability in"):
        ResNet(20, "basic", drop_path_rate=rate)


def test_the_name_says_when_the_model_drops_blocks() -> None:
    assert ResNet(20, "basic", drop_path_rate=0.1).name == "resnet20-dp0.1"


def test_a_state_dict_with_the_blocks_old_submodule_names_loads_into_the_renamed_blocks() -> None:
    # Checkpoints written before the rename call block.connection "skip" and block.downsample "shortcut".
    saved = ResNet(8, "preact", skip=PostLN(), shortcut="B")
    with torch.no_grad():
        for parameter in saved.parameters():
            parameter.add_(torch.randn_like(parameter))
    old_names = {
        key.replace(".connection.", ".skip.").replace(".downsample.", ".shortcut."): value
        for key, value in saved.state_dict().items()
    }
    assert any(".skip." in key for key in old_names) and any(".shortcut." in key for key in old_names)

    loaded = ResNet(8, "preact", skip=PostLN(), shortcut="B")
    loaded.load_state_dict(old_names)  # strict: every key must land on a parameter or buffer

    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in saved.state_dict().items())

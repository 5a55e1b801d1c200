"""CIFAR ResNets (depth 6n+2) whose every residual sum is an injected skip strategy.

Two block styles, both with 3×3 "basic" blocks in three stages of ``width``, ``2·width`` and
``4·width`` channels (16/32/64 by default), ``n`` blocks a stage:

* ``basic`` — post-activation, He et al. 2016a, "Deep Residual Learning for Image
  Recognition": ``out = ReLU(skip(x, F))`` with ``F = conv-BN-ReLU-conv-BN``.
* ``preact`` — pre-activation, He et al. 2016b, "Identity Mappings in Deep Residual
  Networks" (the paper's PreAct-ResNet-110): ``out = skip(x, F)`` with
  ``F = BN-ReLU-conv-BN-ReLU-conv``, and one BN-ReLU after the last block.

``skip(x, F)`` is the strategy's formula (``x + F(x)`` for :class:`~skipln.skip.Plain`,
``LN(x + LN(x + F(x)))`` for rSkip+LN with two recursions, ...). Where a block halves the
resolution and doubles the channels, the skip path's shortcut (option A or B of He et al.)
is handed to the strategy too, so a strategy scales or normalizes the shortcut's output
exactly as it would the identity.

``drop_path_rate`` adds stochastic depth (Huang et al. 2016): while training, block ℓ of ``L``
skips its body for a random ``ℓ/L · drop_path_rate`` of the samples
(:mod:`skipln.skip.stochastic_depth`); the strategy still combines the skip with the
(dropped) branch, so a dropped Post-LN block gives ``LN(x)``.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from skipln.errors import ConfigError
from skipln.skip import BlockSite, Plain, SkipConnection, SkipStrategy
from skipln.skip.norms import DyT, ModelNorms, RMSNorm2d
from skipln.skip.stochastic_depth import DropPath, check_drop_rate, drop_path_or_none, linear_drop_rates, with_drop
from skipln.validation import is_int

BlockStyle = Literal["basic", "preact"]
SkipNorm = Literal["layer", "batch"]
ShortcutType = Literal["A", "B"]

_BLOCK_STYLES = ("basic", "preact")
_SKIP_NORMS = ("layer", "batch")
_SHORTCUTS = ("A", "B")


def _check_channels(norm: nn.Module, expected: int, x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != expected:
        raise ConfigError(
            f"{type(norm).__name__}({expected}) inside a skip connection got a tensor of shape {tuple(x.shape)}: "
            f"`features` is the channels of the block's OUTPUT; in a downsampling block the input has fewer "
            f"(BlockSite.in_features). A strategy that normalizes the block's input must build that norm for "
            f"site.input_features(features), as PreLN and SandwichLN do."
        )


class LayerNorm2d(nn.GroupNorm):
    """Layer norm of a feature map: each sample normalized over (C, H, W) together.

    ``GroupNorm`` with one group computes exactly this for any H and W, with a per-channel
    affine (``weight``, ``bias`` of size C) as in the paper's ResNet experiments.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(num_groups=1, num_channels=channels)

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(self, self.num_channels, x)
        return super().forward(x)


class SkipBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` for a skip connection (the paper's BN ablation), with a clear shape error."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(self, self.num_features, x)
        return super().forward(x)


class SkipRMSNorm2d(RMSNorm2d):
    """RMS over each sample's (C, H, W) with a per-channel gain, for a skip connection, with a clear shape error."""

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(self, self.num_channels, x)
        return super().forward(x)


class SkipDyT2d(DyT):
    """DyT on a feature map (per-channel γ, β at axis 1), for a skip connection, with a clear shape error."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channel_axis=1)

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(self, self.weight.numel(), x)
        return super().forward(x)


# The one place the ResNet says how each kind of norm a strategy may ask for lies over a feature map.
_FEATURE_MAP_NORMS = {"layer": LayerNorm2d, "rms": SkipRMSNorm2d, "dyt": SkipDyT2d, "batch": SkipBatchNorm2d}


def feature_map_norms(default: SkipNorm) -> ModelNorms:
    """The norms a ResNet offers its skip connections; ``default`` (``skip_norm``) for strategies that leave ``norm`` unset."""
    return ModelNorms(_FEATURE_MAP_NORMS, default=default, owner="ResNet (feature maps)")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class SubsampleZeroPad(nn.Module):
    """Shortcut option A (He et al. 2016a on CIFAR): take every ``stride``-th pixel, zero-fill new channels.

    Parameter-free, so a ResNet-20 has the 0.27M parameters the literature quotes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ConfigError(f"SubsampleZeroPad: cannot shrink {in_channels} channels to {out_channels}")
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # The input's channels stay first, so the shortcut is an identity on them.
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Shortcut option B: a strided 1×1 convolution and BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def make_downsample(shortcut: ShortcutType, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The module of shortcut type ``shortcut`` on the skip path; ``None`` (identity) where the block keeps its shape."""
    if stride == 1 and in_channels == out_channels:
        return None
    if shortcut == "A":
        return SubsampleZeroPad(in_channels, out_channels, stride)
    return projection(in_channels, out_channels, stride)


# Names of the block's submodules before 2026-12 (``skip`` for the connection, ``shortcut`` for the
# downsampling module, which read like the model's strategy and shortcut type), for loading older checkpoints.
_RENAMED_SUBMODULES = {"skip.": "connection.", "shortcut.": "downsample."}


def _rename_old_keys(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    for key in [key for key in state_dict if key.startswith(prefix)]:
        for old, new in _RENAMED_SUBMODULES.items():
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)


class ResidualBlock(nn.Module):
    """What both block styles share: ``connection(x, body, downsample)``.

    ``body`` is the residual branch F; ``connection`` the :class:`~skipln.skip.SkipConnection`
    the model's strategy built for this block; ``downsample`` the module of the model's
    shortcut type on the skip path where the block changes shape (``None``: identity).
    """

    def __init__(
        self, body: nn.Sequential, connection: SkipConnection, downsample: nn.Module | None, drop_path: DropPath | None
    ) -> None:
        super().__init__()
        # Registration order = parameter order, which an optimizer's saved state is keyed by: keep it.
        self.body = body
        self.downsample = downsample
        self.connection = connection
        self.drop_path = drop_path
        self.register_load_state_dict_pre_hook(_rename_old_keys)

    def residual(self, x: Tensor) -> Tensor:
        return self.connection(x, with_drop(self.body, self.drop_path), self.downsample)


class BasicBlock(ResidualBlock):
    """Post-activation block: ``ReLU(skip(x, conv-BN-ReLU-conv-BN))``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        connection: SkipConnection,
        downsample: nn.Module | None,
        drop_path: DropPath | None = None,
    ) -> None:
        body = nn.Sequential(
            conv3x3(in_channels, out_channels, stride),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            conv3x3(out_channels, out_channels),
            nn.BatchNorm2d(out_channels),
        )
        super().__init__(body, connection, downsample, drop_path)
        self.activation = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.residual(x))


class PreActBlock(ResidualBlock):
    """Pre-activation block: ``skip(x, BN-ReLU-conv-BN-ReLU-conv)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        connection: SkipConnection,
        downsample: nn.Module | None,
        drop_path: DropPath | None = None,
    ) -> None:
        body = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            conv3x3(in_channels, out_channels, stride),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            conv3x3(out_channels, out_channels),
        )
        super().__init__(body, connection, downsample, drop_path)

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x)


def he_init(module: nn.Module) -> None:
    """He et al. 2015 initialisation of convolutions; norms start as the identity."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)) and module.weight is not None:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _valid_depths(limit: int) -> list[int]:
    return list(range(8, limit + 1, 6))


class ResNet(nn.Module):
    """A CIFAR ResNet of depth ``6n + 2`` with an injected skip connection at every block.

    The stem is a 3×3 convolution (followed by BN-ReLU in the ``basic`` style); then
    ``3n`` blocks in three stages, the first block of stages 2 and 3 halving the resolution
    with stride 2; then global average pooling and a linear classifier. The strategy builds
    one connection per block and one boundary around the whole stack of blocks.

    Each connection is built for the channels of its block's output (the residual sum); in
    the two downsampling blocks, whose input has half as many channels, the block's
    :class:`~skipln.skip.BlockSite` says so (``in_features``), so strategies that normalize
    the block's *input* (Pre-LN, Sandwich-LN) build that norm for the input. The shortcut
    always acts on the block's raw input, in both styles.

    Names: the model's ``skip`` is the strategy (configuration) and its ``shortcut`` the
    shortcut *type*; each block holds the modules they make, ``block.connection`` (a
    :class:`~skipln.skip.SkipConnection`) and ``block.downsample`` (or ``None``).

    Args:
        depth: number of weighted layers, ``6n + 2`` with ``n >= 1``: 20, 32, 44, 56, 110, ...
        block: ``"basic"`` (post-activation, He et al. 2016a) or ``"preact"`` (pre-activation,
            He et al. 2016b).
        num_classes: size of the classifier's output.
        in_channels: channels of the input images (3 for CIFAR, 1 for grey-scale digits).
        width: channels of the first stage; the others have twice and four times as many.
        skip: the skip strategy of every residual sum (``x + F(x)`` by default).
        skip_norm: the normalization a strategy uses where it normalizes and leaves its own
            ``norm`` unset: ``"layer"``, LN over each sample's (C, H, W) (:class:`LayerNorm2d`),
            or ``"batch"``, ``BatchNorm2d`` (the paper's BN ablation). A strategy's ``norm``
            (``layer``, ``rms``: :class:`SkipRMSNorm2d`, ``dyt``: :class:`SkipDyT2d`, ``batch``)
            takes precedence. Unused by strategies without a norm.
        shortcut: where a block changes shape, ``"A"``: subsample and zero-pad the channels
            (parameter-free, He et al. on CIFAR), or ``"B"``: 1×1 convolution and BN.
        drop_path_rate: stochastic depth (Huang et al. 2016): the probability, while training,
            that the last block skips its body for a sample; block ℓ of ``L`` uses
            ``ℓ/L · drop_path_rate``. 0 (the default) turns it off.
    """

    def __init__(
        self,
        depth: int,
        block: BlockStyle,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 16,
        skip: SkipStrategy = Plain(),
        skip_norm: SkipNorm = "layer",
        shortcut: ShortcutType = "A",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _validate(depth, block, num_classes, in_channels, width, skip, skip_norm, shortcut)
        self.drop_path_rate = check_drop_rate(drop_path_rate, "ResNet")
        if block == "basic" and not skip.tensor_stream:
            raise ConfigError(
                f"ResNet(block='basic') applies ReLU between blocks, which needs a skip strategy whose stream is a "
                f"plain tensor; {skip!r} passes another kind of stream between blocks. Use block: preact "
                f"(no activation between blocks) with this strategy."
            )
        self.depth = depth
        self.block = block
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.width = width
        self.skip = skip
        self.skip_norm = skip_norm
        self.shortcut = shortcut

        blocks_per_stage = (depth - 2) // 6
        num_blocks = 3 * blocks_per_stage
        norm = feature_map_norms(skip_norm)
        drop_rates = linear_drop_rates(self.drop_path_rate, num_blocks)
        block_cls = BasicBlock if block == "basic" else PreActBlock

        stem: list[nn.Module] = [conv3x3(in_channels, width)]
        if block == "basic":
            stem += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem)

        blocks: list[nn.Module] = []
        channels = width
        for index in range(num_blocks):
            stage = index // blocks_per_stage
            out_channels = width * 2**stage
            stride = 2 if stage > 0 and index % blocks_per_stage == 0 else 1
            site = BlockSite(
                layer=index, depth=num_blocks, stack="backbone", in_features=channels if channels != out_channels else None
            )
            blocks.append(
                block_cls(
                    channels,
                    out_channels,
                    stride,
                    connection=skip.build(out_channels, norm=norm, site=site),
                    downsample=make_downsample(shortcut, channels, out_channels, stride),
                    drop_path=drop_path_or_none(drop_rates[index]),
                )
            )
            channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.boundary = skip.build_boundary(
            channels, norm=norm, site=BlockSite(layer=num_blocks - 1, depth=num_blocks, stack="backbone")
        )

        # Pre-activation blocks end on a convolution: the last block's output still needs BN-ReLU.
        self.head_norm = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True)) if block == "preact" else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.features = channels

        self._init_weights()

    def _init_weights(self) -> None:
        # Only the model's own layers: a connection's or boundary's parameters are the strategy's to initialise.
        for part in (self.stem, self.head_norm):
            part.apply(he_init)
        for block in self.blocks:
            block.body.apply(he_init)
            if block.downsample is not None:
                block.downsample.apply(he_init)
        for block in self.blocks:
            block.connection.init_branch(block.body)

    @property
    def name(self) -> str:
        """``resnet56``, ``preact_resnet110``, with ``-w32`` / ``-B`` where width or shortcut differ from He et al.

        ``-skipbn`` where the skip connections normalize with BN instead of LN (the paper's
        ablation), so that such a run's name does not read like the LN run of the same strategy;
        ``-dp0.1`` with stochastic depth.
        """
        name = f"{'preact_' if self.block == 'preact' else ''}resnet{self.depth}"
        if self.width != 16:
            name += f"-w{self.width}"
        if self.shortcut != "A":
            name += f"-{self.shortcut}"
        if any(isinstance(module, SkipBatchNorm2d) for block in self.blocks for module in block.connection.modules()):
            name += "-skipbn"
        if self.drop_path_rate > 0.0:
            name += f"-dp{self.drop_path_rate:g}"
        return name

    def forward_features(self, x: Tensor) -> Tensor:
        """The pooled features before the classifier, of shape ``(N, 4·width)``."""
        h = self.boundary.enter(self.stem(x))
        h = self.blocks(h)
        x = self.head_norm(self.boundary(h))
        return self.pool(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of shape ``(N, num_classes)`` for images of shape ``(N, in_channels, H, W)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"{self.name} expects images of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}; "
                f"set the model's in_channels to the data's number of channels."
            )
        return self.fc(self.forward_features(x))


def _validate(
    depth: int,
    block: str,
    num_classes: int,
    in_channels: int,
    width: int,
    skip: object,
    skip_norm: str,
    shortcut: str,
) -> None:
    if not is_int(depth) or depth < 8 or (depth - 2) % 6 != 0:
        raise ConfigError(
            f"ResNet: 'depth' must be 6n+2 for an integer n >= 1 (e.g. {', '.join(map(str, _valid_depths(56)))}, "
            f"..., 110), got {depth!r}"
        )
    if block not in _BLOCK_STYLES:
        raise ConfigError(f"ResNet: 'block' must be one of {_BLOCK_STYLES}, got {block!r}")
    if skip_norm not in _SKIP_NORMS:
        raise ConfigError(f"ResNet: 'skip_norm' must be one of {_SKIP_NORMS}, got {skip_norm!r}")
    if shortcut not in _SHORTCUTS:
        raise ConfigError(f"ResNet: 'shortcut' must be one of {_SHORTCUTS}, got {shortcut!r}")
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels), ("width", width)):
        if not is_int(value) or value < 1:
            raise ConfigError(f"ResNet: '{arg}' must be an integer >= 1, got {value!r}")
    if not isinstance(skip, SkipStrategy):
        raise ConfigError(
            f"ResNet: 'skip' must be a skipln.skip.SkipStrategy (e.g. skipln.skip.Plain()), got {type(skip).__name__}"
        )


__all__ = [
    "BasicBlock",
    "LayerNorm2d",
    "PreActBlock",
    "ResNet",
    "ResidualBlock",
    "SkipBatchNorm2d",
    "SkipDyT2d",
    "SkipRMSNorm2d",
    "SubsampleZeroPad",
    "feature_map_norms",
    "make_downsample",
]

"""Which normalization a skip connection uses: the kinds a strategy may ask for, and who builds them.

A strategy that normalizes takes ``norm`` (``None``, ``"layer"``, ``"rms"``, ``"dyt"`` or
``"batch"``), and a model says *how* each kind is laid out over its features through the
:class:`ModelNorms` it passes to ``build``: over the last dimension for tokens
(:data:`TOKEN_NORMS`, what a strategy gets when the model passes nothing), over each sample's
(C, H, W) for a ResNet's feature maps. ``norm: null`` keeps the model's own choice (LayerNorm;
a ResNet's ``skip_norm``), so every strategy file written before the choice existed means what
it meant.

=========  ===================================================  ==========================================
kind       formula (per sample; γ, β per feature or channel)    source
=========  ===================================================  ==========================================
``layer``  ``γ·(x − mean(x))/√(var(x) + ε) + β``                 Ba et al. 2016, "Layer Normalization"
``rms``    ``γ·x/√(mean(x²) + ε)``                               Zhang & Sennrich 2019, "Root Mean Square
                                                                 Layer Normalization"
``dyt``    ``γ·tanh(α·x) + β``, α one learnable scalar           Zhu et al. 2025, "Transformers without
                                                                 Normalization" (arXiv 2503.10622)
``batch``  BatchNorm (statistics over the batch)                Ioffe & Szegedy 2015; the paper's BN ablation
=========  ===================================================  ==========================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from skipln.errors import ConfigError

NormFactory = Callable[[int], nn.Module]
"""Builds a normalization for ``features`` channels, e.g. ``nn.LayerNorm``."""

NormKind = Literal["layer", "rms", "dyt", "batch"]
NORM_KINDS: tuple[str, ...] = ("layer", "rms", "dyt", "batch")

EPS = 1e-5
"""ε of every norm here: LayerNorm's default, so LN and RMS differ only in the centring."""

DYT_ALPHA_INIT = 0.5
"""α₀ of DyT: the paper's default for every model but large language models."""


class DyT(nn.Module):
    """Dynamic Tanh: ``DyT(x) = γ ⊙ tanh(α·x) + β``, a drop-in replacement for a norm layer.

    Zhu, Chen, He, LeCun & Liu 2025, "Transformers without Normalization" (CVPR 2025,
    arXiv 2503.10622). No statistics: one learnable scalar α (initialised at ``alpha_init``,
    0.5 in the paper) squashes the input, and a per-channel affine (γ = 1, β = 0 at first)
    follows, as in LayerNorm. The paper replaces the norms of Transformers; a skip connection
    that "normalizes" with DyT bounds the stream elementwise instead of rescaling it, and on
    the skip path (Post-LN's place) its slope ``γ·α·(1 − tanh²) ≤ α`` scales the gradient of
    every block, so gradients vanish with depth at α₀ = 0.5 (Pre-LN's place avoids that).

    Args:
        features: channels of the per-channel affine.
        channel_axis: where the channels are: -1 for tokens (``(..., features)``), 1 for
            feature maps (``(N, C, H, W)``).
        alpha_init: α at initialisation.
    """

    def __init__(self, features: int, channel_axis: int = -1, alpha_init: float = DYT_ALPHA_INIT) -> None:
        super().__init__()
        self.channel_axis = channel_axis
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x: Tensor) -> Tensor:
        shape = [1] * x.dim()
        shape[self.channel_axis] = self.weight.numel()
        return torch.tanh(self.alpha * x) * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, channel_axis={self.channel_axis}"


class RMSNorm2d(nn.Module):
    """RMS norm of a feature map: each sample divided by its root mean square over (C, H, W).

    ``y = γ_c · x / √(mean_{C,H,W}(x²) + ε)``: the feature-map analogue of LayerNorm2d
    (``GroupNorm(1, C)``) without the centring, with a per-channel gain γ (Zhang & Sennrich
    2019 have no bias; neither does this).
    """

    channel_axis = 1

    def __init__(self, channels: int, eps: float = EPS) -> None:
        super().__init__()
        self.num_channels = channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.rms_norm(x, x.shape[1:], eps=self.eps)
        return y * self.weight.view(1, -1, *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


def token_rms_norm(features: int) -> nn.Module:
    """``torch.nn.RMSNorm`` over the last dimension, with LayerNorm's ε."""
    return nn.RMSNorm(features, eps=EPS)


class ModelNorms:
    """The normalizations a model offers its skip connections, by kind; called, it builds the default.

    Models pass one to :meth:`~skipln.skip.SkipStrategy.build` as ``norm``. It is a
    :data:`NormFactory` itself (``norms(features)`` builds the model's default kind), so a
    strategy written for a single factory keeps working unchanged.

    Args:
        factories: a factory per kind the model offers.
        default: the kind a strategy gets when it leaves ``norm`` unset.
        owner: the model, for error messages.
    """

    def __init__(self, factories: Mapping[str, NormFactory], default: str = "layer", owner: str = "this model") -> None:
        if default not in factories:
            raise ValueError(f"ModelNorms: the default {default!r} is not among the kinds offered, {sorted(factories)}")
        self.factories = dict(factories)
        self.default = default
        self.owner = owner

    def __call__(self, features: int) -> nn.Module:
        return self.factories[self.default](features)

    def factory(self, kind: str | None, strategy: str) -> NormFactory:
        """The factory of ``kind`` (``None``: the default), or a clear error naming the kinds offered."""
        kind = self.default if kind is None else kind
        if kind not in self.factories:
            raise ConfigError(
                f"{strategy}: norm={kind!r} is not offered by {self.owner}, which offers {', '.join(self.factories)}; "
                f"set the strategy's norm to one of them (or null for the model's default, {self.default!r})"
            )
        return self.factories[kind]

    def __repr__(self) -> str:
        return f"ModelNorms({', '.join(self.factories)}; default={self.default!r}, owner={self.owner!r})"


TOKEN_NORMS = ModelNorms({"layer": nn.LayerNorm, "rms": token_rms_norm, "dyt": DyT}, owner="a model of token features")
"""Norms over the last dimension (a Transformer's features): what a strategy gets when the model passes none."""


def check_norm_kind(value: str | None, owner: str) -> str | None:
    """Validate a strategy's ``norm`` hyperparameter, naming it in the error."""
    if value is not None and value not in NORM_KINDS:
        raise ConfigError(
            f"{owner}: 'norm' must be one of {', '.join(NORM_KINDS)}, or null for the model's own normalization; got {value!r}"
        )
    return value


def norm_suffix(kind: str | None) -> str:
    """``""`` for the model's default and for LayerNorm, ``"-rms"`` etc. otherwise: for tags."""
    return "" if kind in (None, "layer") else f"-{kind}"


__all__ = [
    "DYT_ALPHA_INIT",
    "DyT",
    "ModelNorms",
    "NORM_KINDS",
    "NormFactory",
    "NormKind",
    "RMSNorm2d",
    "TOKEN_NORMS",
    "check_norm_kind",
    "norm_suffix",
    "token_rms_norm",
]

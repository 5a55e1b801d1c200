"""Sandwich-LN: Pre-LN with the body's output normalized too."""

from __future__ import annotations

from torch import Tensor

from skipln.skip.base import (
    BlockSite,
    FinalNorm,
    NormFactory,
    Shortcut,
    SkipConnection,
    SkipStrategy,
    StackBoundary,
    Sublayer,
    identity,
    resolve_norm,
    resolve_site,
)
from skipln.skip.norms import NormKind, check_norm_kind, norm_suffix
from skipln.skip.stochastic_depth import split_branch


class _SandwichConnection(SkipConnection):
    def __init__(self, norm: NormFactory, in_features: int, features: int) -> None:
        super().__init__()
        self.norm_in = norm(in_features)
        self.norm_out = norm(features)

    def forward(self, x: Tensor, sublayer: Sublayer, shortcut: Shortcut | None = None) -> Tensor:
        # The branch that is added is LN₂(F(·)): stochastic depth drops it after LN₂, since
        # LN₂ would undo the drop's rescaling and turn a dropped F into LN₂'s bias.
        body, drop = split_branch(sublayer)
        return (shortcut or identity)(x) + drop(self.norm_out(body(self.norm_in(x))))


class SandwichLN(SkipStrategy):
    """Sandwich-LN: ``y = x + LN₂(F(LN₁(x)))``, and one ``LN`` after the last block of the stack.

    Ding et al. 2021, "CogView: Mastering Text-to-Image Generation via Transformers"
    (arXiv 2105.13290). Pre-LN lets the stream grow with every body's output; normalizing
    that output before it is added keeps each block's contribution at the scale LN₂'s gain
    sets, which CogView needed to train a deep Transformer in half precision. Like Pre-LN,
    the stack ends with its own norm (the boundary). ``LN₁`` is built for the block's input
    (``site.in_features``) and ``LN₂`` for its output, so it runs in a ResNet's downsampling
    blocks too.

    Args:
        norm: the kind of ``LN``: ``null`` (the model's), ``layer``, ``rms``, ``dyt`` or
            ``batch`` (see :mod:`skipln.skip.norms`).
    """

    def __init__(self, norm: NormKind | None = None) -> None:
        self.norm = check_norm_kind(norm, "SandwichLN")

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        factory = resolve_norm(norm, self.norm, "SandwichLN")
        return _SandwichConnection(factory, resolve_site(site).input_features(features), features)

    def build_boundary(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> StackBoundary:
        return FinalNorm(resolve_norm(norm, self.norm, "SandwichLN")(features))

    @property
    def tag(self) -> str:
        return "sandwich_ln" + norm_suffix(self.norm)

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
)


class _SandwichConnection(SkipConnection):
    def __init__(self, norm: NormFactory, features: int) -> None:
        super().__init__()
        self.norm_in = norm(features)
        self.norm_out = norm(features)

    def forward(self, x: Tensor, sublayer: Sublayer, shortcut: Shortcut | None = None) -> Tensor:
        return (shortcut or identity)(x) + self.norm_out(sublayer(self.norm_in(x)))


class SandwichLN(SkipStrategy):
    """Sandwich-LN: ``y = x + LN₂(F(LN₁(x)))``, and one ``LN`` after the last block of the stack.

    Ding et al. 2021, "CogView: Mastering Text-to-Image Generation via Transformers"
    (arXiv 2105.13290). Pre-LN lets the stream grow with every body's output; normalizing
    that output before it is added keeps each block's contribution at the scale LN₂'s gain
    sets, which CogView needed to train a deep Transformer in half precision. Like Pre-LN,
    the stack ends with its own norm (the boundary).
    """

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        return _SandwichConnection(resolve_norm(norm), features)

    def build_boundary(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> StackBoundary:
        return FinalNorm(resolve_norm(norm)(features))

    @property
    def tag(self) -> str:
        return "sandwich_ln"

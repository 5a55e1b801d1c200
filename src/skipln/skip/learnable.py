"""Skip + LN with a learnable skip scale λ: the paper's open question, made trainable."""

from __future__ import annotations

from torch import Tensor

from skipln.skip.base import (
    BlockSite,
    ChannelScale,
    NormFactory,
    Shortcut,
    SkipConnection,
    SkipStrategy,
    Sublayer,
    channel_axis,
    format_number,
    identity,
    resolve_norm,
)
from skipln.validation import check_bool, check_finite
from skipln.skip.norms import NormKind, check_norm_kind, norm_suffix


class _LearnableSkipConnection(SkipConnection):
    def __init__(self, init: float, per_channel: bool, norm: NormFactory, features: int) -> None:
        super().__init__()
        self.norm = norm(features)
        self.scale = ChannelScale(features if per_channel else None, init, channel_axis(self.norm))

    def forward(self, x: Tensor, sublayer: Sublayer, shortcut: Shortcut | None = None) -> Tensor:
        return self.norm(self.scale((shortcut or identity)(x)) + sublayer(x))


class LearnableSkipLN(SkipStrategy):
    """Skip + LN with a learnable λ: ``y = LN(λ·x + F(x))``, λ trained with the model.

    Liu et al. 2020, "Rethinking Skip Connection with Layer Normalization in Transformers and
    ResNets" (arXiv 2105.07205) fix λ per run (xSkip+LN, :class:`skipln.skip.PostLN`) and
    argue that the block should choose its own scale (rSkip+LN does it implicitly). Here each
    block learns λ directly: one scalar per block, or one value per channel (laid out like the
    norm's affine parameters: the last dimension for LayerNorm, dimension 1 for GroupNorm and
    BatchNorm over feature maps). At ``init = 1`` it starts as Post-LN.

    Args:
        init: λ at initialisation; any finite real number.
        per_channel: one λ per channel instead of one per block.
        norm: the kind of ``LN``: ``null`` (the model's), ``layer``, ``rms``, ``dyt`` or
            ``batch`` (see :mod:`skipln.skip.norms`).
    """

    def __init__(self, init: float = 1.0, per_channel: bool = False, norm: NormKind | None = None) -> None:
        self.init = check_finite("init", init, "LearnableSkipLN")
        self.per_channel = check_bool("per_channel", per_channel, "LearnableSkipLN")
        self.norm = check_norm_kind(norm, "LearnableSkipLN")

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        return _LearnableSkipConnection(self.init, self.per_channel, resolve_norm(norm, self.norm, "LearnableSkipLN"), features)

    @property
    def tag(self) -> str:
        tag = "learnable_ln"
        if self.per_channel:
            tag += "-channel"
        if self.init != 1.0:
            tag += f"-init{format_number(self.init)}"
        return tag + norm_suffix(self.norm)

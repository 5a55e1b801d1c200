"""The classic skip connections: plain, scaled (xSkip), Post-LN (xSkip+LN) and Pre-LN."""

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
    format_number,
    identity,
    resolve_norm,
    resolve_site,
)
from skipln.validation import check_finite
from skipln.skip.norms import NormKind, check_norm_kind, norm_suffix


class _PlainConnection(SkipConnection):
    def forward(self, x: Tensor, sublayer: Sublayer, shortcut: Shortcut | None = None) -> Tensor:
        return (shortcut or identity)(x) + sublayer(x)


class _ScaledConnection(SkipConnection):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor, sublayer: Sublayer, shortcut: Shortcut | None = None) -> Tensor:
        return self.scale * (shortcut or identity)(x) + sublayer(x)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class _PostNormConnection(SkipConnection):
    def __init__(self, scale: float, norm: NormFactory, features: int) -> None:
        super().__init__()
        self.scale = scale
        self.norm = norm(features)

    def forward(self, x: Tensor, sublayer: Sublayer, shortcut: Shortcut | None = None) -> Tensor:
        skip = (shortcut or identity)(x)
        if self.scale != 1.0:
            skip = self.scale * skip
        return self.norm(skip + sublayer(x))

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class _PreNormConnection(SkipConnection):
    def __init__(self, norm: NormFactory, in_features: int) -> None:
        super().__init__()
        self.norm = norm(in_features)

    def forward(self, x: Tensor, sublayer: Sublayer, shortcut: Shortcut | None = None) -> Tensor:
        return (shortcut or identity)(x) + sublayer(self.norm(x))


class Plain(SkipStrategy):
    """Skip: ``y = x + F(x)``.

    The identity shortcut of He et al. 2016, "Deep Residual Learning for Image Recognition";
    the paper's baseline (Liu et al. 2020, arXiv 2105.07205).
    """

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        return _PlainConnection()

    @property
    def tag(self) -> str:
        return "skip"


class Scaled(SkipStrategy):
    """Expanded skip (xSkip): ``y = λ·x + F(x)`` with a fixed real ``λ = scale``.

    Liu et al. 2020, "Rethinking Skip Connection with Layer Normalization in Transformers and
    ResNets" (arXiv 2105.07205): ``λ ≠ 1`` makes gradients explode (λ > 1) or vanish (λ < 1)
    exponentially with depth.

    Args:
        scale: the fixed scale λ on the skip path; any finite real number.
    """

    def __init__(self, scale: float) -> None:
        self.scale = check_finite("scale", scale, "Scaled")

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        return _ScaledConnection(self.scale)

    @property
    def tag(self) -> str:
        return f"xskip-{format_number(self.scale)}"


class PostLN(SkipStrategy):
    """Skip + LN (xSkip+LN): ``y = LN(λ·x + F(x))`` with a fixed real ``λ = scale``.

    At ``scale = 1`` this is the original Transformer's "Add & Norm" (Post-LN, Vaswani et al.
    2017). Liu et al. 2020 (arXiv 2105.07205) show that LN removes the depth dependence that
    ``λ ≠ 1`` causes in :class:`Scaled`.

    Args:
        scale: the fixed scale λ on the skip path; any finite real number.
        norm: the kind of ``LN``: ``null`` (the model's: LayerNorm, or a ResNet's
            ``skip_norm``), ``layer``, ``rms``, ``dyt`` or ``batch`` (see :mod:`skipln.skip.norms`).
    """

    def __init__(self, scale: float = 1.0, norm: NormKind | None = None) -> None:
        self.scale = check_finite("scale", scale, "PostLN")
        self.norm = check_norm_kind(norm, "PostLN")

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        return _PostNormConnection(self.scale, resolve_norm(norm, self.norm, "PostLN"), features)

    @property
    def tag(self) -> str:
        base = "post_ln" if self.scale == 1.0 else f"xskip_ln-{format_number(self.scale)}"
        return base + norm_suffix(self.norm)


class PreLN(SkipStrategy):
    """Pre-LN: ``y = x + F(LN(x))``, and one ``LN`` after the last block of the stack.

    Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture"
    (the ``normalize_before`` of fairseq). The ``LN`` before the body is built for the block's
    input (``site.in_features``), so it runs in a ResNet's downsampling blocks too.

    Args:
        norm: the kind of ``LN`` (see :class:`PostLN`).
    """

    def __init__(self, norm: NormKind | None = None) -> None:
        self.norm = check_norm_kind(norm, "PreLN")

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        return _PreNormConnection(resolve_norm(norm, self.norm, "PreLN"), resolve_site(site).input_features(features))

    def build_boundary(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> StackBoundary:
        return FinalNorm(resolve_norm(norm, self.norm, "PreLN")(features))

    @property
    def tag(self) -> str:
        return "pre_ln" + norm_suffix(self.norm)

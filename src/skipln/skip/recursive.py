"""The paper's proposal: recursive skip connection with layer normalization (rSkip+LN)."""

from __future__ import annotations

from torch import Tensor, nn

from skipln.errors import ConfigError
from skipln.skip.base import (
    BlockSite,
    NormFactory,
    Shortcut,
    SkipConnection,
    SkipStrategy,
    Sublayer,
    identity,
    resolve_norm,
)
from skipln.validation import check_positive_int
from skipln.skip.norms import NormKind, check_norm_kind, norm_suffix


class _RecursiveConnection(SkipConnection):
    def __init__(self, recursions: int, share_norm: bool, norm: NormFactory, features: int) -> None:
        super().__init__()
        self.recursions = recursions
        count = 1 if share_norm else recursions
        self.norms = nn.ModuleList(norm(features) for _ in range(count))

    def forward(self, x: Tensor, sublayer: Sublayer, shortcut: Shortcut | None = None) -> Tensor:
        skip = (shortcut or identity)(x)
        y = sublayer(x)  # F is computed once; only the skip is added again at each step
        last = len(self.norms) - 1
        for i in range(self.recursions):
            y = self.norms[min(i, last)](skip + y)
        return y

    def extra_repr(self) -> str:
        return f"recursions={self.recursions}, shared={len(self.norms) == 1 and self.recursions > 1}"


class RecursiveSkipLN(SkipStrategy):
    """Recursive skip + LN (rSkip+LN): ``y₁ = LN₁(x + F(x))``, ``yᵢ = LNᵢ(x + yᵢ₋₁)``; output ``y_λ``.

    Liu et al. 2020, "Rethinking Skip Connection with Layer Normalization in Transformers and
    ResNets" (arXiv 2105.07205), where ``λ = recursions``. ``F`` is computed once; each step
    adds the block's input again and normalizes, so the block adapts the scale of its skip
    itself (for λ = 2 the effective scale on ``x`` is ``1 + σ(x + F)/γ``). ``recursions = 1``
    is Post-LN.

    Args:
        recursions: λ, the number of normalized additions; an integer >= 1.
        share_norm: one LN for every step instead of one per step (the paper does not say
            which it used; separate norms are our default).
        norm: the kind of ``LN``: ``null`` (the model's), ``layer``, ``rms`` (rSkip+RMS),
            ``dyt`` or ``batch`` (see :mod:`skipln.skip.norms`).
    """

    def __init__(self, recursions: int = 2, share_norm: bool = False, norm: NormKind | None = None) -> None:
        self.recursions = check_positive_int("recursions", recursions, "RecursiveSkipLN")
        if not isinstance(share_norm, bool):
            raise ConfigError(f"RecursiveSkipLN: 'share_norm' must be true or false, got {share_norm!r}")
        self.share_norm = share_norm
        self.norm = check_norm_kind(norm, "RecursiveSkipLN")

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        return _RecursiveConnection(self.recursions, self.share_norm, resolve_norm(norm, self.norm, "RecursiveSkipLN"), features)

    @property
    def tag(self) -> str:
        return f"rskip_ln-r{self.recursions}" + ("-shared" if self.share_norm else "") + norm_suffix(self.norm)

"""ResiDual: a Post-LN stream and an un-normalized Pre-LN-like stream, side by side."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from skipln.skip.base import (
    BlockSite,
    NormFactory,
    Shortcut,
    SkipConnection,
    SkipStrategy,
    StackBoundary,
    Sublayer,
    expect_stream,
    identity,
    resolve_norm,
)
from skipln.skip.norms import NormKind, check_norm_kind, norm_suffix


@dataclass(frozen=True)
class DualStream:
    """The two streams of a ResiDual stack.

    Attributes:
        post: ``a_k``, the Post-LN stream; each body reads it.
        total: ``d_k``, the stack's input plus every body's output so far, never normalized.
    """

    post: Tensor
    total: Tensor


class _ResiDualBoundary(StackBoundary):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def enter(self, x: Tensor) -> DualStream:
        return DualStream(post=x, total=x)

    def forward(self, h: DualStream) -> Tensor:
        stream = expect_stream(h, DualStream, "ResiDual")
        return stream.post + self.norm(stream.total)


class _ResiDualConnection(SkipConnection):
    def __init__(self, norm: NormFactory, features: int) -> None:
        super().__init__()
        self.norm = norm(features)

    def forward(self, h: DualStream, sublayer: Sublayer, shortcut: Shortcut | None = None) -> DualStream:
        stream = expect_stream(h, DualStream, "ResiDual")
        skip = shortcut or identity
        f = sublayer(stream.post)
        # A shape-changing shortcut (a ResNet's downsampling) applies to both streams.
        return DualStream(post=self.norm(skip(stream.post) + f), total=skip(stream.total) + f)


class ResiDual(SkipStrategy):
    """ResiDual: ``a_{k+1} = LN(a_k + F(a_k))``, ``d_{k+1} = d_k + F(a_k)``; output ``a_N + LN(d_N)``.

    Xie et al. 2023, "ResiDual: Transformer with Dual Residual Connections"
    (arXiv 2304.14802). Two streams start from the stack's input (``a_0 = d_0 = x``): the
    Post-LN stream ``a`` feeds every body, and ``d`` sums the input and every body's output
    without normalization, as Pre-LN's stream does. ``d`` gives every block a direct
    gradient path (no vanishing, unlike Post-LN); ``a`` keeps the layers' representations
    diverse (no collapse, unlike Pre-LN). The stream is a :class:`DualStream`
    (``tensor_stream = False``); the stack's boundary adds ``LN(d_N)`` at the end.

    Args:
        norm: the kind of ``LN``: ``null`` (the model's), ``layer``, ``rms``, ``dyt`` or
            ``batch`` (see :mod:`skipln.skip.norms`).
    """

    tensor_stream = False

    def __init__(self, norm: NormKind | None = None) -> None:
        self.norm = check_norm_kind(norm, "ResiDual")

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        return _ResiDualConnection(resolve_norm(norm, self.norm, "ResiDual"), features)

    def build_boundary(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> StackBoundary:
        return _ResiDualBoundary(resolve_norm(norm, self.norm, "ResiDual")(features))

    @property
    def tag(self) -> str:
        return "residual" + norm_suffix(self.norm)

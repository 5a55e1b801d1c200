"""B2T connection: Post-LN whose last norm in each layer also receives the layer's input."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from skipln.errors import ConfigError
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
    resolve_site,
)
from skipln.skip.norms import NormKind, check_norm_kind, norm_suffix


@dataclass(frozen=True)
class LayerStream:
    """The stream of a B2T stack: the hidden state, and the input of the layer being computed.

    ``layer_input`` is set by the first block of a layer and consumed by its last one, so it is
    ``None`` between layers. The state travels with the stream, not in the connections, so an
    incremental decoder that runs one position at a time through every block is correct.
    """

    h: Tensor
    layer_input: Tensor | None = None


class _B2TBoundary(StackBoundary):
    def enter(self, x: Tensor) -> LayerStream:
        return LayerStream(x)

    def forward(self, h: LayerStream) -> Tensor:
        stream = expect_stream(h, LayerStream, "B2T")
        if stream.layer_input is not None:
            raise RuntimeError(
                "B2T: the stack ended inside a layer (its last block never ran); every layer must run the "
                "blocks its BlockSite.sublayers announces"
            )
        return stream.h


class _B2TConnection(SkipConnection):
    def __init__(self, norm: NormFactory, features: int, first: bool, last: bool) -> None:
        super().__init__()
        self.first = first
        self.last = last
        self.norm = norm(features)

    def forward(self, h: LayerStream, sublayer: Sublayer, shortcut: Shortcut | None = None) -> LayerStream:
        stream = expect_stream(h, LayerStream, "B2T")
        x = stream.h
        if self.first:
            if stream.layer_input is not None:
                raise RuntimeError("B2T: a layer began before the previous one reached its last block")
            layer_input = x
        elif stream.layer_input is None:
            raise RuntimeError("B2T: a block that is not the first of its layer ran before the layer's first block")
        else:
            layer_input = stream.layer_input
        y = (shortcut or identity)(x) + sublayer(x)
        if self.last:
            return LayerStream(self.norm(y + layer_input))
        return LayerStream(self.norm(y), layer_input)

    def extra_repr(self) -> str:
        return f"first={self.first}, last={self.last}"


class B2T(SkipStrategy):
    """B2T connection: Post-LN inside a layer, plus the layer's input added before its last LN.

    Takase et al. 2023, "B2T Connection: Serving Stability and Performance in Deep
    Transformers" (Findings of ACL 2023, arXiv 2206.00330). For an encoder layer with input
    ``x``::

        h = LN(x + Attn(x))
        y = LN(h + FFN(h) + x)

    and for a decoder layer the same with the cross-attention block in between
    (``h₁ = LN(x + SelfAttn(x))``, ``h₂ = LN(h₁ + CrossAttn(h₁))``, ``y = LN(h₂ + FFN(h₂) + x)``).
    The extra path from the bottom to the top of each layer bypasses the layer's inner norms,
    which keeps gradients from vanishing in deep Post-LN stacks while keeping Post-LN's
    quality. The stream is a :class:`LayerStream` (``tensor_stream = False``), and a block
    must know its place in the layer (:class:`BlockSite` ``sublayer`` / ``sublayers``).
    Layers of a single block (a ResNet's) are rejected: there B2T would be ``LN(2x + F(x))``.

    Args:
        norm: the kind of ``LN``: ``null`` (the model's), ``layer``, ``rms``, ``dyt`` or
            ``batch`` (see :mod:`skipln.skip.norms`).
    """

    tensor_stream = False

    def __init__(self, norm: NormKind | None = None) -> None:
        self.norm = check_norm_kind(norm, "B2T")

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        site = resolve_site(site)
        if site.sublayers < 2:
            raise ConfigError(
                "B2T: the connection spans a layer of several blocks (attention then feed-forward), but this block's "
                f"layer has sublayers={site.sublayers}; B2T is for Transformer layers (build with a BlockSite that sets "
                "sublayer and sublayers), not for one-block ResNet layers."
            )
        return _B2TConnection(resolve_norm(norm, self.norm, "B2T"), features, site.first_in_layer, site.last_in_layer)

    def build_boundary(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> StackBoundary:
        return _B2TBoundary()

    @property
    def tag(self) -> str:
        return "b2t" + norm_suffix(self.norm)

"""The strategy contract: what a model asks of a skip connection, and nothing more.

A *strategy* (:class:`SkipStrategy`) holds hyperparameters only. It is what YAML configures
with ``class_path``/``init_args``, it is picklable, and it builds one
:class:`SkipConnection` — an ``nn.Module`` with its own parameters — per residual block.

A model hands each connection the block's body as a callable, so a strategy can normalize
before it (Pre-LN), after it (Post-LN), around it, scale it, or recurse (rSkip+LN) without
the model changing::

    h = boundary.enter(x)                         # once per stack
    for block in blocks:
        h = block.skip(h, block.body)             # y = strategy's formula of (x, F)
    y = boundary(h)                               # once per stack: e.g. Pre-LN's final norm

Hooks with do-nothing defaults cover strategies that need more than one block:

* :meth:`SkipStrategy.build_boundary` — work at the ends of a stack (a final norm, or a
  residual *stream* that is more than a tensor, as in ResiDual). Between ``enter`` and the
  boundary's ``forward`` the model passes ``h`` only from one connection to the next and
  never looks inside it.
* :meth:`SkipConnection.init_branch` — re-initialise the body's weights (DeepNorm).
* :class:`BlockSite` — where the block sits (its layer, the depth of its stack, the depths
  of an encoder-decoder), for constants derived from depth and for state that spans the
  sub-blocks of one layer.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from skipln.errors import ConfigError

NormFactory = Callable[[int], nn.Module]
"""Builds a normalization for ``features`` channels, e.g. ``nn.LayerNorm``."""

Sublayer = Callable[[Tensor], Tensor]
"""A residual block's body ``F``."""

Shortcut = Callable[[Tensor], Tensor]
"""What the skip path applies to ``x`` (a projection where a ResNet block changes shape)."""


def layer_norm(features: int) -> nn.Module:
    """LayerNorm over the last dimension: the default normalization of every strategy."""
    return nn.LayerNorm(features)


@dataclass(frozen=True)
class BlockSite:
    """Where a residual block sits in its model.

    Attributes:
        layer: index of the layer in its stack, from 0.
        depth: number of layers in the stack.
        stack: ``"encoder"``, ``"decoder"`` or ``"backbone"`` (a ResNet).
        sublayer: index of the block within its layer (a Transformer decoder layer has three:
            self-attention 0, cross-attention 1, feed-forward 2).
        sublayers: number of blocks in each layer of the stack.
        encoder_depth: layers in the model's encoder (0 when it has none).
        decoder_depth: layers in the model's decoder (0 when it has none).
    """

    layer: int = 0
    depth: int = 1
    stack: str = "encoder"
    sublayer: int = 0
    sublayers: int = 1
    encoder_depth: int = 0
    decoder_depth: int = 0

    def __post_init__(self) -> None:
        if self.depth < 1 or not 0 <= self.layer < self.depth:
            raise ValueError(f"BlockSite: need 0 <= layer < depth, got layer={self.layer}, depth={self.depth}")
        if self.sublayers < 1 or not 0 <= self.sublayer < self.sublayers:
            raise ValueError(
                f"BlockSite: need 0 <= sublayer < sublayers, got sublayer={self.sublayer}, sublayers={self.sublayers}"
            )

    @property
    def first_in_layer(self) -> bool:
        return self.sublayer == 0

    @property
    def last_in_layer(self) -> bool:
        return self.sublayer == self.sublayers - 1


class SkipConnection(nn.Module, ABC):
    """One residual block's skip connection: ``forward(x, F)`` returns the block's output.

    Subclasses own their parameters (norms, learnable scales); two connections never share any.
    """

    @abstractmethod
    def forward(self, x: Any, sublayer: Sublayer, shortcut: Shortcut | None = None) -> Any:
        """Apply the strategy's formula.

        Args:
            x: the block's input — a tensor, or the stream object of a strategy whose
                boundary makes one.
            sublayer: the body ``F``; called exactly once.
            shortcut: applied to ``x`` on the skip path; identity when ``None``.
        """

    def init_branch(self, branch: nn.Module) -> None:
        """Re-initialise the body's weights after the model's own initialisation.

        Called once by the model with the module that computes ``F``. Attention bodies expose
        ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj``; feed-forward bodies are their
        ``nn.Linear`` layers. The default leaves the weights as they are.
        """


class StackBoundary(nn.Module):
    """The ends of a stack of residual blocks. The default passes the tensor through."""

    def enter(self, x: Tensor) -> Any:
        """Turn the stack's input into what the first connection receives."""
        return x

    def forward(self, h: Any) -> Tensor:
        """Turn what the last connection returned into the stack's output tensor."""
        return h


class FinalNorm(StackBoundary):
    """A boundary that normalizes the stack's output (Pre-LN and its relatives)."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, h: Tensor) -> Tensor:
        return self.norm(h)


class SkipStrategy(ABC):
    """Hyperparameters of a skip connection; builds one :class:`SkipConnection` per block.

    Subclass it, implement :meth:`build`, and name the subclass in YAML with ``class_path``.
    Constructors validate their arguments and raise ``ConfigError`` (a ``ValueError``) naming the argument and
    the values it allows.
    """

    #: Whether the stream between connections is a plain tensor that a model may touch
    #: between blocks (a post-activation ResNet applies ReLU there). Strategies whose
    #: boundary builds another kind of stream set this to ``False``.
    tensor_stream: bool = True

    @abstractmethod
    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        """A new connection for a block of ``features`` channels.

        Args:
            features: size of the normalized dimension.
            norm: builds the block's normalization; LayerNorm over the last dimension when
                ``None``. Models pass LN over (C, H, W) for feature maps, or BatchNorm.
            site: where the block sits; ``BlockSite()`` (a one-layer encoder) when ``None``.
        """

    def build_boundary(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> StackBoundary:
        """What the stack does at its ends; ``site`` describes the stack's last block."""
        return StackBoundary()

    @property
    def tag(self) -> str:
        """A short name for run names and reports, e.g. ``rskip_ln-r2``."""
        return type(self).__name__.lower()

    def hparams(self) -> dict[str, Any]:
        """The constructor's arguments, as given."""
        return dict(vars(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.hparams() == other.hparams()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.hparams().items()))))


def resolve_norm(norm: NormFactory | None) -> NormFactory:
    return layer_norm if norm is None else norm


def resolve_site(site: BlockSite | None) -> BlockSite:
    return BlockSite() if site is None else site


def identity(x: Tensor) -> Tensor:
    return x


def check_finite(name: str, value: float, owner: str) -> float:
    """Validate a real-valued hyperparameter, naming it in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{owner}: '{name}' must be a finite real number, got {value!r}")
    return float(value)


def check_positive_int(name: str, value: int, owner: str) -> int:
    """Validate a count hyperparameter, naming it in the error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner}: '{name}' must be an integer >= 1, got {value!r}")
    return value


def format_number(value: float) -> str:
    """``2.0`` → ``"2"``, ``0.5`` → ``"0.5"``: for tags."""
    return f"{value:g}"


__all__ = [
    "BlockSite",
    "FinalNorm",
    "NormFactory",
    "Shortcut",
    "SkipConnection",
    "SkipStrategy",
    "StackBoundary",
    "Sublayer",
    "layer_norm",
]

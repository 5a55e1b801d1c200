"""The strategy contract: what a model asks of a skip connection, and nothing more.

A *strategy* (:class:`SkipStrategy`) holds hyperparameters only. It is what YAML configures
with ``class_path``/``init_args``, it is picklable, and it builds one
:class:`SkipConnection` — an ``nn.Module`` with its own parameters — per residual block.

A model hands each connection the block's body as a callable, so a strategy can normalize
before it (Pre-LN), after it (Post-LN), around it, scale it, or recurse (rSkip+LN) without
the model changing::

    h = boundary.enter(x)                         # once per stack
    for block in blocks:
        h = block.connection(h, block.body)       # y = strategy's formula of (x, F)
    y = boundary(h)                               # once per stack: e.g. Pre-LN's final norm

Hooks with do-nothing defaults cover strategies that need more than one block:

* :meth:`SkipStrategy.build_boundary` — work at the ends of a stack (a final norm, or a
  residual *stream* that is more than a tensor, as in ResiDual). Between ``enter`` and the
  boundary's ``forward`` the model passes ``h`` only from one connection to the next and
  never looks inside it.
* :meth:`SkipConnection.init_branch` — re-initialise the body's weights (DeepNorm).
* :class:`BlockSite` — where the block sits (its layer, the depth of its stack, the depths
  of an encoder-decoder), for constants derived from depth and for state that spans the
  sub-blocks of one layer (B2T: ``first_in_layer``/``last_in_layer`` and a stream that
  carries the layer's input); and ``in_features``, the width of the block's input where it
  differs from its output's (a ResNet's downsampling blocks), for a norm applied to ``x``
  (Pre-LN, Sandwich-LN).
* ``norm`` — the model passes a :class:`~skipln.skip.norms.ModelNorms`: a factory of its
  default normalization that also builds the other kinds (``layer``, ``rms``, ``dyt``,
  ``batch``) laid out over the model's features; a strategy picks one with its own ``norm``
  hyperparameter (:func:`resolve_norm`).
* Stochastic depth: a model may hand a connection its body as a
  :class:`~skipln.skip.stochastic_depth.DroppedBranch` (``drop(F(x))``); a strategy that
  transforms the body's output before adding it drops after that transform
  (:func:`~skipln.skip.stochastic_depth.split_branch`).
* A profiling pass (Admin): :func:`profile` runs one forward with every connection whose
  :attr:`SkipConnection.needs_profiling` is true in profiling mode, then lets each set
  what it measured; :func:`needs_profiling` tells a task whether a model needs one. A
  training task calls, once, before its first optimizer step::

      if needs_profiling(net):
          profile(net, lambda: net(*inputs_of_one_training_batch))
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from skipln.errors import ConfigError
from skipln.skip.norms import TOKEN_NORMS, ModelNorms, NormFactory

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
        in_features: channels of the block's input ``x`` where they differ from the
            ``features`` the block is built for (its output, the residual sum): the first
            block of a ResNet stage that widens. ``None``: the same (every Transformer block).
    """

    layer: int = 0
    depth: int = 1
    stack: str = "encoder"
    sublayer: int = 0
    sublayers: int = 1
    encoder_depth: int = 0
    decoder_depth: int = 0
    in_features: int | None = None

    def __post_init__(self) -> None:
        if self.depth < 1 or not 0 <= self.layer < self.depth:
            raise ValueError(f"BlockSite: need 0 <= layer < depth, got layer={self.layer}, depth={self.depth}")
        if self.sublayers < 1 or not 0 <= self.sublayer < self.sublayers:
            raise ValueError(
                f"BlockSite: need 0 <= sublayer < sublayers, got sublayer={self.sublayer}, sublayers={self.sublayers}"
            )
        if self.in_features is not None and self.in_features < 1:
            raise ValueError(f"BlockSite: in_features must be >= 1 or None, got {self.in_features}")

    def input_features(self, features: int) -> int:
        """Channels of the block's input, for a block built for ``features`` output channels."""
        return features if self.in_features is None else self.in_features

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

    @property
    def needs_profiling(self) -> bool:
        """Whether part of this connection's initialisation waits for a :func:`profile` pass.

        ``False`` by default. A connection that returns ``True`` keeps the answer in its
        ``state_dict`` (a buffer), so a model restored from a checkpoint is not profiled again,
        and implements :meth:`start_profiling` and :meth:`stop_profiling`.
        """
        return False

    def start_profiling(self, state: dict[str, Any]) -> None:
        """Enter profiling mode for the one forward pass that :func:`profile` runs.

        Args:
            state: one dict shared by every connection profiled in the pass, for quantities
                that accumulate from block to block (Admin keys it by stack). Blocks run in
                order, so a connection reads what the blocks before it left there.
        """
        raise NotImplementedError(f"{type(self).__name__} needs profiling but does not implement start_profiling")

    def stop_profiling(self, commit: bool) -> None:
        """Leave profiling mode; apply what the pass measured only when ``commit`` is true.

        :func:`profile` commits only after a pass that reached every profiled connection.
        """
        raise NotImplementedError(f"{type(self).__name__} needs profiling but does not implement stop_profiling")


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
            features: channels of the block's output, the residual sum (the size of the
                normalized dimension). A block whose input is narrower says so in
                ``site.in_features``.
            norm: builds the block's normalization; LayerNorm over the last dimension when
                ``None``. Models pass a :class:`~skipln.skip.norms.ModelNorms`: called, it
                builds the model's default (LN over (C, H, W) for feature maps, or
                BatchNorm); :func:`resolve_norm` picks another kind from it.
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


def resolve_norm(norm: NormFactory | None, kind: str | None = None, strategy: str = "SkipStrategy") -> NormFactory:
    """The factory a strategy builds its norms with: the strategy's ``kind`` (``None``: the
    model's default) from what the model passed as ``norm`` (``None``: token features).

    A model that passes a plain factory (the one-factory contract) offers only that factory,
    as its default; asking it for a kind is a clear error.
    """
    if norm is None:
        norm = TOKEN_NORMS
    if isinstance(norm, ModelNorms):
        return norm.factory(kind, strategy)
    if kind is None:
        return norm
    raise ConfigError(
        f"{strategy}: norm={kind!r} needs a model that offers a choice of norms (a skipln.skip.ModelNorms as `norm`), "
        f"but this model passes a single normalization ({getattr(norm, '__name__', type(norm).__name__)}); "
        f"leave the strategy's norm unset (null)"
    )


def resolve_site(site: BlockSite | None) -> BlockSite:
    return BlockSite() if site is None else site


def identity(x: Tensor) -> Tensor:
    return x


def format_number(value: float) -> str:
    """``2.0`` → ``"2"``, ``0.5`` → ``"0.5"``: for tags."""
    return f"{value:g}"


StreamT = TypeVar("StreamT")


def expect_stream(h: Any, kind: type[StreamT], owner: str) -> StreamT:
    """``h`` as the stream object a strategy's boundary makes, or a clear error for the model's author."""
    if not isinstance(h, kind):
        raise TypeError(
            f"{owner} connections take the {kind.__name__} made by the stack's boundary, got "
            f"{type(h).__name__}: the model must call `h = boundary.enter(x)` before the first block, pass `h` "
            "unchanged from connection to connection, and end with `boundary(h)`."
        )
    return h


# Norms over feature maps keep their channels at axis 1; LayerNorm (and any norm over the
# last dimension) at axis -1. A per-channel skip scale is laid out like the norm's affine.
_CHANNELS_FIRST_NORMS = (nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def channel_axis(norm: nn.Module) -> int:
    """The axis of the channels that ``norm``'s affine parameters act on: the norm's own
    ``channel_axis`` where it has one (DyT, RMSNorm2d); 1 for GroupNorm, BatchNorm and
    InstanceNorm (feature maps, N×C×…); -1 for anything else (LayerNorm, RMSNorm)."""
    axis = getattr(norm, "channel_axis", None)
    if isinstance(axis, int):
        return axis
    return 1 if isinstance(norm, _CHANNELS_FIRST_NORMS) else -1


class ChannelScale(nn.Module):
    """A learnable multiplier: one scalar, or one value per channel along ``axis``.

    Args:
        features: number of channels, or ``None`` for a single scalar.
        init: the initial value of every entry.
        axis: where the channels are in the tensors it scales (see :func:`channel_axis`).
    """

    def __init__(self, features: int | None, init: float, axis: int = -1) -> None:
        super().__init__()
        self.axis = axis
        shape = () if features is None else (features,)
        self.weight = nn.Parameter(torch.full(shape, float(init)))

    def forward(self, x: Tensor) -> Tensor:
        # Cast so a float32 scale keeps a bf16/fp16 stream in its dtype under mixed precision.
        weight = self.weight.to(dtype=x.dtype)
        if weight.dim() == 0:
            return weight * x
        if x.dim() == 0 or x.shape[self.axis] != weight.numel():
            raise ValueError(
                f"per-channel scale of {weight.numel()} channels at axis {self.axis} does not fit an input of shape "
                f"{tuple(x.shape)}; build the strategy with the features and the norm of the stream it scales"
            )
        shape = [1] * x.dim()
        shape[self.axis] = weight.numel()
        return weight.view(shape) * x

    def fill_(self, value: float) -> None:
        """Set every entry to ``value`` (without recording it for autograd)."""
        with torch.no_grad():
            self.weight.fill_(value)

    def extra_repr(self) -> str:
        return "scalar" if self.weight.dim() == 0 else f"{self.weight.numel()}, axis={self.axis}"


def profiled_connections(model: nn.Module) -> list[tuple[str, SkipConnection]]:
    """The connections of ``model`` (with their names) that wait for a profiling pass."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SkipConnection) and m.needs_profiling]


def needs_profiling(model: nn.Module) -> bool:
    """Whether ``model`` holds a connection that waits for :func:`profile` (e.g. Admin's).

    Cheap (one walk over the modules); false again once the pass is done, and for a model
    restored from a checkpoint of a profiled one.
    """
    return bool(profiled_connections(model))


def profile(model: nn.Module, run: Callable[[], Any]) -> int:
    """Initialise every connection of ``model`` that needs it from one forward pass.

    Puts those connections in profiling mode, calls ``run`` (which must run the model
    forward over one training batch, through every such connection) without gradients,
    then lets each set what it measured. The model stays in the mode it is in: Admin's own
    profiling ran in training mode, dropout included. Under ``torch.distributed`` every rank
    must call it; the connections then take rank 0's values, so replicas stay identical.

    Args:
        model: the network (a plain ``nn.Module``; the task's ``net``).
        run: runs the forward pass, e.g. ``lambda: net(**inputs)``.

    Returns:
        The number of connections initialised (0 when none needed it; ``run`` is then not called).

    Raises:
        RuntimeError: ``run`` missed some of them; nothing is changed then.
    """
    connections = profiled_connections(model)
    if not connections:
        return 0
    reached: set[str] = set()
    hooks = [
        connection.register_forward_pre_hook(lambda module, args, name=name: reached.add(name))
        for name, connection in connections
    ]
    state: dict[str, Any] = {}
    commit = False
    try:
        for _, connection in connections:
            connection.start_profiling(state)
        with torch.no_grad():
            run()
        missed = [name for name, _ in connections if name not in reached]
        if missed:
            shown = ", ".join(missed[:4]) + (f" and {len(missed) - 4} more" if len(missed) > 4 else "")
            raise RuntimeError(
                f"profile(): the forward pass did not reach {len(missed)} of {len(connections)} connections that need "
                f"profiling ({shown}); make `run` call the whole model (every stack) on one training batch"
            )
        commit = True
    finally:
        for hook in hooks:
            hook.remove()
        for _, connection in connections:
            connection.stop_profiling(commit)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for _, connection in connections:
            for tensor in [*connection.parameters(), *connection.buffers()]:
                torch.distributed.broadcast(tensor.data, src=0)
    return len(connections)


__all__ = [
    "BlockSite",
    "ChannelScale",
    "FinalNorm",
    "NormFactory",
    "Shortcut",
    "SkipConnection",
    "SkipStrategy",
    "StackBoundary",
    "Sublayer",
    "channel_axis",
    "layer_norm",
    "needs_profiling",
    "profile",
]

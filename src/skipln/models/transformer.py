"""An encoder-decoder Transformer (Vaswani et al. 2017) whose every residual block is an injected skip strategy.

Read top to bottom: positions, embeddings, the feed-forward body, the encoder layer, the
decoder layer, and the model. An encoder layer has two residual blocks (self-attention,
feed-forward), a decoder layer three (self-attention, cross-attention, feed-forward). Each
block is ``h = connection(h, F)`` where ``connection`` comes from ``skip.build(...)``:
Post-LN makes it ``LN(h + F(h))``, Pre-LN ``h + F(LN(h))``, rSkip+LN ``LN(h + LN(h + F(h)))``.
Each stack is wrapped in the strategy's boundary (Pre-LN's final norm lives there). Between
``boundary.enter`` and ``boundary(...)`` the model passes ``h`` from connection to connection
and never looks inside it, so strategies whose stream is not a tensor (ResiDual) or that keep
state across a layer (B2T) fit without the model knowing.

Residual dropout is part of each body ``F`` (applied to the sublayer's output before the
strategy adds the skip), as in fairseq and Vaswani et al. Stochastic depth
(``drop_path_rate``, :mod:`skipln.skip.stochastic_depth`) drops a block's whole branch for a
random subset of the sentences while training, each block of a layer on its own draw, at the
layer's rate (``ℓ/L · drop_path_rate`` for layer ℓ of a stack of ``L``); in evaluation mode
(decoding, cached or not) every block runs.

Decoding uses three entry points, apart from the search itself (:mod:`skipln.decoding`):
:meth:`Transformer.encode`, :meth:`Transformer.decode_step` with a key/value cache from
:meth:`Transformer.new_cache`, and :meth:`Transformer.reorder_cache` for beam search.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skipln.errors import ConfigError
from skipln.models.dropout import Dropout
from skipln.models.attention import KeysValues, MultiheadAttention
from skipln.skip import BlockSite, PostLN, SkipConnection, SkipStrategy
from skipln.skip.stochastic_depth import check_drop_rate, drop_path_or_none, linear_drop_rates, with_drop
from skipln.validation import is_int, is_real

Activation = Literal["relu", "gelu"]
Positions = Literal["sinusoidal", "learned"]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}
_POSITIONS = ("sinusoidal", "learned")


# --------------------------------------------------------------------------- positions


def _check_length(length: int, start: int, max_positions: int) -> None:
    if start + length > max_positions:
        raise ConfigError(
            f"Transformer: a sequence reaches position {start + length - 1}, but the model has max_positions="
            f"{max_positions} (positions 0..{max_positions - 1}); raise model.init_args.net.init_args.max_positions "
            f"or drop longer sentences (the data module's max_positions)."
        )


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal position encodings: sines in the first half of the features, cosines in the second.

    The layout of tensor2tensor and fairseq (Vaswani et al. interleave them instead, which is
    the same encoding up to a fixed permutation of the features).
    """

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__()
        self.max_positions = max_positions
        half = dim // 2
        rate = math.log(10000.0) / max(half - 1, 1)
        frequencies = torch.exp(-rate * torch.arange(half, dtype=torch.float))
        angles = torch.arange(max_positions, dtype=torch.float)[:, None] * frequencies[None, :]
        table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
        if dim % 2 == 1:
            table = F.pad(table, (0, 1))
        # Not persistent: it is a function of the sizes, so checkpoints need not carry it.
        self.register_buffer("table", table, persistent=False)

    def forward(self, length: int, start: int = 0) -> Tensor:
        """Encodings of positions ``start … start + length − 1``, shape ``(length, dim)``."""
        _check_length(length, start, self.max_positions)
        return self.table[start : start + length]


class LearnedPositions(nn.Module):
    """A learned embedding per position (fairseq's ``--encoder-learned-pos``)."""

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.embedding = nn.Embedding(max_positions, dim)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=dim**-0.5)

    def forward(self, length: int, start: int = 0) -> Tensor:
        """Embeddings of positions ``start … start + length − 1``, shape ``(length, dim)``."""
        _check_length(length, start, self.max_positions)
        return self.embedding.weight[start : start + length]


# --------------------------------------------------------------------------- embeddings and bodies


class Embedder(nn.Module):
    """Token embedding × ``scale`` + position encoding, then dropout."""

    def __init__(self, tokens: nn.Embedding, positions: nn.Module, scale: float, dropout: float) -> None:
        super().__init__()
        self.tokens = tokens
        self.positions = positions
        self.scale = scale
        self.dropout = Dropout(dropout)

    def forward(self, tokens: Tensor, start: int = 0) -> Tensor:
        x = self.tokens(tokens) * self.scale + self.positions(tokens.shape[1], start)
        return self.dropout(x)


class FeedForward(nn.Module):
    """Position-wise feed-forward body: ``fc2(dropout(act(fc1(x))))``."""

    def __init__(self, dim: int, hidden: int, activation: Activation, activation_dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.activation = _ACTIVATIONS[activation]()
        self.activation_dropout = Dropout(activation_dropout)
        self.fc2 = nn.Linear(hidden, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """fairseq's initialisation: Xavier-uniform weights, zero biases."""
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation_dropout(self.activation(self.fc1(x))))


@dataclass(frozen=True)
class LayerSpec:
    """The sizes and rates every layer of a model shares."""

    dim: int
    ffn_dim: int
    heads: int
    dropout: float
    attention_dropout: float
    activation_dropout: float
    activation: Activation


# --------------------------------------------------------------------------- layers


class EncoderLayer(nn.Module):
    """Self-attention block, then feed-forward block; each a connection of the skip strategy.

    ``drop_path``: the stochastic-depth rate of this layer's blocks (0: off).
    """

    def __init__(self, spec: LayerSpec, skip: SkipStrategy, site: Callable[..., BlockSite], drop_path: float = 0.0) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(spec.dim, spec.heads, spec.attention_dropout)
        self.self_attn_skip = skip.build(spec.dim, site=site(sublayer=0))
        self.ffn = FeedForward(spec.dim, spec.ffn_dim, spec.activation, spec.activation_dropout)
        self.ffn_skip = skip.build(spec.dim, site=site(sublayer=1))
        self.dropout = Dropout(spec.dropout)
        self.drop_path = drop_path_or_none(drop_path)

    def connections(self) -> list[tuple[SkipConnection, nn.Module]]:
        """Each connection with the body it wraps, in the order they run."""
        return [(self.self_attn_skip, self.self_attn), (self.ffn_skip, self.ffn)]

    def forward(self, h: Any, key_mask: Tensor) -> Any:
        def self_attention(x: Tensor) -> Tensor:
            queries, keys_values = self.self_attn.queries_keys_values(x)
            return self.dropout(self.self_attn.attend(queries, keys_values, key_mask=key_mask))

        h = self.self_attn_skip(h, with_drop(self_attention, self.drop_path))
        return self.ffn_skip(h, with_drop(self._feed_forward, self.drop_path))

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.ffn(x))


@dataclass
class LayerCache:
    """What one decoder layer keeps between decoding steps.

    ``self_attn``: keys and values of every position decoded so far, one row per hypothesis.
    ``cross_attn``: the encoder output's keys and values, one row per source sentence,
    projected at the first step.
    """

    self_attn: KeysValues | None = None
    cross_attn: KeysValues | None = None


@dataclass
class DecoderCache:
    """The decoder's incremental state: one :class:`LayerCache` per layer."""

    layers: list[LayerCache] = field(default_factory=list)


class DecoderLayer(nn.Module):
    """Self-attention, cross-attention and feed-forward blocks; each a connection of the skip strategy.

    ``drop_path``: the stochastic-depth rate of this layer's blocks (0: off).
    """

    def __init__(self, spec: LayerSpec, skip: SkipStrategy, site: Callable[..., BlockSite], drop_path: float = 0.0) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(spec.dim, spec.heads, spec.attention_dropout)
        self.self_attn_skip = skip.build(spec.dim, site=site(sublayer=0))
        self.cross_attn = MultiheadAttention(spec.dim, spec.heads, spec.attention_dropout)
        self.cross_attn_skip = skip.build(spec.dim, site=site(sublayer=1))
        self.ffn = FeedForward(spec.dim, spec.ffn_dim, spec.activation, spec.activation_dropout)
        self.ffn_skip = skip.build(spec.dim, site=site(sublayer=2))
        self.dropout = Dropout(spec.dropout)
        self.drop_path = drop_path_or_none(drop_path)

    def connections(self) -> list[tuple[SkipConnection, nn.Module]]:
        """Each connection with the body it wraps, in the order they run."""
        return [
            (self.self_attn_skip, self.self_attn),
            (self.cross_attn_skip, self.cross_attn),
            (self.ffn_skip, self.ffn),
        ]

    def forward(self, h: Any, memory: Tensor, memory_mask: Tensor, cache: LayerCache | None = None) -> Any:
        """One layer over ``h``; with a ``cache``, ``h`` holds only the newest position.

        Args:
            h: the stream, for ``(rows, time, dim)`` target positions.
            memory: the encoder output, ``(sentences, source_time, dim)``; ``rows`` is a
                multiple of ``sentences`` (hypotheses of a sentence are consecutive rows).
            memory_mask: ``(sentences, 1, 1, source_time)``, ``True`` at real source tokens.
            cache: this layer's incremental state, updated in place.
        """

        def self_attention(x: Tensor) -> Tensor:
            queries, (keys, values) = self.self_attn.queries_keys_values(x)
            if cache is not None:
                if cache.self_attn is not None:
                    keys = torch.cat([cache.self_attn[0], keys], dim=2)
                    values = torch.cat([cache.self_attn[1], values], dim=2)
                cache.self_attn = (keys, values)
            # With a cache, the one new position may see every earlier one: no mask is needed.
            return self.dropout(self.self_attn.attend(queries, (keys, values), causal=cache is None))

        def cross_attention(x: Tensor) -> Tensor:
            if cache is None:
                keys_values = self.cross_attn.keys_values(memory)
            else:
                if cache.cross_attn is None:
                    cache.cross_attn = self.cross_attn.keys_values(memory)
                keys_values = cache.cross_attn
            return self.dropout(self.cross_attn(x, keys_values, key_mask=memory_mask))

        h = self.self_attn_skip(h, with_drop(self_attention, self.drop_path))
        h = self.cross_attn_skip(h, with_drop(cross_attention, self.drop_path))
        return self.ffn_skip(h, with_drop(self._feed_forward, self.drop_path))

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.ffn(x))


# --------------------------------------------------------------------------- the model


@dataclass
class EncoderOut:
    """The encoder's output for a batch of source sentences.

    Attributes:
        states: ``(sentences, source_time, dim)``; rows past a sentence's length are padding.
        padding_mask: ``(sentences, source_time)``, ``True`` at padding.
    """

    states: Tensor
    padding_mask: Tensor

    @property
    def key_mask(self) -> Tensor:
        """``(sentences, 1, 1, source_time)``, ``True`` at real tokens: attention's key mask."""
        return ~self.padding_mask[:, None, None, :]


class Transformer(nn.Module):
    """Encoder-decoder Transformer for translation, every residual block built by ``skip``.

    Source and target share one vocabulary (one tokenizer, as in the data modules); the
    encoder and decoder have their own embedding tables unless ``share_all_embeddings``.

    Standard sizes (fairseq's architectures; dropout is the recipe's):

    =====================  ========  =====  =====  =====  =================
    name                   layers    dim    FFN    heads  factory
    =====================  ========  =====  =====  =====  =================
    transformer_iwslt_de_en  6 + 6   512    1024   4      :func:`transformer_iwslt_de_en`
    base (Vaswani et al.)    6 + 6   512    2048   8      :func:`transformer_base`
    big (Vaswani et al.)     6 + 6   1024   4096   16     :func:`transformer_big`
    =====================  ========  =====  =====  =====  =================

    Args:
        vocab_size: size of the (joint) vocabulary; must equal the tokenizer's.
        skip: the skip strategy of every residual block (Post-LN by default, as in the
            original Transformer).
        encoder_layers: layers of the encoder.
        decoder_layers: layers of the decoder.
        dim: model dimension ``d`` (fairseq's ``embed_dim``).
        ffn_dim: hidden size of the feed-forward blocks.
        heads: attention heads; must divide ``dim``.
        dropout: residual dropout (on each sublayer's output and on the embeddings).
        attention_dropout: dropout on attention weights.
        activation_dropout: dropout after the feed-forward activation (fairseq's ``relu_dropout``).
        activation: ``"relu"`` or ``"gelu"``.
        positions: ``"sinusoidal"`` (fixed) or ``"learned"`` position embeddings.
        max_positions: the longest sequence, in tokens, either stack accepts (the decoder's
            input includes the beginning-of-sentence token).
        scale_embedding: multiply token embeddings by ``sqrt(dim)`` (off is fairseq's
            ``--no-scale-embedding``).
        share_decoder_input_output_embed: the output projection is the decoder's embedding table.
        share_all_embeddings: one table for encoder input, decoder input and output projection
            (implies ``share_decoder_input_output_embed``).
        drop_path_rate: stochastic depth (Huang et al. 2016): the probability, while training,
            that a block of a stack's last layer skips its branch for a sentence; layer ℓ of a
            stack of ``L`` uses ``ℓ/L · drop_path_rate`` (encoder and decoder each over their
            own depth). 0 (the default) turns it off.
    """

    def __init__(
        self,
        vocab_size: int,
        skip: SkipStrategy = PostLN(),
        encoder_layers: int = 6,
        decoder_layers: int = 6,
        dim: int = 512,
        ffn_dim: int = 2048,
        heads: int = 8,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        activation: Activation = "relu",
        positions: Positions = "sinusoidal",
        max_positions: int = 1024,
        scale_embedding: bool = True,
        share_decoder_input_output_embed: bool = False,
        share_all_embeddings: bool = False,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _validate(locals())
        self.drop_path_rate = check_drop_rate(drop_path_rate, "Transformer")
        self.vocab_size = vocab_size
        self.skip = skip
        self.encoder_depth = encoder_layers
        self.decoder_depth = decoder_layers
        self.dim = dim
        self.max_positions = max_positions
        spec = LayerSpec(dim, ffn_dim, heads, dropout, attention_dropout, activation_dropout, activation)

        # Embeddings. One table can serve all three roles (share_all_embeddings).
        encoder_tokens = nn.Embedding(vocab_size, dim)
        decoder_tokens = encoder_tokens if share_all_embeddings else nn.Embedding(vocab_size, dim)
        position_cls = SinusoidalPositions if positions == "sinusoidal" else LearnedPositions
        scale = math.sqrt(dim) if scale_embedding else 1.0
        self.encoder_embed = Embedder(encoder_tokens, position_cls(max_positions, dim), scale, dropout)
        self.decoder_embed = Embedder(decoder_tokens, position_cls(max_positions, dim), scale, dropout)
        tie_output = share_decoder_input_output_embed or share_all_embeddings
        self.output_projection = None if tie_output else nn.Linear(dim, vocab_size, bias=False)

        # Stacks: every residual block is a connection of the injected strategy.
        depths = {"encoder_depth": encoder_layers, "decoder_depth": decoder_layers}
        encoder_drops = linear_drop_rates(self.drop_path_rate, encoder_layers)
        decoder_drops = linear_drop_rates(self.drop_path_rate, decoder_layers)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(
                spec,
                skip,
                partial(BlockSite, layer=i, depth=encoder_layers, stack="encoder", sublayers=2, **depths),
                encoder_drops[i],
            )
            for i in range(encoder_layers)
        )
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(
                spec,
                skip,
                partial(BlockSite, layer=i, depth=decoder_layers, stack="decoder", sublayers=3, **depths),
                decoder_drops[i],
            )
            for i in range(decoder_layers)
        )
        # A boundary is described by its stack's last block.
        self.encoder_boundary = skip.build_boundary(
            dim, site=BlockSite(layer=encoder_layers - 1, depth=encoder_layers, stack="encoder", sublayer=1, sublayers=2, **depths)
        )
        self.decoder_boundary = skip.build_boundary(
            dim, site=BlockSite(layer=decoder_layers - 1, depth=decoder_layers, stack="decoder", sublayer=2, sublayers=3, **depths)
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # The bodies initialise themselves (fairseq's Xavier); embeddings follow fairseq's N(0, d^-1/2).
        # A connection's own parameters are the strategy's; it may then re-initialise its body.
        std = self.dim**-0.5
        nn.init.normal_(self.encoder_embed.tokens.weight, mean=0.0, std=std)
        if self.decoder_embed.tokens is not self.encoder_embed.tokens:
            nn.init.normal_(self.decoder_embed.tokens.weight, mean=0.0, std=std)
        if self.output_projection is not None:
            nn.init.normal_(self.output_projection.weight, mean=0.0, std=std)
        for connection, body in self.connections():
            connection.init_branch(body)

    def connections(self) -> list[tuple[SkipConnection, nn.Module]]:
        """Every skip connection with the body it wraps: encoder layers first, in order."""
        return [pair for layer in [*self.encoder_layers, *self.decoder_layers] for pair in layer.connections()]

    @property
    def name(self) -> str:
        """``transformer-6x6-d512`` (encoder × decoder layers, model dimension); ``-dp0.1`` with stochastic depth."""
        name = f"transformer-{self.encoder_depth}x{self.decoder_depth}-d{self.dim}"
        return name + (f"-dp{self.drop_path_rate:g}" if self.drop_path_rate > 0.0 else "")

    # ----------------------------------------------------------------------- encoder

    def encode(self, src_tokens: Tensor, src_lengths: Tensor) -> EncoderOut:
        """Encode right-padded source sentences.

        Args:
            src_tokens: ``(sentences, source_time)`` token ids, right-padded.
            src_lengths: ``(sentences,)`` number of real tokens in each row.
        """
        _check_tokens("src_tokens", src_tokens)
        if src_lengths.shape != src_tokens.shape[:1]:
            raise ValueError(
                f"Transformer.encode: src_lengths must have shape ({src_tokens.shape[0]},) to match src_tokens "
                f"{tuple(src_tokens.shape)}, got {tuple(src_lengths.shape)}"
            )
        positions = torch.arange(src_tokens.shape[1], device=src_tokens.device)
        padding_mask = positions[None, :] >= src_lengths[:, None]
        key_mask = ~padding_mask[:, None, None, :]
        h = self.encoder_boundary.enter(self.encoder_embed(src_tokens))
        for layer in self.encoder_layers:
            h = layer(h, key_mask)
        return EncoderOut(self.encoder_boundary(h), padding_mask)

    # ----------------------------------------------------------------------- decoder

    def _decoder(self, tokens: Tensor, encoder_out: EncoderOut, cache: DecoderCache | None, start: int, last_only: bool = False) -> Tensor:
        if tokens.shape[0] % encoder_out.states.shape[0] != 0:
            raise ValueError(
                f"Transformer: the decoder's batch ({tokens.shape[0]} rows) must be a multiple of the encoder's "
                f"({encoder_out.states.shape[0]} sentences), each sentence's rows consecutive"
            )
        key_mask = encoder_out.key_mask
        h = self.decoder_boundary.enter(self.decoder_embed(tokens, start))
        for i, layer in enumerate(self.decoder_layers):
            h = layer(h, encoder_out.states, key_mask, None if cache is None else cache.layers[i])
        h = self.decoder_boundary(h)
        # The vocabulary projection is the largest matmul of a decoder step: skip the positions nobody reads.
        return self.output_layer(h[:, -1:] if last_only else h)

    def output_layer(self, x: Tensor) -> Tensor:
        """Project decoder states to vocabulary logits."""
        if self.output_projection is None:
            return F.linear(x, self.decoder_embed.tokens.weight)
        return self.output_projection(x)

    def decode(self, prev_output_tokens: Tensor, encoder_out: EncoderOut, last_only: bool = False) -> Tensor:
        """Logits ``(rows, target_time, vocab)`` for every target position at once (teacher forcing).

        ``rows`` may be a multiple ``k`` of the encoder's batch: rows ``i·k … i·k + k − 1``
        then read sentence ``i``. Right padding needs no mask: under the causal mask a real
        position never sees a later one. ``last_only``: logits ``(rows, 1, vocab)`` of the
        last position alone (a search without a cache needs no other).
        """
        _check_tokens("prev_output_tokens", prev_output_tokens)
        return self._decoder(prev_output_tokens, encoder_out, None, 0, last_only)

    def new_cache(self) -> DecoderCache:
        """An empty incremental state for :meth:`decode_step`."""
        return DecoderCache([LayerCache() for _ in self.decoder_layers])

    def decode_step(self, prev_tokens_last: Tensor, encoder_out: EncoderOut, cache: DecoderCache, step: int) -> Tensor:
        """Logits ``(rows, vocab)`` for the next token, feeding one token per row.

        Args:
            prev_tokens_last: ``(rows,)`` or ``(rows, 1)``: the token at position ``step``
                (the beginning-of-sentence token at step 0).
            encoder_out: from :meth:`encode`; ``rows`` is a multiple of its batch, as in :meth:`decode`.
            cache: from :meth:`new_cache`, used for steps ``0, 1, 2, …`` in order; updated in place.
            step: the position of ``prev_tokens_last``.
        """
        tokens = prev_tokens_last.reshape(-1, 1)
        return self._decoder(tokens, encoder_out, cache, step)[:, -1]

    def reorder_cache(self, cache: DecoderCache, new_order: Tensor) -> None:
        """Make row ``r`` of the cache what row ``new_order[r]`` was (in place).

        Only the self-attention state is reordered: the cross-attention state is stored once
        per source sentence, so ``new_order`` must map each row to a row of the same
        sentence, as beam search does when it keeps a sentence's best hypotheses.
        """
        for layer in cache.layers:
            if layer.self_attn is not None:
                keys, values = layer.self_attn
                layer.self_attn = (keys.index_select(0, new_order), values.index_select(0, new_order))

    # ----------------------------------------------------------------------- training

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, prev_output_tokens: Tensor) -> Tensor:
        """Teacher-forced logits ``(sentences, target_time, vocab)``."""
        return self.decode(prev_output_tokens, self.encode(src_tokens, src_lengths))


def _check_tokens(name: str, tokens: Tensor) -> None:
    if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"Transformer: '{name}' must be an integer tensor of shape (batch, time), "
            f"got {tokens.dtype} of shape {tuple(tokens.shape)}"
        )


def _validate(args: dict[str, Any]) -> None:
    for name in ("vocab_size", "encoder_layers", "decoder_layers", "dim", "ffn_dim", "heads", "max_positions"):
        value = args[name]
        if not is_int(value) or value < 1:
            raise ConfigError(f"Transformer: '{name}' must be an integer >= 1, got {value!r}")
    if args["dim"] % args["heads"] != 0:
        raise ConfigError(f"Transformer: 'heads' ({args['heads']}) must divide 'dim' ({args['dim']})")
    for name in ("dropout", "attention_dropout", "activation_dropout"):
        value = args[name]
        if not is_real(value) or not 0.0 <= value < 1.0:
            raise ConfigError(f"Transformer: '{name}' must be a probability in [0, 1), got {value!r}")
    if args["activation"] not in _ACTIVATIONS:
        raise ConfigError(f"Transformer: 'activation' must be one of {sorted(_ACTIVATIONS)}, got {args['activation']!r}")
    if args["positions"] not in _POSITIONS:
        raise ConfigError(f"Transformer: 'positions' must be one of {_POSITIONS}, got {args['positions']!r}")
    if not isinstance(args["skip"], SkipStrategy):
        raise ConfigError(
            f"Transformer: 'skip' must be a skipln.skip.SkipStrategy (e.g. skipln.skip.PostLN()), "
            f"got {type(args['skip']).__name__}"
        )


def transformer_iwslt_de_en(vocab_size: int, skip: SkipStrategy = PostLN(), **overrides: Any) -> Transformer:
    """fairseq's ``transformer_iwslt_de_en``: 6 + 6 layers, d 512, FFN 1024, 4 heads."""
    return Transformer(vocab_size, skip, **{"dim": 512, "ffn_dim": 1024, "heads": 4, **overrides})


def transformer_base(vocab_size: int, skip: SkipStrategy = PostLN(), **overrides: Any) -> Transformer:
    """Transformer base (Vaswani et al. 2017): 6 + 6 layers, d 512, FFN 2048, 8 heads, dropout 0.1."""
    return Transformer(vocab_size, skip, **{"dim": 512, "ffn_dim": 2048, "heads": 8, "dropout": 0.1, **overrides})


def transformer_big(vocab_size: int, skip: SkipStrategy = PostLN(), **overrides: Any) -> Transformer:
    """Transformer big (Vaswani et al. 2017): 6 + 6 layers, d 1024, FFN 4096, 16 heads, dropout 0.3."""
    return Transformer(vocab_size, skip, **{"dim": 1024, "ffn_dim": 4096, "heads": 16, "dropout": 0.3, **overrides})


__all__ = [
    "DecoderCache",
    "DecoderLayer",
    "Embedder",
    "EncoderLayer",
    "EncoderOut",
    "FeedForward",
    "LayerCache",
    "LearnedPositions",
    "SinusoidalPositions",
    "Transformer",
    "transformer_base",
    "transformer_big",
    "transformer_iwslt_de_en",
]

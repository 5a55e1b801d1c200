"""The study's Transformer: an encoder-only stack under a masked-token head (:class:`MaskedLMEncoder`).

It repeats the few lines with which :class:`~skipln.models.transformer.Transformer` wires its
encoder because the model has no encoder module to reuse: it registers ``encoder_embed``,
``encoder_layers`` and ``encoder_boundary`` as its own children, and gathering them into one
module would rename every encoder key of its checkpoints.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn

from skipln.models.transformer import Embedder, EncoderLayer, LayerSpec, SinusoidalPositions
from skipln.skip import BlockSite, SkipStrategy


class MaskedLMEncoder(nn.Module):
    """The Transformer's encoder stack alone, under a masked-token head: the study's Transformer.

    Built from :mod:`skipln.models.transformer`'s public pieces and wired as
    :class:`~skipln.models.transformer.Transformer` wires its encoder (``Embedder``, then
    ``EncoderLayer`` × ``layers`` between the strategy's stack boundary), with encoder-only
    :class:`~skipln.skip.BlockSite` depths (DeepNorm takes its encoder-only constants). The head
    is a linear projection to the vocabulary with no norm before it, so what the stack does to
    the scale of its output reaches the loss unchanged. Token id ``vocab_size`` is the mask.

    Args:
        vocab_size: the tokenizer's vocabulary (the embedding holds one more row: the mask).
        skip: the skip strategy of every residual block.
        layers: encoder layers (two residual blocks each).
        dim: model dimension.
        ffn_dim: hidden size of the feed-forward blocks.
        heads: attention heads.
        max_positions: the longest sentence, in tokens.
    """

    def __init__(self, vocab_size: int, skip: SkipStrategy, layers: int, dim: int, ffn_dim: int, heads: int, max_positions: int) -> None:
        super().__init__()
        self.skip = skip
        self.dim = dim
        self.mask_id = vocab_size
        spec = LayerSpec(dim, ffn_dim, heads, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, activation="relu")
        tokens = nn.Embedding(vocab_size + 1, dim)
        nn.init.normal_(tokens.weight, mean=0.0, std=dim**-0.5)
        self.embed = Embedder(tokens, SinusoidalPositions(max_positions, dim), math.sqrt(dim), dropout=0.0)
        site = partial(BlockSite, depth=layers, stack="encoder", sublayers=2, encoder_depth=layers)
        self.layers = nn.ModuleList(EncoderLayer(spec, skip, partial(site, layer=i)) for i in range(layers))
        self.boundary = skip.build_boundary(dim, site=site(layer=layers - 1, sublayer=1))
        self.head = nn.Linear(dim, vocab_size)
        nn.init.normal_(self.head.weight, mean=0.0, std=dim**-0.5)
        nn.init.zeros_(self.head.bias)
        for layer in self.layers:
            for connection, body in layer.connections():
                connection.init_branch(body)

    @property
    def name(self) -> str:
        return f"transformer_encoder-{len(self.layers)}-d{self.dim}"

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Logits ``(batch, time, vocab)`` for right-padded ``tokens`` with ``lengths`` real tokens a row."""
        key_mask = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None])[:, None, None, :]
        h = self.boundary.enter(self.embed(tokens))
        for layer in self.layers:
            h = layer(h, key_mask)
        return self.head(self.boundary(h))

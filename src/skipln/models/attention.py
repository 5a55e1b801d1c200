"""Multi-head attention on ``torch.nn.functional.scaled_dot_product_attention``.

Keys and values are projected apart from the attention itself (:meth:`MultiheadAttention.keys_values`)
so that a decoder can keep them in a cache: self-attention appends one position per step,
cross-attention projects the encoder's output once per sentence. Projections that read the
same input run as one matrix product over the concatenated weights (queries, keys and values
of self-attention; keys and values of cross-attention), as ``nn.MultiheadAttention``'s
``in_proj`` does, while the parameters stay four ``nn.Linear`` layers.

Tensors are batch-first: ``(batch, time, features)`` outside, ``(batch, heads, time, head_dim)``
inside.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skipln.errors import ConfigError

KeysValues = tuple[Tensor, Tensor]
"""Per-head keys and values, each of shape ``(batch, heads, time, head_dim)``."""


class MultiheadAttention(nn.Module):
    """Scaled dot-product attention with ``heads`` heads (Vaswani et al. 2017).

    The four projections are the ``nn.Linear`` layers ``q_proj``, ``k_proj``, ``v_proj`` and
    ``out_proj``, so that a skip strategy can re-initialise them (DeepNorm scales ``v_proj``
    and ``out_proj``).

    Queries may come in groups that share keys: when the query batch is ``g`` times the key
    batch, query rows ``i·g … i·g + g − 1`` attend to key row ``i``. Beam search uses this to
    attend from every hypothesis of a sentence to that sentence's encoder output, which is
    then stored once per sentence instead of once per hypothesis.

    Args:
        embed_dim: features of queries, keys and values.
        heads: number of heads; must divide ``embed_dim``.
        dropout: dropout on the attention weights during training.
    """

    def __init__(self, embed_dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % heads != 0:
            raise ConfigError(f"MultiheadAttention: 'heads' ({heads}) must divide the model dimension ({embed_dim})")
        self.embed_dim = embed_dim
        self.heads = heads
        self.head_dim = embed_dim // heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """fairseq's initialisation: Xavier-uniform weights (gain 1/√2 for the fused-size q, k, v), zero biases."""
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.out_proj.weight)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.zeros_(proj.bias)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, time, _ = x.shape
        return x.view(batch, time, self.heads, self.head_dim).transpose(1, 2)

    def _project(self, x: Tensor, projections: tuple[nn.Linear, ...]) -> tuple[Tensor, ...]:
        """Apply several projections of ``x`` as one matrix product; each result split into heads."""
        # One (d, k·d) product instead of k (d, d) ones: fewer, larger GEMMs, and autograd sums one
        # input gradient instead of k. Concatenating the weights costs k·d² copies, far less.
        weight = torch.cat([p.weight for p in projections])
        bias = torch.cat([p.bias for p in projections])
        return tuple(self._split_heads(part) for part in F.linear(x, weight, bias).chunk(len(projections), dim=-1))

    def keys_values(self, source: Tensor) -> KeysValues:
        """Project ``source`` of shape ``(batch, time, embed_dim)`` into per-head keys and values."""
        keys, values = self._project(source, (self.k_proj, self.v_proj))
        return keys, values

    def queries_keys_values(self, x: Tensor) -> tuple[Tensor, KeysValues]:
        """Self-attention's per-head queries and ``(keys, values)`` of ``x``, for :meth:`attend`."""
        queries, keys, values = self._project(x, (self.q_proj, self.k_proj, self.v_proj))
        return queries, (keys, values)

    def forward(self, query: Tensor, keys_values: KeysValues, *, key_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        """Attend from ``query`` to projected keys and values.

        Args:
            query: ``(batch · groups, time, embed_dim)``.
            keys_values: from :meth:`keys_values`, batch ``batch``.
            key_mask: boolean, broadcastable to ``(batch, 1, 1, key_time)``; ``True`` where a
                key may be attended to (``False`` at padding).
            causal: position ``t`` attends to keys ``0 … t`` only (query and key times equal).

        Returns:
            ``(batch · groups, time, embed_dim)``.
        """
        return self.attend(self._split_heads(self.q_proj(query)), keys_values, key_mask=key_mask, causal=causal)

    def attend(self, q: Tensor, keys_values: KeysValues, *, key_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        """:meth:`forward` for queries already projected and split into heads, ``(batch · groups, heads, time, head_dim)``."""
        keys, values = keys_values
        rows, heads, time, head_dim = q.shape
        groups = rows // keys.shape[0]
        if groups * keys.shape[0] != rows:
            raise ValueError(
                f"MultiheadAttention: {rows} query rows cannot be grouped over {keys.shape[0]} key rows; "
                f"the query batch must be a multiple of the key batch"
            )
        if groups > 1:
            if causal:
                raise ValueError("MultiheadAttention: causal attention needs one query row per key row")
            # Fold a sentence's hypotheses into its query time axis: one attention per sentence.
            q = q.view(-1, groups, heads, time, head_dim).transpose(1, 2).reshape(-1, heads, groups * time, head_dim)
        out = F.scaled_dot_product_attention(
            q,
            keys,
            values,
            attn_mask=key_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal,
        )
        if groups > 1:
            out = out.view(-1, heads, groups, time, head_dim).transpose(1, 2)
        out = out.reshape(rows, heads, time, head_dim).transpose(1, 2).reshape(rows, time, self.embed_dim)
        return self.out_proj(out)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, heads={self.heads}, dropout={self.dropout:g}"


__all__ = ["KeysValues", "MultiheadAttention"]

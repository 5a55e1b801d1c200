"""Analytic FLOP count of an encoder-decoder Transformer training step (matmuls only).

A matmul of ``(m × k)`` by ``(k × n)`` is ``2·m·k·n`` FLOPs; the backward pass computes two
matmuls of the same size per forward matmul (gradients of the input and of the weight), so
a training step is 3 × the forward FLOPs. Counted over padded shapes (the work the hardware
does). Attention scores and the weighted sum are counted in full, causal or not (the
convention of PaLM's model FLOPs utilisation); layer norms, softmax, dropout and the
optimizer are not counted (they are not matmuls).
"""

from __future__ import annotations


def transformer_forward_flops(
    *, sentences: int, source_len: int, target_len: int, dim: int, ffn_dim: int, vocab: int, encoder_layers: int, decoder_layers: int
) -> float:
    """Matmul FLOPs of one teacher-forced forward pass over a padded batch."""
    src = sentences * source_len
    tgt = sentences * target_len
    d, f = dim, ffn_dim
    encoder_layer = src * (4 * 2 * d * d + 2 * 2 * d * f) + sentences * 2 * (2 * source_len * source_len * d)
    decoder_layer = (
        tgt * (4 * 2 * d * d)  # self-attention projections
        + sentences * 2 * (2 * target_len * target_len * d)  # self-attention scores and weighted sum
        + tgt * (2 * 2 * d * d)  # cross-attention query and output projections
        + src * (2 * 2 * d * d)  # cross-attention keys and values of the encoder output
        + sentences * 2 * (2 * target_len * source_len * d)  # cross-attention scores and weighted sum
        + tgt * (2 * 2 * d * f)  # feed-forward
    )
    output = tgt * 2 * d * vocab
    return float(encoder_layers * encoder_layer + decoder_layers * decoder_layer + output)


def transformer_training_flops(**sizes: int) -> float:
    """Matmul FLOPs of forward + backward (3 × forward); arguments as :func:`transformer_forward_flops`."""
    return 3.0 * transformer_forward_flops(**sizes)


__all__ = ["transformer_forward_flops", "transformer_training_flops"]

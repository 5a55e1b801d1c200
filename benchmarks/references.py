"""Reference models written the usual way, for side-by-side speed comparisons.

* :class:`TorchSeq2Seq` — ``torch.nn.Transformer`` (Post-LN, batch first) with what a
  translation model adds around it: token embeddings scaled by ``sqrt(d)``, sinusoidal
  positions, dropout, and an output projection, as the PyTorch tutorials write it.
* :class:`TorchvisionCifarResNet` — the CIFAR ResNet of He et al. 2016 assembled from
  torchvision's ``BasicBlock``, so the blocks that do the work come from a library, not from us.

Neither imports skipln: they are what a researcher would use instead of it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_table(max_positions: int, dim: int) -> Tensor:
    """The tutorials' interleaved sine/cosine position table, ``(max_positions, dim)``."""
    position = torch.arange(max_positions, dtype=torch.float)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_positions, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table


class TorchSeq2Seq(nn.Module):
    """``nn.Transformer`` with embeddings, positions and an output projection.

    ``dropout`` is ``nn.Transformer``'s single rate: residual, attention weights and after the
    feed-forward activation alike (compare with a skipln model whose three rates equal it).
    ``nn.Transformer`` also applies a final LayerNorm to each stack even in its Post-LN form:
    two LayerNorms more than a Post-LN skipln model, a negligible amount of work.
    """

    def __init__(self, vocab: int, dim: int, heads: int, layers: int, ffn_dim: int, dropout: float, max_positions: int = 1024) -> None:
        super().__init__()
        self.dim = dim
        self.src_embed = nn.Embedding(vocab, dim)
        self.tgt_embed = nn.Embedding(vocab, dim)
        self.register_buffer("positions", sinusoidal_table(max_positions, dim), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.transformer = nn.Transformer(
            d_model=dim,
            nhead=heads,
            num_encoder_layers=layers,
            num_decoder_layers=layers,
            dim_feedforward=ffn_dim,
            dropout=dropout,
            batch_first=True,
        )
        self.out = nn.Linear(dim, vocab, bias=False)

    def embed(self, table: nn.Embedding, tokens: Tensor) -> Tensor:
        return self.dropout(table(tokens) * math.sqrt(self.dim) + self.positions[: tokens.shape[1]])

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, prev_output_tokens: Tensor) -> Tensor:
        """Teacher-forced logits ``(sentences, target_time, vocab)``; the same interface as skipln's Transformer."""
        padding = torch.arange(src_tokens.shape[1], device=src_tokens.device)[None, :] >= src_lengths[:, None]
        time = prev_output_tokens.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(time, device=src_tokens.device)
        h = self.transformer(
            self.embed(self.src_embed, src_tokens),
            self.embed(self.tgt_embed, prev_output_tokens),
            tgt_mask=causal,
            src_key_padding_mask=padding,
            memory_key_padding_mask=padding,
            tgt_is_causal=True,
        )
        return self.out(h)


class TorchvisionCifarResNet(nn.Module):
    """CIFAR ResNet of depth ``6n + 2`` (ResNet-56: ``n = 9``) assembled from torchvision's own ``BasicBlock``.

    16/32/64 channels, a 3×3 stem with BN-ReLU, global average pooling and a linear classifier
    (He et al. 2016's CIFAR network); where a stage halves the resolution, the shortcut is
    torchvision's ``downsample``: a strided 1×1 convolution and BN (option B). Compare with
    skipln's ``ResNet(depth, "basic", shortcut="B")``, which has the same parameters.
    """

    def __init__(self, depth: int = 56, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        from torchvision.models.resnet import BasicBlock, conv1x1, conv3x3

        n = (depth - 2) // 6
        self.stem = nn.Sequential(conv3x3(in_channels, 16), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        in_planes = 16
        for stage, planes in enumerate((16, 32, 64)):
            for index in range(n):
                stride = 2 if stage > 0 and index == 0 else 1
                downsample = None
                if stride != 1 or in_planes != planes:
                    downsample = nn.Sequential(conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes))
                layers.append(BasicBlock(in_planes, planes, stride, downsample))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():  # torchvision's ResNet initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


__all__ = ["TorchSeq2Seq", "TorchvisionCifarResNet", "sinusoidal_table"]

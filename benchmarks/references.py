"""Reference models written the usual way, for side-by-side speed comparisons.

* :class:`TorchSeq2Seq` — ``torch.nn.Transformer`` (Post-LN, batch first) with what a
  translation model adds around it: token embeddings scaled by ``sqrt(d)``, sinusoidal
  positions, dropout, and an output projection, as the PyTorch tutorials write it.
* :class:`ReferenceResNet` — the CIFAR ResNet of He et al. 2016 as it is commonly written
  (e.g. the widely used ``akamaster/pytorch_resnet_cifar10``): a basic block computing
  ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with the option-A shortcut.

Neither imports skipln: they are what a researcher would write instead of using it.
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


class _OptionAShortcut(nn.Module):
    """Subsample by 2 and zero-pad the channels (He et al.'s option A on CIFAR)."""

    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = _OptionAShortcut(planes - in_planes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ReferenceResNet(nn.Module):
    """CIFAR ResNet of depth ``6n + 2`` (ResNet-56: ``n = 9``), 16/32/64 channels, option-A shortcuts."""

    def __init__(self, depth: int = 56, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers: list[nn.Module] = []
        in_planes = 16
        for stage, planes in enumerate((16, 32, 64)):
            for index in range(n):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(_BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


__all__ = ["ReferenceResNet", "TorchSeq2Seq", "sinusoidal_table"]

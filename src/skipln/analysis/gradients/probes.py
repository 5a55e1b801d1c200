"""The models the study measures, behind one interface (:class:`Probe`): build at a depth, feed, train.

:class:`TransformerProbe` drives :class:`~skipln.analysis.gradients.masked_lm.MaskedLMEncoder` on
the embedded gettext corpus; :class:`ResNetProbe` drives :class:`~skipln.models.resnet.ResNet`
on scikit-learn's digits. Each tells the study where its stack of residual layers is, so the
gradient at every layer's input can be read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from skipln.analysis.gradients.config import ResNetSettings, TransformerSettings
from skipln.analysis.gradients.masked_lm import MaskedLMEncoder
from skipln.errors import ConfigError
from skipln.models.resnet import ResNet
from skipln.skip import SkipStrategy


@dataclass(frozen=True)
class MaskedBatch:
    """Sentences with some tokens replaced by the mask; ``targets`` is -100 except where masked."""

    tokens: Tensor
    lengths: Tensor
    targets: Tensor


@dataclass(frozen=True)
class ImageBatch:
    """Images ``(batch, channels, height, width)`` and their class labels."""

    images: Tensor
    labels: Tensor


class Probe(ABC):
    """A model of the study: builds it at a depth with a strategy, serves batches, computes the loss.

    ``depth`` is the number of layers of the stack; each holds ``blocks_per_layer`` residual blocks.
    """

    name: str
    blocks_per_layer: int

    @abstractmethod
    def build(self, skip: SkipStrategy, depth: int) -> nn.Module:
        """A freshly initialised network (seed the global RNG first)."""

    @abstractmethod
    def stack(self, net: nn.Module) -> tuple[Sequence[nn.Module], nn.Module]:
        """The stack's layers in order, and the module whose input is the last layer's output."""

    @abstractmethod
    def batches(self, seed: int) -> Iterator[Any]:
        """An endless stream of training batches, the same for the same seed."""

    @abstractmethod
    def loss(self, net: nn.Module, batch: Any) -> Tensor:
        """The training loss of ``net`` on ``batch``."""

    @abstractmethod
    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        """The optimizer of the training steps."""


def _dtype_of(net: nn.Module) -> torch.dtype:
    return next(net.parameters()).dtype


class TransformerProbe(Probe):
    """:class:`MaskedLMEncoder` on the English side of the embedded gettext corpus (short sentences)."""

    blocks_per_layer = 2

    def __init__(self, name: str, settings: TransformerSettings) -> None:
        self.name = name
        self.settings = settings
        self._data: tuple[Any, Tensor] | None = None

    def _sentences(self) -> tuple[Any, Tensor]:
        if self._data is None:
            from skipln.data.translation import TranslationDataModule

            data = TranslationDataModule(vocab_size=self.settings.vocab_size)
            data.setup("fit")
            dataset = data.train_dataloader().dataset
            positions = dataset.source.lengths() + 1  # with </s>
            rows = torch.nonzero((positions >= 2) & (positions <= self.settings.max_length)).flatten()
            if len(rows) < self.settings.batch_size:
                raise ConfigError(
                    f"only {len(rows)} training sentences have at most max_length={self.settings.max_length} tokens, "
                    f"fewer than batch_size={self.settings.batch_size}: raise models.transformer.max_length"
                )
            self._data = (dataset, rows)
        return self._data

    def build(self, skip: SkipStrategy, depth: int) -> nn.Module:
        s = self.settings
        return MaskedLMEncoder(s.vocab_size, skip, depth, s.dim, s.ffn_dim, s.heads, s.max_length)

    def stack(self, net: nn.Module) -> tuple[Sequence[nn.Module], nn.Module]:
        assert isinstance(net, MaskedLMEncoder)
        return list(net.layers), net.boundary

    def batches(self, seed: int) -> Iterator[MaskedBatch]:
        dataset, rows = self._sentences()
        generator = torch.Generator().manual_seed(seed)
        while True:
            chosen = rows[torch.randperm(len(rows), generator=generator)[: self.settings.batch_size]]
            batch = dataset.__getitems__(chosen.tolist())
            tokens, lengths = batch["src_tokens"], batch["src_lengths"]
            # Words may be masked, </s> not; every sentence gets at least one mask.
            maskable = torch.arange(tokens.shape[1])[None, :] < (lengths - 1)[:, None]
            masked = maskable & (torch.rand(tokens.shape, generator=generator) < self.settings.mask_fraction)
            forced = (torch.rand(tokens.shape, generator=generator) * maskable).argmax(dim=1)
            masked[torch.arange(len(tokens)), forced] = True
            yield MaskedBatch(tokens.masked_fill(masked, self.settings.vocab_size), lengths, tokens.masked_fill(~masked, -100))

    def loss(self, net: nn.Module, batch: MaskedBatch) -> Tensor:
        if self.settings.attention == "math":
            # Where no norm bounds the stream, attention saturates (scores of 1e30 and more). The
            # fused CPU kernel's backward then differences two roundings of the same number and
            # amplifies the error layer by layer into inf/nan; the math kernel's softmax backward
            # is exact there (a one-hot softmax passes no gradient to queries and keys).
            with sdpa_kernel([SDPBackend.MATH]):
                logits = net(batch.tokens, batch.lengths)
        else:
            logits = net(batch.tokens, batch.lengths)
        return nn.functional.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100)

    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        return self.settings.optimizer.build(net.parameters(), "models.transformer.optimizer")


class ResNetProbe(Probe):
    """:class:`~skipln.models.resnet.ResNet` with ``depth`` blocks (a ResNet-(2·depth+2)) on scikit-learn's digits."""

    blocks_per_layer = 1

    def __init__(self, name: str, settings: ResNetSettings) -> None:
        self.name = name
        self.settings = settings
        self._images: Any | None = None

    def _train_set(self) -> Any:
        if self._images is None:
            from skipln.data.digits import DigitsDataModule

            data = DigitsDataModule(batch_size=self.settings.batch_size, augment=False)
            data.setup("fit")
            self._images = data.train_set
        return self._images

    def build(self, skip: SkipStrategy, depth: int) -> nn.Module:
        return ResNet(2 * depth + 2, self.settings.block, num_classes=10, in_channels=1, width=self.settings.width, skip=skip)

    def stack(self, net: nn.Module) -> tuple[Sequence[nn.Module], nn.Module]:
        assert isinstance(net, ResNet)
        return list(net.blocks), net.boundary

    def batches(self, seed: int) -> Iterator[ImageBatch]:
        train_set = self._train_set()
        generator = torch.Generator().manual_seed(seed)
        while True:
            chosen = torch.randperm(len(train_set), generator=generator)[: self.settings.batch_size].tolist()
            images, labels = zip(*(train_set[i] for i in chosen), strict=True)
            yield ImageBatch(torch.stack(images), torch.stack(labels))

    def loss(self, net: nn.Module, batch: ImageBatch) -> Tensor:
        return nn.functional.cross_entropy(net(batch.images.to(_dtype_of(net))), batch.labels)

    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        return self.settings.optimizer.build(net.parameters(), "models.resnet.optimizer")


def make_probe(name: str, settings: TransformerSettings | ResNetSettings) -> Probe:
    """The probe of a model of the config, by its settings' kind."""
    if isinstance(settings, TransformerSettings):
        return TransformerProbe(name, settings)
    return ResNetProbe(name, settings)

"""Machine translation around an encoder-decoder: label-smoothed training, perplexity, BLEU with beam search.

The data module provides the tokenizer and the raw references
(:class:`skipln.data.translation.TranslationDataModule`); the network is any module with the
interface of :class:`skipln.models.transformer.Transformer` (``forward`` for teacher
forcing, and the incremental decoding entry points that :mod:`skipln.decoding` uses).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric, MinMetric

from skipln.checkpoints import RUN_DEFAULTS_KEY
from skipln.decoding import Hypotheses, SpecialTokens, beam_search, greedy_search
from skipln.decoding.greedy import check_search_args
from skipln.errors import ConfigError
from skipln.losses import label_smoothed_nll_loss
from skipln.metrics import CorpusBLEU
from skipln.optim import Schedule
from skipln.tasks.base import SkipLNTask
from skipln.tasks.compiling import check_compile
from skipln.tasks.hparams import save_task_hyperparameters
from skipln.tasks.metric_states import persist_metric_states
from skipln.validation import is_real

Batch = dict[str, Any]

#: Arguments that choose how to decode, not what was trained: not stored in checkpoints.
DECODING_OPTIONS = ("beam_size", "lenpen", "max_len_a", "max_len_b", "min_len", "bleu_on_validation")

#: The data module's split that each evaluation stage reads references from.
_SPLITS = {"val": "valid", "test": "test"}


class TranslationTask(SkipLNTask):
    """Trains a translation network and evaluates it with perplexity and BLEU.

    Loss: label-smoothed cross-entropy per target token (fairseq's
    ``label_smoothed_cross_entropy``; natural log, where fairseq's logs use base 2). Each
    process divides by its own token count; under DDP the gradients are then averaged.

    Logged: ``train/loss`` and ``train/nll_loss`` (per step and per epoch, token-weighted);
    ``val/loss``, ``val/nll_loss``, ``val/ppl`` (``exp`` of the token-level NLL: sums over every
    process, then divided), ``val/loss_best``; ``test/loss``, ``test/nll_loss``, ``test/ppl``;
    ``test/bleu`` and ``test/bleu_tok`` from beam search; with ``bleu_on_validation`` also
    ``val/bleu``, ``val/bleu_tok`` and ``val/bleu_best``.

    BLEU (:class:`skipln.metrics.CorpusBLEU`, equal to ``sacrebleu.corpus_bleu``): the
    hypotheses are the tokenizer's decoded output, the references the target lines as they
    are in the data files. ``bleu`` applies sacreBLEU's ``13a`` tokenization (the modern
    standard, for detokenized text); ``bleu_tok`` splits on whitespace only, which is the
    tokenized BLEU of fairseq-era papers when the files are Moses-tokenized as
    ``prepare-iwslt14.sh`` writes them (then ``bleu`` is not a detokenized score: detokenize
    hypotheses and references first for that).

    Gradient clipping is the Trainer's: ``trainer.gradient_clip_val`` (fairseq's
    ``--clip-norm``; 0 or unset disables it). A skip strategy that finishes its
    initialisation from data (Admin) is profiled on the first training batch. Under DDP the
    data module shards its batches itself (``trainer.use_distributed_sampler: false``); BLEU
    counts every sentence once even where a sampler repeats some.

    Args:
        net: the encoder-decoder (e.g. :class:`skipln.models.transformer.Transformer`).
        optimizer: builds the optimizer from the parameters (``class_path`` in YAML, e.g.
            ``torch.optim.AdamW`` with ``betas: [0.9, 0.98]``).
        schedule: multiplies the learning rate at every optimizer step (e.g.
            :class:`skipln.optim.InverseSqrt`); none when ``None``.
        label_smoothing: ε of the loss, in [0, 1).
        beam_size: hypotheses per sentence in beam search (1: greedy search).
        lenpen: length penalty: scores are divided by ``length ** lenpen``.
        max_len_a, max_len_b: a translation has at most ``a · source_length + b`` tokens.
        min_len: a translation has at least this many tokens.
        bleu_on_validation: also decode the validation set and log ``val/bleu`` every
            validation (costs a beam search over the validation set).
        compile: compile the network with ``torch.compile`` (``nn.Module.compile``, in place, so
            checkpoints keep their parameter names) in :meth:`configure_model`, before the first
            stage. Teacher-forced forward passes (training, validation and test losses) run
            compiled; beam search's incremental steps run eagerly. The first steps pay the
            compilation (tens of seconds; on CPU it needs a C++ compiler); a run option, not
            stored in checkpoints.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable,
        schedule: Schedule | None = None,
        label_smoothing: float = 0.1,
        beam_size: int = 5,
        lenpen: float = 1.0,
        max_len_a: float = 1.2,
        max_len_b: int = 10,
        min_len: int = 1,
        bleu_on_validation: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        _validate(net, label_smoothing, beam_size, lenpen, max_len_a, max_len_b, min_len)
        # The network's config (under the CLI) travels in the checkpoint, so the checkpoint alone
        # rebuilds it (see skipln.tasks.hparams). Decoding options stay out: LightningCLI re-applies a
        # checkpoint's hparams over the command line, which would make `test --ckpt_path …
        # --model.init_args.beam_size 1` silently decode with beam 5.
        save_task_hyperparameters(self, ignore=["compile", *DECODING_OPTIONS])
        self.net = net
        self.optimizer = optimizer
        self.schedule = schedule
        self.label_smoothing = label_smoothing
        self.beam_size = beam_size
        self.lenpen = lenpen
        self.max_len_a = max_len_a
        self.max_len_b = max_len_b
        self.min_len = min_len
        self.bleu_on_validation = bleu_on_validation
        # Not `self.compile`: that would hide LightningModule.compile (nn.Module's) on the instance.
        self.compile_net = check_compile("TranslationTask", compile)

        self.train_loss, self.train_nll = MeanMetric(), MeanMetric()
        self.val_loss, self.val_nll = MeanMetric(), MeanMetric()
        self.test_loss, self.test_nll = MeanMetric(), MeanMetric()
        self.val_loss_best = MinMetric()
        self.val_bleu, self.val_bleu_tok = CorpusBLEU("13a"), CorpusBLEU("none")
        self.test_bleu, self.test_bleu_tok = CorpusBLEU("13a"), CorpusBLEU("none")
        self.val_bleu_best = MaxMetric()
        # Checkpoints carry the epoch's running training losses and the bests so far, so a resumed
        # run (even from mid-epoch) logs what the uninterrupted run would have.
        persist_metric_states(self.train_loss, self.train_nll, self.val_loss_best, self.val_bleu_best)

        self._references: dict[str, list[str]] = {}

    # ----------------------------------------------------------------------- setup

    @property
    def tokenizer(self) -> Any:
        """The data module's tokenizer.

        Read at every use, not kept: restoring a checkpoint after ``setup`` gives the data module
        the tokenizer the weights were trained with.
        """
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is None:
            raise ConfigError(
                "TranslationTask needs a data module with a `tokenizer` (and `references(split)` for BLEU), e.g. "
                "skipln.data.translation.TranslationDataModule: pass it as `data` in the config "
                "(or `datamodule=` to the Trainer)."
            )
        return tokenizer

    @property
    def special(self) -> SpecialTokens:
        """The tokenizer's bos, eos and pad ids."""
        tokenizer = self.tokenizer
        return SpecialTokens(bos=tokenizer.bos_id, eos=tokenizer.eos_id, pad=tokenizer.pad_id)

    def setup(self, stage: str) -> None:
        """Check that the data module's tokenizer fits the network."""
        tokenizer = self.tokenizer
        vocab = getattr(self.net, "vocab_size", None)
        if vocab is not None and len(tokenizer) != vocab:
            raise ConfigError(
                f"the tokenizer has {len(tokenizer)} pieces but the network was built for a vocabulary of {vocab}: "
                f"set model.init_args.net.init_args.vocab_size to {len(tokenizer)} (with a trained tokenizer, set "
                f"data.init_args.vocab_size to the same value, so both agree)."
            )
        self._references.clear()

    def references(self, stage: str) -> list[str]:
        """The raw target sentences of the split an evaluation stage (``val``, ``test``) reads."""
        if stage not in self._references:
            self._references[stage] = self.trainer.datamodule.references(_SPLITS[stage])
        return self._references[stage]

    # ----------------------------------------------------------------------- loss

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, prev_output_tokens: Tensor) -> Tensor:
        """Teacher-forced logits of the network."""
        return self.net(src_tokens, src_lengths, prev_output_tokens)

    def _losses(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Per-token smoothed loss, per-token NLL, and the number of target tokens."""
        logits = self(batch["src_tokens"], batch["src_lengths"], batch["prev_output_tokens"])
        pad = self.special.pad
        loss, nll = label_smoothed_nll_loss(logits, batch["target"], self.label_smoothing, pad)
        ntokens = (batch["target"] != pad).sum()
        return loss / ntokens, nll / ntokens, ntokens

    def forward_batch(self, batch: Batch) -> Tensor:
        return self(batch["src_tokens"], batch["src_lengths"], batch["prev_output_tokens"])

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, nll, ntokens = self._losses(batch)
        size = batch["src_tokens"].shape[0]
        self.train_loss(loss.detach(), ntokens)
        self.train_nll(nll.detach(), ntokens)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/nll_loss", self.train_nll, on_step=True, on_epoch=True, batch_size=size)
        return loss

    # ----------------------------------------------------------------------- decoding

    def generate(self, src_tokens: Tensor, src_lengths: Tensor) -> Hypotheses:
        """The best translation of each sentence as token ids (beam search; greedy when ``beam_size`` is 1)."""
        options = {"lenpen": self.lenpen, "max_len_a": self.max_len_a, "max_len_b": self.max_len_b, "min_len": self.min_len}
        if self.beam_size == 1:
            return greedy_search(self.net, src_tokens, src_lengths, self.special, **options)
        return beam_search(self.net, src_tokens, src_lengths, self.special, beam_size=self.beam_size, **options)

    def translate(self, batch: Batch) -> list[str]:
        """Decoded translations of a batch's source sentences."""
        tokens = self.generate(batch["src_tokens"], batch["src_lengths"]).tokens.cpu()
        return [self.tokenizer.decode(row.tolist()) for row in tokens]

    # ----------------------------------------------------------------------- evaluation

    def _evaluate(self, batch: Batch, stage: str, with_bleu: bool) -> None:
        loss, nll, ntokens = self._losses(batch)
        size = batch["src_tokens"].shape[0]
        mean_loss, mean_nll = (self.val_loss, self.val_nll) if stage == "val" else (self.test_loss, self.test_nll)
        mean_loss(loss, ntokens)
        mean_nll(nll, ntokens)
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size)
        self.log(f"{stage}/nll_loss", mean_nll, on_step=False, on_epoch=True, batch_size=size)
        if not with_bleu:
            return
        hypotheses = self.translate(batch)
        ids = batch["ids"].tolist()
        all_references = self.references(stage)
        references = [all_references[i] for i in ids]
        bleu, bleu_tok = (self.val_bleu, self.val_bleu_tok) if stage == "val" else (self.test_bleu, self.test_bleu_tok)
        bleu.update(hypotheses, references, ids)
        bleu_tok.update(hypotheses, references, ids)
        self.log(f"{stage}/bleu", bleu, on_step=False, on_epoch=True, prog_bar=True, batch_size=size)
        self.log(f"{stage}/bleu_tok", bleu_tok, on_step=False, on_epoch=True, batch_size=size)

    def _log_perplexity(self, stage: str, mean_nll: MeanMetric) -> None:
        # A plain tensor, so Lightning reduces it: it is already the same on every rank.
        self.log(f"{stage}/ppl", torch.exp(mean_nll.compute()), sync_dist=True)

    def on_train_epoch_start(self) -> None:
        # Not called when a run resumes mid-epoch: then the restored running losses are the epoch's so far.
        self.train_loss.reset()
        self.train_nll.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # How this run decodes: the defaults of a `test --ckpt_path` that names no config.
        checkpoint[RUN_DEFAULTS_KEY] = {name: getattr(self, name) for name in DECODING_OPTIONS}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", with_bleu=self.bleu_on_validation)

    def on_validation_epoch_end(self) -> None:
        if self.val_nll.update_count == 0:
            return
        self._log_perplexity("val", self.val_nll)
        if self._trainer is not None and self._trainer.sanity_checking:
            return  # the sanity check's validation must not count towards the best values
        self.val_loss_best(self.val_loss.compute())
        self.log("val/loss_best", self.val_loss_best.compute(), sync_dist=True)
        if self.bleu_on_validation:
            self.val_bleu_best(self.val_bleu.compute())
            self.log("val/bleu_best", self.val_bleu_best.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", with_bleu=True)

    def on_test_epoch_end(self) -> None:
        if self.test_nll.update_count > 0:
            self._log_perplexity("test", self.test_nll)

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> tuple[list[int], list[str]]:
        """``(ids, translations)``: each source line's index and its translation (see :class:`TranslationWriter`)."""
        return batch["ids"].tolist(), self.translate(batch)


class TranslationWriter(BasePredictionWriter):
    """Writes ``predict``'s translations to a text file, one per input line, in input order.

    Add it to the trainer's callbacks for ``predict``::

        python main.py predict --config run.yaml --ckpt_path best.ckpt \\
            --data.init_args.predict_file input.en \\
            --trainer.callbacks+=skipln.tasks.translation.TranslationWriter \\
            --trainer.callbacks.output_path output.de

    Under DDP every process translates its share; rank 0 gathers them and writes the file.

    Args:
        output_path: the file to write (its folder is created).
    """

    def __init__(self, output_path: str) -> None:
        super().__init__(write_interval="batch")
        self.output_path = Path(output_path)
        self._lines: dict[int, str] = {}

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._lines = {}

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        ids, translations = prediction
        self._lines.update(zip(ids, translations, strict=True))

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        lines = self._lines
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[dict[int, str] | None] = [None] * trainer.world_size
            dist.all_gather_object(gathered, lines)
            lines = {i: text for part in gathered if part for i, text in part.items()}
        if trainer.is_global_zero:
            self._write(lines)
        trainer.strategy.barrier("TranslationWriter")

    def _write(self, lines: dict[int, str]) -> None:
        count = max(lines) + 1 if lines else 0
        missing = count - len(lines)
        if missing:
            warnings.warn(
                f"TranslationWriter: {missing} of {count} input lines have no translation; they are written as empty "
                f"lines so that line i of {self.output_path} still translates line i of the input",
                stacklevel=2,
            )
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        with self.output_path.open("w", encoding="utf-8") as handle:
            for i in range(count):
                handle.write(lines.get(i, "").replace("\n", " ") + "\n")


def _validate(
    net: nn.Module, label_smoothing: float, beam_size: int, lenpen: float, max_len_a: float, max_len_b: int, min_len: int
) -> None:
    if not isinstance(net, nn.Module):
        raise ConfigError(f"TranslationTask: 'net' must be a torch.nn.Module, got {type(net).__name__}")
    if not is_real(label_smoothing) or not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"TranslationTask: 'label_smoothing' must be in [0, 1), got {label_smoothing!r}")
    try:
        check_search_args(beam_size, float(lenpen), float(max_len_a), max_len_b, min_len)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"TranslationTask: {error}") from None


__all__ = ["TranslationTask", "TranslationWriter"]

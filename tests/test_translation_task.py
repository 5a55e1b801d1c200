"""The translation task: the loss, BLEU, training and evaluation through Lightning, prediction files, configs."""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sacrebleu
import torch
import yaml
from lightning.pytorch import LightningDataModule, Trainer
from torch import Tensor
from torch.utils.data import DataLoader

from skipln.cli import cli_main
from skipln.decoding import SpecialTokens, beam_search
from skipln.errors import ConfigError
from skipln.metrics import CorpusBLEU
from skipln.models.transformer import Transformer
from skipln.losses import label_smoothed_nll_loss
from skipln.skip import Admin, needs_profiling
from skipln.tasks.translation import TranslationTask, TranslationWriter

REPO = Path(__file__).resolve().parents[1]
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()


# --------------------------------------------------------------------------- a tiny word-level data set


class WordTokenizer:
    """One id per word of ``WORDS``, after pad 0, bos 1, eos 2, unk 3 (the data module's layout)."""

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, extra: int = 0) -> None:
        self.words = WORDS + [f"extra{i}" for i in range(extra)]
        self.index = {w: i + 4 for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words) + 4

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        words = []
        for i in ids:
            if i == self.eos_id:
                break
            if i >= 4:
                words.append(self.words[i - 4])
        return " ".join(words)


def reverse_corpus(count: int, seed: int) -> tuple[list[str], list[str]]:
    """Sentences of 2–6 words and the same words in reverse order."""
    rng = random.Random(seed)
    sources = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for _ in range(count)]
    return sources, [" ".join(reversed(s.split())) for s in sources]


def collate(tokenizer: WordTokenizer, items: list[tuple[int, str, str | None]]) -> dict[str, Any]:
    """Batches in the data module's format (right-padded; eos after the source and target, bos before)."""
    pad = tokenizer.pad_id

    def padded(rows: list[list[int]]) -> Tensor:
        out = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row)
        return out

    sources = [tokenizer.encode(src) + [tokenizer.eos_id] for _, src, _ in items]
    batch: dict[str, Any] = {
        "src_tokens": padded(sources),
        "src_lengths": torch.tensor([len(s) for s in sources]),
        "ids": torch.tensor([i for i, _, _ in items]),
    }
    if items[0][2] is not None:
        targets = [tokenizer.encode(tgt) for _, _, tgt in items]  # type: ignore[arg-type]
        batch["prev_output_tokens"] = padded([[tokenizer.bos_id, *t] for t in targets])
        batch["target"] = padded([[*t, tokenizer.eos_id] for t in targets])
        batch["ntokens"] = sum(len(t) + 1 for t in targets)
    return batch


class ReverseDataModule(LightningDataModule):
    """Reversal pairs with the interface of TranslationDataModule (tokenizer, references, id-tagged batches)."""

    name = "reverse"

    def __init__(self, train: int = 64, evaluate: int = 12, batch_size: int = 16, extra_vocab: int = 0) -> None:
        super().__init__()
        self.tokenizer = WordTokenizer(extra_vocab)
        self.batch_size = batch_size
        self.splits = {"train": reverse_corpus(train, 0), "valid": reverse_corpus(evaluate, 1), "test": reverse_corpus(evaluate, 2)}
        self.splits["predict"] = (self.splits["test"][0], None)  # type: ignore[assignment]

    def references(self, split: str) -> list[str]:
        return list(self.splits[split][1])

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        sources, targets = self.splits[split]
        items = [(i, s, None if targets is None else targets[i]) for i, s in enumerate(sources)]
        # Longest first, as token-count batching reorders sentences: ids must restore the input order.
        items.sort(key=lambda item: -len(item[1].split()))
        return DataLoader(items, batch_size=self.batch_size, shuffle=shuffle, collate_fn=lambda b: collate(self.tokenizer, b))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")


def small_net(vocab: int = len(WORDS) + 4, **overrides: Any) -> Transformer:
    args: dict[str, Any] = {"encoder_layers": 1, "decoder_layers": 1, "dim": 32, "ffn_dim": 64, "heads": 2, "dropout": 0.0}
    return Transformer(vocab, **{**args, **overrides})


def task(net: Transformer | None = None, **overrides: Any) -> TranslationTask:
    args: dict[str, Any] = {"beam_size": 2, "max_len_a": 1.0, "max_len_b": 2}
    return TranslationTask(net or small_net(), lambda p: torch.optim.Adam(p, lr=3e-3), **{**args, **overrides})


def trainer(tmp_path: Path, **overrides: Any) -> Trainer:
    args: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "limit_train_batches": 3,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
    }
    return Trainer(**{**args, **overrides})


# --------------------------------------------------------------------------- BLEU


def noisy_corpus(count: int, seed: int) -> tuple[list[str], list[str]]:
    """References and hypotheses that share some n-grams, with punctuation for the tokenizers."""
    rng = random.Random(seed)
    refs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9))) + rng.choice([".", " .", "?", ""]) for _ in range(count)]
    hyps = [" ".join(w if rng.random() < 0.7 else rng.choice(WORDS) for w in r.split()) for r in refs]
    return hyps, refs


@pytest.mark.parametrize("tokenize", ["13a", "none"])
def test_corpus_bleu_equals_sacrebleu_corpus_bleu(tokenize: str) -> None:
    hyps, refs = noisy_corpus(40, seed=0)
    metric = CorpusBLEU(tokenize=tokenize)
    metric.update(hyps[:25], refs[:25], list(range(25)))
    metric.update(hyps[25:], refs[25:], list(range(25, 40)))
    expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-9)


def test_corpus_bleu_smooths_a_missing_ngram_order_as_sacrebleu_does() -> None:
    metric = CorpusBLEU()
    metric.update(["alpha bravo charlie delta"], ["alpha bravo charlie echo"], [0])  # no 4-gram matches
    assert float(metric.compute()) == pytest.approx(sacrebleu.corpus_bleu(["alpha bravo charlie delta"], [["alpha bravo charlie echo"]]).score)
    assert float(metric.compute()) > 0


def test_corpus_bleu_counts_a_sentence_seen_twice_once() -> None:
    hyps, refs = noisy_corpus(10, seed=1)
    metric = CorpusBLEU()
    metric.update(hyps, refs, list(range(10)))
    metric.update(hyps[:3], refs[:3], [0, 1, 2])  # a distributed sampler's padding repeats sentences
    assert float(metric.compute()) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)


def test_corpus_bleu_merges_the_states_of_several_processes() -> None:
    hyps, refs = noisy_corpus(12, seed=2)
    rank0, rank1 = CorpusBLEU(), CorpusBLEU()
    rank0.update(hyps[::2], refs[::2], list(range(0, 12, 2)))
    rank1.update(hyps[1::2] + hyps[:1], refs[1::2] + refs[:1], [*range(1, 12, 2), 0])
    rank0.merge_state(rank1)  # what torchmetrics' sync does: concatenate the lists of every rank
    assert float(rank0.compute()) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)


def test_corpus_bleu_after_a_distributed_sync_counts_sentences_seen_by_two_processes_once() -> None:
    hyps, refs = noisy_corpus(12, seed=3)
    synced: list[bool] = []

    def gather_from_two_identical_ranks(tensor: Tensor, group: Any = None) -> list[Tensor]:
        synced.append(True)
        return [tensor, tensor.clone()]

    # compute() runs torchmetrics' own sync, here with an all-gather that returns every state twice.
    metric = CorpusBLEU(dist_sync_fn=gather_from_two_identical_ranks, distributed_available_fn=lambda: True)
    metric.update(hyps[:7], refs[:7], list(range(7)))
    metric.update(hyps[7:], refs[7:], list(range(7, 12)))
    assert float(metric.compute()) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert synced


def test_corpus_bleu_rejects_an_unknown_tokenizer() -> None:
    with pytest.raises(ValueError, match="'tokenize' must be one of"):
        CorpusBLEU(tokenize="moses")


# --------------------------------------------------------------------------- the task in Lightning


def test_fit_then_test_logs_loss_perplexity_and_both_bleus(tmp_path: Path) -> None:
    model, data = task(bleu_on_validation=True), ReverseDataModule()
    fit = trainer(tmp_path)
    fit.fit(model, datamodule=data)
    logged = fit.callback_metrics
    for key in ("train/loss_step", "train/nll_loss_step", "val/loss", "val/nll_loss", "val/ppl", "val/loss_best", "val/bleu", "val/bleu_best"):
        assert key in logged, key
    assert float(logged["val/ppl"]) == pytest.approx(math.exp(float(logged["val/nll_loss"])), rel=1e-5)
    fit.test(model, datamodule=data)
    logged = fit.callback_metrics
    for key in ("test/loss", "test/ppl", "test/bleu", "test/bleu_tok"):
        assert key in logged, key


def test_test_bleu_scores_the_beam_search_translations_against_the_raw_references(tmp_path: Path) -> None:
    model, data = task(), ReverseDataModule()
    run = trainer(tmp_path)
    run.test(model, datamodule=data)
    hypotheses: dict[int, str] = {}
    for batch in data.test_dataloader():
        hypotheses.update(zip(batch["ids"].tolist(), model.translate(batch), strict=True))
    refs = data.references("test")
    expected = sacrebleu.corpus_bleu([hypotheses[i] for i in range(len(refs))], [refs]).score
    assert float(run.callback_metrics["test/bleu"]) == pytest.approx(expected)


def test_a_tokenizer_of_another_size_than_the_network_is_rejected_with_the_fix(tmp_path: Path) -> None:
    data = ReverseDataModule(extra_vocab=5)
    with pytest.raises(ConfigError, match=f"set model.init_args.net.init_args.vocab_size to {len(data.tokenizer)}"):
        trainer(tmp_path).fit(task(), datamodule=data)


def test_the_task_decodes_with_the_data_modules_current_tokenizer(tmp_path: Path) -> None:
    # Restoring a checkpoint after setup hands the data module the tokenizer of the trained weights.
    model, data = task(beam_size=1), ReverseDataModule()
    trainer(tmp_path).test(model, datamodule=data)
    batch = next(iter(data.test_dataloader()))
    before = model.translate(batch)
    assert any(before)
    data.tokenizer = WordTokenizer()
    data.tokenizer.words = [w.upper() for w in data.tokenizer.words]
    assert model.translate(batch) == [text.upper() for text in before]


def test_a_strategy_that_needs_profiling_is_profiled_before_the_first_step(tmp_path: Path) -> None:
    model = task(small_net(skip=Admin()))
    assert needs_profiling(model.net)
    trainer(tmp_path, limit_train_batches=1, limit_val_batches=0).fit(model, datamodule=ReverseDataModule())
    assert not needs_profiling(model.net)


def test_predict_writes_one_translation_per_input_line_in_input_order(tmp_path: Path) -> None:
    model, data = task(beam_size=1), ReverseDataModule(batch_size=5)
    output = tmp_path / "out" / "hyp.txt"
    trainer(tmp_path, callbacks=[TranslationWriter(str(output))]).predict(model, datamodule=data, return_predictions=False)
    sources = data.splits["predict"][0]
    expected = []
    for i, source in enumerate(sources):  # each sentence alone, in file order
        expected.append(model.translate(collate(data.tokenizer, [(i, source, None)])))
    assert output.read_text().splitlines() == [e[0] for e in expected]


def test_checkpoints_keep_training_settings_but_not_decoding_options() -> None:
    # LightningCLI re-applies a checkpoint's hparams over the command line: decoding options stored
    # there could not be changed at test time (`--model.init_args.beam_size 1`).
    hparams = task(beam_size=3, lenpen=0.6, label_smoothing=0.2).hparams
    assert hparams["label_smoothing"] == 0.2
    assert not {"beam_size", "lenpen", "max_len_a", "max_len_b", "min_len", "bleu_on_validation"} & set(hparams)


def test_invalid_task_arguments_are_rejected_with_the_argument_named() -> None:
    with pytest.raises(ConfigError, match="'label_smoothing' must be in"):
        task(label_smoothing=1.0)
    with pytest.raises(ConfigError, match="'beam_size' must be an integer >= 1"):
        task(beam_size=0)


# --------------------------------------------------------------------------- learning


def test_a_small_model_learns_to_reverse_sentences_to_high_bleu_in_seconds() -> None:
    torch.manual_seed(0)
    tokenizer = WordTokenizer()
    sources, targets = reverse_corpus(2000, seed=0)
    net = small_net(dim=64, ffn_dim=128, heads=2)
    steps, warmup = 200, 30
    optimizer = torch.optim.Adam(net.parameters(), lr=6e-3, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 1.0) * (1 - s / steps))
    items = [(i, s, t) for i, (s, t) in enumerate(zip(sources, targets, strict=True))]
    for step in range(steps):
        batch = collate(tokenizer, random.Random(step).sample(items, 32))
        logits = net(batch["src_tokens"], batch["src_lengths"], batch["prev_output_tokens"])
        loss, _ = label_smoothed_nll_loss(logits, batch["target"], epsilon=0.1, ignore_index=tokenizer.pad_id)
        optimizer.zero_grad()
        (loss / batch["ntokens"]).backward()
        optimizer.step()
        schedule.step()

    test_sources, test_targets = reverse_corpus(50, seed=99)
    batch = collate(tokenizer, [(i, s, None) for i, s in enumerate(test_sources)])
    special = SpecialTokens(bos=tokenizer.bos_id, eos=tokenizer.eos_id, pad=tokenizer.pad_id)
    found = beam_search(net.eval(), batch["src_tokens"], batch["src_lengths"], special, beam_size=4, max_len_a=1.0, max_len_b=2)
    hypotheses = [tokenizer.decode(row.tolist()) for row in found.tokens]
    bleu = CorpusBLEU()
    bleu.update(hypotheses, test_targets, list(range(50)))
    assert float(bleu.compute()) > 90, hypotheses[:5]


# --------------------------------------------------------------------------- configs


CONFIGS = sorted((REPO / "configs" / "transformer").glob("*.yaml")) + [REPO / "configs" / "quickstart" / "transformer.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_translation_config_is_complete_and_valid_for_the_cli(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["main.py"])  # the arguments come from `args`, not from pytest's command line
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    resolved = yaml.safe_load(capsys.readouterr().out)
    net = resolved["model"]["init_args"]["net"]
    assert resolved["model"]["class_path"] == "skipln.tasks.translation.TranslationTask"
    assert net["init_args"]["skip"]["class_path"] == "skipln.skip.PostLN"
    # Written once, for the data; the CLI links the tokenizer's size into the network.
    assert "vocab_size" not in net["init_args"] and resolved["data"]["init_args"]["vocab_size"] > 0


def test_the_iwslt14_config_follows_fairseqs_transformer_iwslt_de_en_recipe() -> None:
    config = yaml.safe_load((REPO / "configs" / "transformer" / "iwslt14_de_en.yaml").read_text())
    model = config["model"]["init_args"]
    net = model["net"]["init_args"]
    assert (net["encoder_layers"], net["decoder_layers"], net["dim"], net["ffn_dim"], net["heads"]) == (6, 6, 512, 1024, 4)
    assert net["dropout"] == 0.3 and net["share_decoder_input_output_embed"] is True
    assert model["optimizer"]["init_args"] == {"lr": 5.0e-4, "betas": [0.9, 0.98], "weight_decay": 1.0e-4}
    assert model["schedule"] == {"class_path": "skipln.optim.InverseSqrt", "init_args": {"warmup_steps": 4000}}
    assert model["label_smoothing"] == 0.1 and model["beam_size"] == 5
    assert config["data"]["init_args"]["max_tokens"] == 4096

"""The rows a user meets first: the quickstart's whole ``fit``, training on real variable-length batches, data loading, tokenization.

All read the corpus embedded in the package through :class:`skipln.data.translation.TranslationDataModule`
with the quickstart's settings (``configs/quickstart/transformer.yaml``: its vocabulary,
its token budget, its model), so they measure what ``python main.py fit --config
configs/quickstart/transformer.yaml`` does:

* ``fit/lightning`` — ``Trainer.fit`` of the quickstart's :class:`~skipln.tasks.translation.TranslationTask`
  over ``fit_train_batches`` token-count batches and ``fit_val_batches`` validation batches, with
  the callbacks and the MLflow logger of ``configs/defaults.yaml`` (in a temporary store);
  ``fit/plain`` — the same model, batches, loss, optimizer, schedule and validation in a plain
  PyTorch loop that saves one checkpoint at the end. Their ratio is the toolkit's own overhead.
  Neither runs Lightning's sanity check (two extra validation batches, not overhead).
* ``corpus/<strategy|torch>`` — training steps over the first ``corpus_batches`` batches of the
  token-count sampler (real sentences, real lengths) at the training rows' model sizes.
* ``data/loader`` — the data module's training loader (``PairDataset`` builds whole padded
  batches); ``data/plain_loader`` — a ``DataLoader`` over the same pairs and batch sampler with a
  per-sentence ``pad_sequence`` collate, as one writes it by hand. Both count sentences.
* ``tokenize/skipln`` — :meth:`SentencePieceTokenizer.encode_batch` over the training split;
  ``tokenize/sentencepiece`` — sentencepiece's own ``encode`` of the same lines with the same
  threads. Both count sentences.

Lightning and the data module are imported by the builders, not at import time.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from benchmarks.harness import Workload
from benchmarks.settings import Settings
from benchmarks.sizes import Sizes
from benchmarks.workloads import LOSSES, _translation_steps, transformer_model

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart" / "transformer.yaml"


@functools.cache
def quickstart() -> dict[str, Any]:
    """The quickstart config's model, optimizer, schedule and data arguments."""
    config = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    task = config["model"]["init_args"]
    return {
        "net": task["net"]["init_args"],
        "optimizer": task["optimizer"]["init_args"],
        "warmup_steps": task["schedule"]["init_args"]["warmup_steps"],
        "label_smoothing": task["label_smoothing"],
        "data": config["data"]["init_args"],
    }


@functools.cache
def datamodule() -> Any:
    """The quickstart's data module, set up for ``fit`` (the tokenizer is trained once and cached)."""
    from skipln.data.translation import TranslationDataModule

    module = TranslationDataModule(**quickstart()["data"])
    module.prepare_data()
    module.setup("fit")
    return module


def _first(loader: Any, count: int) -> list[dict[str, Any]]:
    batches = []
    for batch in loader:
        if len(batches) == count:
            break
        batches.append(batch)
    return batches


def _quickstart_net() -> nn.Module:
    from skipln.models.transformer import Transformer
    from skipln.skip import PostLN

    net_args = {key: value for key, value in quickstart()["net"].items() if key != "skip"}
    # The CLI links the data's vocabulary size into the network; the embedded corpus yields all of it.
    return Transformer(skip=PostLN(), vocab_size=quickstart()["data"]["vocab_size"], **net_args)


# --------------------------------------------------------------------------- fit


def fit_lightning(sizes: Sizes, settings: Settings) -> Workload:
    """``fit/lightning``: ``Trainer.fit`` as the quickstart runs it, cut to a few batches."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import MLFlowLogger

    from skipln.callbacks import DivergenceGuard
    from skipln.gradient_monitor import GradientMonitor
    from skipln.optim import InverseSqrt
    from skipln.resume import ResumeState
    from skipln.tasks.translation import TranslationTask

    torch.manual_seed(0)
    data = datamodule()
    config = quickstart()
    task = TranslationTask(
        _quickstart_net(),
        optimizer=functools.partial(torch.optim.AdamW, **config["optimizer"]),
        schedule=InverseSqrt(config["warmup_steps"]),
        label_smoothing=config["label_smoothing"],
        compile=settings.compile,
    )
    folder = Path(tempfile.mkdtemp(prefix="skipln-bench-fit-"))

    def run() -> None:
        trainer = pl.Trainer(
            accelerator=settings.device_type,
            devices=1,
            precision=settings.precision,
            max_epochs=1,
            limit_train_batches=sizes.fit_train_batches,
            limit_val_batches=sizes.fit_val_batches,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            default_root_dir=str(folder),
            logger=MLFlowLogger(experiment_name="bench", tracking_uri=f"sqlite:///{folder / 'mlflow.db'}"),
            callbacks=[
                ModelCheckpoint(dirpath=folder / "checkpoints", monitor="val/loss", mode="min", save_top_k=1, save_last=True),
                ResumeState(every_seconds=300),
                DivergenceGuard(on_nonfinite="stop"),
                LearningRateMonitor(logging_interval="step"),
                GradientMonitor(every_n_steps=50),
            ],
            enable_model_summary=False,
        )
        trainer.fit(task, datamodule=data)

    return Workload("fit/lightning", run, _fit_tokens(data, sizes), "tok", settings.device, info=_fit_info(sizes))


def fit_plain(sizes: Sizes, settings: Settings) -> Workload:
    """``fit/plain``: the same epoch in a hand-written loop: train, validate, save a checkpoint."""
    from skipln.losses import label_smoothed_nll_loss
    from skipln.optim import InverseSqrt

    torch.manual_seed(0)
    data = datamodule()
    config = quickstart()
    net = settings.prepare(_quickstart_net())
    pad = data.tokenizer.pad_id
    smoothing = config["label_smoothing"]
    folder = Path(tempfile.mkdtemp(prefix="skipln-bench-plain-"))
    device = settings.device

    def losses(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        batch = {key: value.to(device) for key, value in batch.items() if isinstance(value, Tensor)}
        with settings.autocast():
            logits = net(batch["src_tokens"], batch["src_lengths"], batch["prev_output_tokens"])
        loss = label_smoothed_nll_loss(logits, batch["target"], smoothing, pad)[0]
        return loss, (batch["target"] != pad).sum()

    def run() -> None:
        optimizer = torch.optim.AdamW(net.parameters(), **config["optimizer"])
        schedule = InverseSqrt(config["warmup_steps"]).build(optimizer, sizes.fit_train_batches)
        net.train()
        running = torch.zeros(())
        for batch in _first(data.train_dataloader(), sizes.fit_train_batches):
            optimizer.zero_grad(set_to_none=True)
            loss, ntokens = losses(batch)
            (loss / ntokens).backward()
            optimizer.step()
            schedule.step()
            running += loss.detach().cpu() / ntokens.cpu()
        net.eval()
        total, count = torch.zeros(()), torch.zeros(())
        with torch.no_grad():
            for batch in _first(data.val_dataloader(), sizes.fit_val_batches):
                loss, ntokens = losses(batch)
                total += loss.cpu()
                count += ntokens.cpu()
        torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "val_loss": total / count}, folder / "last.pt")

    return Workload("fit/plain", run, _fit_tokens(data, sizes), "tok", settings.device, info=_fit_info(sizes))


def _fit_tokens(data: Any, sizes: Sizes) -> float:
    return float(sum(batch["ntokens"] for batch in _first(data.train_dataloader(), sizes.fit_train_batches)))


def _fit_info(sizes: Sizes) -> dict[str, Any]:
    net = quickstart()["net"]
    return {
        "train_batches": sizes.fit_train_batches, "val_batches": sizes.fit_val_batches,
        "max_tokens": quickstart()["data"]["max_tokens"], "dim": net["dim"], "layers": net["encoder_layers"],
    }


# --------------------------------------------------------------------------- real batches


def corpus_training(sizes: Sizes, model_name: str, settings: Settings) -> Workload:
    """``corpus/<strategy|torch>``: training steps over the sampler's first batches of real sentences."""
    data = datamodule()
    batches = _first(data.train_dataloader(), sizes.corpus_batches)
    vocab = len(data.tokenizer)
    torch.manual_seed(0)
    shape = {"dim": sizes.dim, "ffn_dim": sizes.ffn_dim, "heads": sizes.heads, "layers": sizes.layers}
    model = transformer_model(vocab, model_name, **shape)
    loss = LOSSES["torch_loss" if model_name == "torch" else "skipln_loss"]
    pad = data.tokenizer.pad_id
    steps = _translation_steps(model, batches, loss, settings, pad=pad)
    tokens = float(sum(int((batch["target"] != pad).sum()) for batch in batches))
    padded = float(sum(batch["target"].numel() for batch in batches))
    return Workload(
        f"corpus/{model_name}", steps, tokens, "tok", settings.device,
        info={**shape, "vocab": vocab, "batches": len(batches), "sentences": sum(len(b["ids"]) for b in batches),
              "padding_fraction": round(1.0 - tokens / padded, 3)},
    )


# --------------------------------------------------------------------------- data loading


def loader_skipln(sizes: Sizes, settings: Settings) -> Workload:
    """``data/loader``: one epoch of the data module's training loader."""
    data = datamodule()
    loader = data.train_dataloader()

    def run() -> None:
        for _ in loader:
            pass

    return Workload("data/loader", run, float(len(loader.dataset)), "sent", "cpu")


class _Pairs(torch.utils.data.Dataset):
    """(source ids, target ids) per sentence: a dataset as one writes it by hand."""

    def __init__(self, sources: list[Tensor], targets: list[Tensor]) -> None:
        self.sources, self.targets = sources, targets

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.sources[i], self.targets[i]


def loader_plain(sizes: Sizes, settings: Settings) -> Workload:
    """``data/plain_loader``: the same batches from a per-sentence dataset and a ``pad_sequence`` collate."""
    from skipln.data.batching import TokenBatchSampler

    data = datamodule()
    dataset = data.train_dataloader().dataset  # the same pairs, read once into the hand-written dataset
    tok = data.tokenizer
    pairs = _Pairs([dataset.source[i] for i in range(len(dataset))], [dataset.target[i] for i in range(len(dataset))])
    bos, eos, pad = torch.tensor([tok.bos_id]), torch.tensor([tok.eos_id]), tok.pad_id

    def collate(items: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        sources = [torch.cat([src, eos]) for src, _ in items]
        return {
            "src_tokens": pad_sequence(sources, batch_first=True, padding_value=pad),
            "src_lengths": torch.tensor([len(src) for src in sources]),
            "prev_output_tokens": pad_sequence([torch.cat([bos, tgt]) for _, tgt in items], batch_first=True, padding_value=pad),
            "target": pad_sequence([torch.cat([tgt, eos]) for _, tgt in items], batch_first=True, padding_value=pad),
        }

    sampler = TokenBatchSampler(dataset.lengths(), data.max_tokens, shuffle=True, seed=data.seed, num_replicas=1, rank=0)
    loader = torch.utils.data.DataLoader(pairs, batch_sampler=sampler, collate_fn=collate)

    def run() -> None:
        for _ in loader:
            pass

    return Workload("data/plain_loader", run, float(len(pairs)), "sent", "cpu")


# --------------------------------------------------------------------------- tokenization


def _train_lines() -> list[str]:
    from skipln.data.translation import read_lines

    return [line for path in datamodule().files("train") for line in read_lines(path)]


def tokenize_skipln(sizes: Sizes, settings: Settings) -> Workload:
    """``tokenize/skipln``: the tokenizer's ``encode_batch`` over the training split's lines."""
    tokenizer, lines = datamodule().tokenizer, _train_lines()
    threads = torch.get_num_threads()
    return Workload("tokenize/skipln", lambda: tokenizer.encode_batch(lines, num_threads=threads), float(len(lines)), "sent", "cpu",
                    info={"threads": threads})


def tokenize_sentencepiece(sizes: Sizes, settings: Settings) -> Workload:
    """``tokenize/sentencepiece``: sentencepiece's own batch ``encode`` of the same lines, same threads."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(datamodule().tokenizer.serialized)
    lines = _train_lines()
    threads = torch.get_num_threads()
    return Workload(
        "tokenize/sentencepiece", lambda: processor.encode(lines, out_type=int, num_threads=threads), float(len(lines)), "sent",
        "cpu", info={"threads": threads},
    )


WORKLOADS: dict[str, Callable[[Sizes, Settings], Workload]] = {
    "fit/lightning": fit_lightning,
    "fit/plain": fit_plain,
    "corpus/post_ln": lambda sizes, settings: corpus_training(sizes, "post_ln", settings),
    "corpus/torch": lambda sizes, settings: corpus_training(sizes, "torch", settings),
    "data/loader": loader_skipln,
    "data/plain_loader": loader_plain,
    "tokenize/skipln": tokenize_skipln,
    "tokenize/sentencepiece": tokenize_sentencepiece,
}


__all__ = ["WORKLOADS", "datamodule", "quickstart"]

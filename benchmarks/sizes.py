"""Size presets: ``tiny`` runs in seconds (the tests), ``small`` in minutes on 2 CPU cores, ``paper`` at full size."""

from __future__ import annotations

from dataclasses import dataclass

from skipln.errors import ConfigError


@dataclass(frozen=True)
class Sizes:
    """Every size a benchmark reads; one preset per ``--size``.

    Attributes:
        vocab: joint vocabulary of the Transformers.
        layers: encoder and decoder layers of the throughput and strategy rows.
        dim, ffn_dim, heads: Transformer sizes of those rows.
        sentences, source_len, target_len: one training batch (every sentence padded to
            these lengths, the last ``pad_tail`` positions of every other target being padding).
        pad_tail: padding at the end of every other target sentence, so token counts are real.
        flops_dim, flops_ffn_dim, flops_heads, flops_layers: the FLOP-fraction row (d 512).
        beam_sentences, beam_source_len, beam_max_len_b: the beam-search batch; every source
            has the same length so each sentence's length limit is the same in every decoder.
        beam_layers, beam_dim, beam_ffn_dim, beam_heads: the beam-search model.
        resnet_depth, resnet_batch, image_size: the ResNet rows.
        matmul_size: side of the square matrices of the peak-FLOP/s measurement.
        fit_train_batches, fit_val_batches: the end-to-end ``fit`` rows' training and validation
            batches (the quickstart's token-count batches of the embedded corpus).
        corpus_batches: the real-batch training rows' batches (the same sampler).
        warmup: untimed repetitions of each workload before timing.
        repeats: timed repetitions of each workload (interleaved with its reference's).
    """

    vocab: int
    layers: int
    dim: int
    ffn_dim: int
    heads: int
    sentences: int
    source_len: int
    target_len: int
    pad_tail: int
    flops_dim: int
    flops_ffn_dim: int
    flops_heads: int
    flops_layers: int
    beam_sentences: int
    beam_source_len: int
    beam_max_len_b: int
    beam_layers: int
    beam_dim: int
    beam_ffn_dim: int
    beam_heads: int
    resnet_depth: int
    resnet_batch: int
    image_size: int
    matmul_size: int
    fit_train_batches: int
    fit_val_batches: int
    corpus_batches: int
    warmup: int
    repeats: int


PRESETS: dict[str, Sizes] = {
    # Seconds in all: checks that every benchmark runs, measures nothing meaningful.
    "tiny": Sizes(
        vocab=64, layers=1, dim=16, ffn_dim=32, heads=2, sentences=4, source_len=6, target_len=6, pad_tail=2,
        flops_dim=16, flops_ffn_dim=32, flops_heads=2, flops_layers=1,
        beam_sentences=2, beam_source_len=4, beam_max_len_b=3, beam_layers=1, beam_dim=16, beam_ffn_dim=32, beam_heads=2,
        resnet_depth=8, resnet_batch=2, image_size=8, matmul_size=64, fit_train_batches=2, fit_val_batches=1, corpus_batches=1,
        warmup=1, repeats=2,
    ),
    # A few minutes on 2 shared CPU cores, one thread: the sizes of the IWSLT recipe scaled down,
    # except the FLOP row, at d 512 as the goal asks.
    "small": Sizes(
        vocab=8000, layers=3, dim=256, ffn_dim=1024, heads=4, sentences=32, source_len=24, target_len=24, pad_tail=6,
        flops_dim=512, flops_ffn_dim=2048, flops_heads=8, flops_layers=2,
        beam_sentences=16, beam_source_len=16, beam_max_len_b=10, beam_layers=3, beam_dim=256, beam_ffn_dim=1024,
        beam_heads=4, resnet_depth=56, resnet_batch=32, image_size=32, matmul_size=2048, fit_train_batches=40, fit_val_batches=10,
        corpus_batches=4, warmup=2, repeats=11,
    ),
    # The GPU table (python -m benchmarks.gpu): Transformer base of Vaswani et al. 2017 (WMT14 En-De), 6+6
    # layers, d 512, FFN 2048, 8 heads, a 32k vocabulary, 128 sentence pairs of 32 tokens; ResNet-56 at 128.
    "wmt_base": Sizes(
        vocab=32768, layers=6, dim=512, ffn_dim=2048, heads=8, sentences=128, source_len=32, target_len=32, pad_tail=8,
        flops_dim=1024, flops_ffn_dim=4096, flops_heads=16, flops_layers=6,
        beam_sentences=128, beam_source_len=24, beam_max_len_b=10, beam_layers=6, beam_dim=512, beam_ffn_dim=2048,
        beam_heads=8, resnet_depth=56, resnet_batch=128, image_size=32, matmul_size=8192, fit_train_batches=200,
        fit_val_batches=20, corpus_batches=16, warmup=5, repeats=20,
    ),
    # The paper's sizes: transformer_iwslt_de_en, ResNet-56 at CIFAR's batch of 128 (for a GPU).
    "paper": Sizes(
        vocab=10000, layers=6, dim=512, ffn_dim=1024, heads=4, sentences=128, source_len=32, target_len=32, pad_tail=8,
        flops_dim=512, flops_ffn_dim=2048, flops_heads=8, flops_layers=6,
        beam_sentences=64, beam_source_len=24, beam_max_len_b=10, beam_layers=6, beam_dim=512, beam_ffn_dim=1024,
        beam_heads=4, resnet_depth=56, resnet_batch=128, image_size=32, matmul_size=4096, fit_train_batches=200, fit_val_batches=20,
        corpus_batches=16, warmup=3, repeats=10,
    ),
}


def get_sizes(name: str) -> Sizes:
    """The preset called ``name``, or a :class:`ConfigError` listing the presets."""
    if name not in PRESETS:
        raise ConfigError(f"benchmarks: unknown --size {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


__all__ = ["PRESETS", "Sizes", "get_sizes"]

"""The rows of the benchmark table: which two workloads each compares, how, and the goal it is held to."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from benchmarks.harness import Skipped, Timing, interleaved
from benchmarks.memory import measure
from benchmarks.settings import Settings
from benchmarks.sizes import Sizes
from benchmarks.workloads import LAYOUTS, build, info_of

log = logging.getLogger(__name__)

RatioKind = Literal["speed", "time"]


@dataclass(frozen=True)
class Goal:
    """``ratio >= value`` or ``ratio <= value``."""

    op: Literal[">=", "<="]
    value: float

    def met(self, ratio: float) -> bool:
        return ratio >= self.value if self.op == ">=" else ratio <= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


@dataclass(frozen=True)
class RowSpec:
    """One row: ``ours`` timed interleaved with ``reference``.

    ``ratio``: ``"speed"`` is ours' throughput over the reference's (above 1: ours is faster;
    for the FLOP row, the fraction of the matmul peak); ``"time"`` is ours' step time over
    the reference's (a cost: above 1, ours is slower).
    """

    group: str
    label: str
    ours: str
    reference: str
    ratio: RatioKind
    goal: Goal | None = None
    note: str = ""
    #: An ``info`` entry that must be equal on both sides for the two to have done the same work
    #: (e.g. the decoder steps of two beam searches); a row where it differs is reported, not met.
    equal_work: str | None = None
    #: At most this many timed rounds and one warm-up (rows whose one run takes seconds).
    max_repeats: int | None = None


#: Strategies whose cost is measured against Post-LN in the Transformer, in table order.
STRATEGY_ROWS = ("skip", "pre_ln", "xskip_ln2", "rskip_ln2", "rskip_ln3", "deepnorm", "rezero", "residual", "sandwich_ln")
#: LN strategies whose overhead is measured against the plain skip in the ResNet.
RESNET_LN_ROWS = ("post_ln", "rskip_ln2")

GROUPS = ("transformer", "strategies", "beam", "resnet", "flops", "fit", "data")


def row_specs(sizes: Sizes, groups: Iterable[str] = GROUPS, settings: Settings | None = None) -> list[RowSpec]:
    """The table's rows, for the chosen groups, in order (labels name the sizes); goals depend on ``settings`` where the issue says so."""
    chosen = set(groups)
    unknown = chosen - set(GROUPS)
    if unknown:
        from skipln.errors import ConfigError

        raise ConfigError(f"benchmarks: unknown group(s) {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    compiled = settings is not None and settings.compile
    on_gpu = settings is not None and settings.device_type == "cuda"
    rows: list[RowSpec] = []
    if "transformer" in chosen:
        rows += [
            RowSpec("transformer", "Post-LN Transformer vs torch.nn.Transformer, training tok/s", "transformer/post_ln",
                    "transformer/torch", "speed", Goal(">=", 1.3 if compiled else 1.2)),
            RowSpec("transformer", "Post-LN vs torch.nn.Transformer, both with F.cross_entropy (the model alone), tok/s", "transformer/post_ln/torch_loss",
                    "transformer/torch", "speed", note="ablation: the same loss on both sides"),
            RowSpec("transformer", "skipln's loss vs F.cross_entropy, both on Post-LN (the loss alone), tok/s", "transformer/post_ln",
                    "transformer/post_ln/torch_loss", "speed", note="ablation: the same model on both sides"),
            RowSpec("transformer", "skipln's Dropout vs nn.Dropout, both in Post-LN with its loss (the dropout alone), tok/s",
                    "transformer/post_ln", "transformer/post_ln/torch_dropout", "speed",
                    note="ablation: the same model and loss on both sides"),
        ]
    if "strategies" in chosen:
        for name in STRATEGY_ROWS:
            goal = Goal("<=", 1.08) if name == "rskip_ln2" else None
            rows.append(
                RowSpec("strategies", f"{name}: Transformer step time / Post-LN", f"transformer/{name}", "transformer/post_ln", "time", goal)
            )
    if "beam" in chosen:
        rows.append(RowSpec("beam", "beam 5, cached vs recomputing every prefix (last position projected), sent/s", "beam/cached",
                            "beam/recompute", "speed", Goal(">=", 5.0), equal_work="decoder_steps"))
        rows.append(RowSpec("beam", "beam 5, skipln vs HF MarianMT generate (early_stopping=True), sent/s", "beam/cached",
                            "beam/marian", "speed", Goal(">=", 1.2), equal_work="decoder_steps"))
    if "resnet" in chosen:
        resnet = f"ResNet-{sizes.resnet_depth}"
        for layout in LAYOUTS:
            rows.append(
                RowSpec("resnet", f"{resnet} (shortcut B) vs torchvision-BasicBlock {resnet}, training img/s ({layout})",
                        f"resnet/skip/{layout}/B", f"resnet/torchvision/{layout}", "speed", Goal(">=", 1.1))
            )
        for layout in LAYOUTS:
            for name in RESNET_LN_ROWS:
                rows.append(
                    RowSpec("resnet", f"{resnet} {name}: step time / plain skip ({layout})", f"resnet/{name}/{layout}",
                            f"resnet/skip/{layout}", "time", Goal("<=", 1.05))
                )
        rows.append(
            RowSpec("resnet", f"{resnet} channels-last vs contiguous, img/s", "resnet/skip/channels_last", "resnet/skip/contiguous", "speed")
        )
        for layout in LAYOUTS:
            for stage in (1, 2, 3):
                rows.append(
                    RowSpec("resnet", f"feature-map LN, stage {stage} ({layout}): GroupNorm(1, C) vs layer_norm over the "
                            "flattened map with a per-channel affine, forward + backward, img/s",
                            f"norm/group_norm/{stage}/{layout}", f"norm/layer_norm_flat/{stage}/{layout}", "speed")
                )
    if "flops" in chosen:
        rows.append(
            RowSpec("flops", f"Post-LN Transformer d {sizes.dim}, {sizes.layers}+{sizes.layers} (the training rows' size) "
                    "training FLOP/s / matmul peak", "flops/headline", "matmul", "speed", Goal(">=", 0.45 if on_gpu else 0.5))
        )
        rows.append(
            RowSpec("flops", f"Post-LN Transformer d {sizes.flops_dim}, {sizes.flops_layers}+{sizes.flops_layers} training "
                    "FLOP/s / matmul peak", "flops/post_ln", "matmul", "speed")
        )
    if "fit" in chosen:
        rows.append(
            RowSpec("fit", f"quickstart fit ({sizes.fit_train_batches} + {sizes.fit_val_batches} val batches): "
                    "Lightning / plain PyTorch loop, time", "fit/lightning", "fit/plain", "time", Goal("<=", 1.05), max_repeats=5)
        )
    if "data" in chosen:
        rows += [
            RowSpec("data", f"real token-count batches ({sizes.corpus_batches}), Post-LN vs torch.nn.Transformer, tok/s",
                    "corpus/post_ln", "corpus/torch", "speed"),
            RowSpec("data", "training data loader, one epoch: skipln vs per-sentence pad_sequence collate, sent/s",
                    "data/loader", "data/plain_loader", "speed"),
            RowSpec("data", "tokenize the training split: skipln vs sentencepiece's own encode, sent/s",
                    "tokenize/skipln", "tokenize/sentencepiece", "speed"),
        ]
    return rows


def run_row(spec: RowSpec, sizes: Sizes, settings: Settings | None = None) -> dict[str, Any]:
    """Time one row (both sides under ``settings``); a row whose workload cannot run here is returned with ``skipped`` set."""
    result: dict[str, Any] = {
        "group": spec.group, "label": spec.label, "ratio_kind": spec.ratio,
        "goal": None if spec.goal is None else str(spec.goal), "note": spec.note,
    }
    try:
        ours = build(spec.ours, sizes, settings)
        reference = build(spec.reference, sizes, settings)
    except Skipped as why:
        log.warning("%s: not measured (%s)", spec.label, why)
        return {**result, "skipped": str(why), "ours": {"workload": spec.ours}, "reference": {"workload": spec.reference}}
    warmup, repeats = sizes.warmup, sizes.repeats
    if spec.max_repeats is not None:
        warmup, repeats = min(warmup, 1), min(repeats, spec.max_repeats)
    ours_t, reference_t = interleaved(ours, reference, warmup=warmup, repeats=repeats)
    ratio = paired_ratio(ours_t, reference_t, spec.ratio)
    log.info("%s: ratio %.3f", spec.label, ratio)
    met = None if spec.goal is None else spec.goal.met(ratio)
    if spec.equal_work is not None:
        work = (ours.info.get(spec.equal_work), reference.info.get(spec.equal_work))
        result["equal_work"] = {"key": spec.equal_work, "ours": work[0], "reference": work[1], "equal": work[0] == work[1]}
        if work[0] != work[1]:
            log.warning("%s: unequal work (%s: ours %s, reference %s)", spec.label, spec.equal_work, *work)
            met = False
    return {
        **result,
        "ours": {**ours_t.as_dict(), "info": info_of(ours)},
        "reference": {**reference_t.as_dict(), "info": info_of(reference)},
        "ratio": ratio,
        "ratio_quartiles": ratio_quartiles(ours_t, reference_t, spec.ratio),
        "ratio_of_medians": _ratio(ours_t.median, ours_t.units, reference_t.median, reference_t.units, spec.ratio),
        "met": met,
    }


def _ratio(ours_s: float, ours_units: float, reference_s: float, reference_units: float, kind: RatioKind) -> float:
    if kind == "time":
        return ours_s / reference_s
    return (ours_units / ours_s) / (reference_units / reference_s)


def paired_ratio(ours: Timing, reference: Timing, kind: RatioKind) -> float:
    """The median over rounds of the ratio within each round.

    The two runs of a round are adjacent in time, so a change of background load between
    rounds cancels out of their ratio; the median then discards the rounds that a burst of
    load hit in only one of the two runs.
    """
    return statistics.median(_round_ratios(ours, reference, kind))


def ratio_quartiles(ours: Timing, reference: Timing, kind: RatioKind) -> list[float]:
    """First and third quartiles of the per-round ratios: how much the machine's noise moved them."""
    ratios = _round_ratios(ours, reference, kind)
    if len(ratios) < 2:
        return [ratios[0], ratios[0]]
    quartiles = statistics.quantiles(ratios, n=4)
    return [quartiles[0], quartiles[2]]


def _round_ratios(ours: Timing, reference: Timing, kind: RatioKind) -> list[float]:
    pairs = zip(ours.seconds, reference.seconds, strict=True)
    return [_ratio(o, ours.units, r, reference.units, kind) for o, r in pairs]


def add_memory(
    rows: list[dict[str, Any]],
    size: str,
    threads: int,
    settings: Settings | None = None,
    measure_one: Callable[..., dict[str, Any]] = measure,
) -> None:
    """Add each side's peak memory (``peak_mib``), measuring every distinct workload once, in its own process."""
    cache: dict[str, dict[str, Any]] = {}
    for row in rows:
        for side in ("ours", "reference"):
            name = row[side]["workload"]
            if name not in cache:
                log.info("peak memory of %s", name)
                cache[name] = measure_one(size, name, threads=threads, settings=settings or Settings())
            row[side]["memory"] = cache[name]


__all__ = ["GROUPS", "Goal", "RowSpec", "add_memory", "paired_ratio", "ratio_quartiles", "row_specs", "run_row"]

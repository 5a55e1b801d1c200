"""The study's tables: the CSV files under ``--out``, and what is derived from them (summary, slopes, markdown).

``gradients.csv`` (every layer), ``readings.csv`` (every pass) and ``skipped.csv`` are written
from the measurements and read back by ``--replot``; ``summary.csv`` and ``slopes.csv`` are
derived from ``readings.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skipln.analysis.gradients.cells import RSKIP_LN, XSKIP, XSKIP_LN
from skipln.analysis.gradients.study import Results
from skipln.errors import ConfigError


LAYER_COLUMNS = [
    "model", "family", "strategy", "lambda", "depth", "phase", "step", "seed", "dtype", "layer", "input_grad_norm",
    "param_grad_norm",
]  # fmt: skip
READING_COLUMNS = [
    "model", "family", "strategy", "lambda", "depth", "phase", "step", "seed", "dtype",
    "loss", "input_first", "input_last", "param_first", "param_last", "param_total",
]  # fmt: skip
SKIPPED_COLUMNS = ["model", "family", "strategy", "lambda", "reason"]


@dataclass(frozen=True)
class Tables:
    """The study's tables (the CSV files under ``--out``)."""

    layers: pd.DataFrame
    readings: pd.DataFrame
    skipped: pd.DataFrame

    FILES = {"layers": "gradients.csv", "readings": "readings.csv", "skipped": "skipped.csv"}

    @classmethod
    def from_results(cls, results: Results) -> Tables:
        return cls(
            pd.DataFrame(results.layers, columns=LAYER_COLUMNS),
            pd.DataFrame(results.readings, columns=READING_COLUMNS),
            pd.DataFrame(results.skipped, columns=SKIPPED_COLUMNS),
        )

    def write(self, out: Path) -> list[Path]:
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for attr, name in self.FILES.items():
            frame = getattr(self, attr)
            if attr == "layers":
                # The stack's output (layer L) has no parameters: an empty cell, not a measured nan.
                frame = frame.assign(
                    param_grad_norm=[
                        "" if layer == depth else f"{value:.4g}"
                        for layer, depth, value in zip(frame.layer, frame.depth, frame.param_grad_norm, strict=True)
                    ]
                )
            paths.append(write_csv(frame, out / name))
        return paths

    def select(self, models: Iterable[str]) -> Tables:
        """Only the rows of ``models``."""
        keep = set(models)
        return Tables(*(frame[frame.model.isin(keep)] for frame in (self.layers, self.readings, self.skipped)))

    @classmethod
    def read(cls, out: Path) -> Tables:
        missing = [name for name in cls.FILES.values() if not (out / name).is_file()]
        if missing:
            raise ConfigError(f"--replot: '{out}' lacks {', '.join(missing)}; run the study into it first (without --replot)")
        frames = {attr: pd.read_csv(out / name, keep_default_na=False, na_values=["nan", ""]) for attr, name in cls.FILES.items()}
        return cls(**frames)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a table: four significant digits (plenty for norms spread over 100 orders of magnitude),
    ``inf``/``nan`` where the arithmetic gave them, an empty λ where the strategy has none."""
    frame = frame.copy()
    if "lambda" in frame:
        frame["lambda"] = [("" if pd.isna(v) else f"{v:g}") for v in frame["lambda"]]
    frame.to_csv(path, index=False, float_format="%.4g", na_rep="nan")
    return path


def geometric_mean(values: Iterable[float]) -> float:
    """The geometric mean, which is what averages norms spread over orders of magnitude.

    ``nan`` if any value is ``nan``, ``inf`` if any is ``inf``, 0 if any is 0.
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0 or np.isnan(v).any():
        return math.nan
    if np.isinf(v).any():
        return math.inf
    if (v == 0).any():
        return 0.0
    return float(np.exp(np.log(v).mean()))


def group_keys(frame: pd.DataFrame, keys: list[str]) -> Iterator[tuple[tuple[Any, ...], pd.DataFrame]]:
    """``frame`` grouped by ``keys`` in order of appearance, rows with a missing key included."""
    # groupby drops NaN keys (the λ of the baselines) unless told not to.
    yield from frame.groupby(keys, sort=False, dropna=False)


def summarise(readings: pd.DataFrame) -> pd.DataFrame:
    """Per (model, strategy, depth): the gradients at initialisation over seeds, and what training did."""
    keys = ["model", "family", "strategy", "lambda", "depth"]
    rows = []
    for key, group in group_keys(readings, keys):
        init = group[group.phase == "init"]
        train = group[group.phase == "train"].sort_values("step")
        finite = train[np.isfinite(train[["loss", "input_first", "input_last", "param_total"]]).all(axis=1)]
        broken = train[~train.index.isin(finite.index)]
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "seeds": len(init),
                "input_first": geometric_mean(init.input_first),
                "input_first_min": init.input_first.min(),
                "input_first_max": init.input_first.max(),
                "input_last": geometric_mean(init.input_last),
                "through_stack": geometric_mean(init.input_first / init.input_last),
                "param_first_to_last": geometric_mean(init.param_first / init.param_last),
                "loss_init": geometric_mean(init.loss),
                "train_dtype": train["dtype"].iloc[0] if len(train) else "",
                "train_input_first_step0": train.input_first.iloc[0] if len(train) else math.nan,
                "train_input_first_last": finite.input_first.iloc[-1] if len(finite) else math.nan,
                "train_loss_step0": train.loss.iloc[0] if len(train) else math.nan,
                "train_loss_last": finite.loss.iloc[-1] if len(finite) else math.nan,
                "train_steps_finite": len(finite),
                "diverged_at": broken.step.iloc[0] if len(broken) else math.nan,
            }
        )
    return pd.DataFrame(rows)


def _slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``ln y`` against ``x``; nan unless every ``y`` is finite and positive."""
    yv = np.asarray(y, dtype=np.float64)
    if len(yv) < 2 or not np.all(np.isfinite(yv)) or not np.all(yv > 0):
        return math.nan
    return float(np.polyfit(np.asarray(x, dtype=np.float64), np.log(yv), 1)[0])


def predicted_slope(family: str, lam: float | None) -> float:
    """The paper's prediction for ``d ln‖∂loss/∂x_0‖ / d(blocks)``: ``ln λ`` for xSkip, 0 under LN (xSkip+LN, rSkip+LN)."""
    if family == XSKIP and lam is not None:
        return math.log(lam)
    if family in (XSKIP_LN, RSKIP_LN):
        return 0.0
    return math.nan


def slopes(summary: pd.DataFrame, blocks_per_layer: Mapping[str, int]) -> pd.DataFrame:
    """Per (model, strategy): how ``‖∂loss/∂x_0‖`` at initialisation scales with depth.

    ``slope_per_block`` fits ``ln ‖∂loss/∂x_0‖`` against the number of residual blocks
    (``depth × blocks_per_layer``) beside ``predicted_per_block``; ``through_stack_per_block``
    fits the ratio ``‖∂loss/∂x_0‖ / ‖∂loss/∂x_L‖`` (the stack's own gain, without what the head
    does with the output's scale); ``growth_L<d>`` is ``‖∂loss/∂x_0‖`` at depth ``d`` over its value
    at the smallest depth.
    """
    rows = []
    for key, group in group_keys(summary, ["model", "family", "strategy", "lambda"]):
        group = group.sort_values("depth")
        model, family, strategy, lam = key
        blocks = group.depth * blocks_per_layer[model]
        row: dict[str, Any] = {
            "model": model,
            "family": family,
            "strategy": strategy,
            "lambda": lam,
            "blocks_per_layer": blocks_per_layer[model],
            "slope_per_block": _slope(blocks, group.input_first),
            "predicted_per_block": predicted_slope(family, None if pd.isna(lam) else float(lam)),
            "through_stack_per_block": _slope(blocks, group.through_stack),
        }
        first = group.input_first.iloc[0]
        for depth, value in zip(group.depth.iloc[1:], group.input_first.iloc[1:], strict=True):
            row[f"growth_L{depth}"] = value / first if first > 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def format_norm(value: float) -> str:
    """A norm in two significant digits for the markdown tables and figure labels; ``inf``/``nan`` spelled out."""
    if pd.isna(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.2g}"


def summary_markdown(summary: pd.DataFrame, slope_table: pd.DataFrame) -> str:
    """Markdown tables of the study's headline numbers, one per model."""
    lines = []
    for model, group in summary.groupby("model", sort=False):
        depths = sorted(group.depth.unique())
        first = depths[0]
        growth = [d for d in depths[1:] if d in (48, 96)] or depths[1:]
        lines += [
            f"### {model}",
            "",
            f"‖∂loss/∂x_0‖ at initialisation (geometric mean over seeds); growth from L = {first}; slope of "
            "ln‖∂loss/∂x_0‖ per residual block against the prediction; the same slope for the stack's own gain "
            "‖∂loss/∂x_0‖/‖∂loss/∂x_L‖.",
            "",
            "| strategy | λ | " + " | ".join(f"L={d}" for d in depths) + " | "
            + " | ".join(f"×{first}→{d}" for d in growth) + " | slope/block | predicted | stack gain/block |",
            "|---" * (2 + len(depths) + len(growth) + 3) + "|",
        ]
        fits = slope_table[slope_table.model == model].set_index("strategy")
        for strategy, rows in group.groupby("strategy", sort=False):
            by_depth = rows.set_index("depth")
            fit = fits.loc[strategy]
            lam = rows["lambda"].iloc[0]
            cells = [strategy, "" if pd.isna(lam) else f"{lam:g}"]
            cells += [format_norm(by_depth.input_first.get(d, math.nan)) for d in depths]
            cells += [format_norm(fit.get(f"growth_L{d}", math.nan)) for d in growth]
            cells += [format_norm(v) for v in (fit.slope_per_block, fit.predicted_per_block, fit.through_stack_per_block)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)

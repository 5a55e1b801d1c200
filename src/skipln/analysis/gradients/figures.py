"""The study's figures: log gradient norm against layer, against depth, and over training steps.

Three panels a row: xSkip and xSkip+LN (a line per λ, the paper's ``λ^(L−l)`` dashed beside
xSkip), then rSkip+LN and the other strategies. matplotlib is imported only when plotting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from skipln.analysis.gradients.cells import XSKIP, XSKIP_LN
from skipln.analysis.gradients.tables import format_norm, geometric_mean, group_keys

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


PANELS = ("xSkip: λ·x + F(x)", "xSkip+LN: LN(λ·x + F(x))", "rSkip+LN and other strategies")


def _panel(family: str) -> int:
    return {XSKIP: 0, XSKIP_LN: 1}.get(family, 2)


def _style(family: str, lam: float, strategy: str, others: list[str]) -> dict[str, Any]:
    """One colour per λ in the two λ panels (blue below 1, red above), one per strategy in the third."""
    import matplotlib

    if family in (XSKIP, XSKIP_LN):
        if lam == 1.0:
            return {"color": "black", "label": "λ = 1"}
        position = 0.5 + math.log(lam) / (2 * math.log(2.5))  # λ = 0.4 … 2.5 spans the colour map
        return {"color": matplotlib.colormaps["coolwarm"](min(max(position, 0.0), 1.0)), "label": f"λ = {lam:g}"}
    return {"color": matplotlib.colormaps["tab20"](others.index(strategy) % 20), "label": strategy}


def _finite_label(label: str, values: Sequence[float], what: str) -> str:
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    return label if not bad else f"{label} ({what} {bad[0]}: {format_norm(values[bad[0]])})"


def _figure(rows: int, cols: int, width: float = 15.0, height: float = 3.6) -> tuple[Figure, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One y scale per row: a panel with LN beside one without shows how much flatter it is.
    fig, axes = plt.subplots(rows, cols, figsize=(width, height * rows), squeeze=False, dpi=80, sharey="row")
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _legend(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2 if len(ax.get_legend_handles_labels()[0]) > 5 else 1, loc="best")


def _others(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame[frame.family.map(_panel) == 2].strategy))


def plot_layers(layers: pd.DataFrame, model: str, depths: Sequence[int], blocks_per_layer: int, path: Path) -> Path:
    """Log ‖∂loss/∂x_l‖ against layer l at initialisation: a line per λ, xSkip beside xSkip+LN; a row per depth."""
    frame = layers[(layers.model == model) & (layers.phase == "init")]
    others = _others(frame)
    fig, axes = _figure(len(depths), 3)
    for row, depth in enumerate(depths):
        at_depth = frame[frame.depth == depth]
        for (family, strategy, lam), group in group_keys(at_depth, ["family", "strategy", "lambda"]):
            ax = axes[row][_panel(family)]
            stats = group.groupby("layer").input_grad_norm.agg([geometric_mean, "min", "max"])
            style = _style(family, lam, strategy, others)
            ax.plot(stats.index, stats.geometric_mean, color=style["color"], lw=1.4,
                    label=_finite_label(style["label"], list(stats.geometric_mean), "non-finite at layer"))
            ax.fill_between(stats.index, stats["min"], stats["max"], color=style["color"], alpha=0.15, lw=0)
            if family == XSKIP and math.isfinite(stats.geometric_mean.iloc[-1]):
                # The paper's λ^(L−l), anchored at the stack's output.
                predicted = stats.geometric_mean.iloc[-1] * np.power(lam, blocks_per_layer * (depth - stats.index.to_numpy()))
                ax.plot(stats.index, predicted, color=style["color"], lw=0.8, ls="--")
        for col, ax in enumerate(axes[row]):
            ax.set_yscale("log")
            ax.set_title(f"{model}, L = {depth}: {PANELS[col]}", fontsize=9)
            ax.set_xlabel("layer l (L: the stack's output)", fontsize=8)
            ax.set_ylabel("‖∂loss/∂x_l‖ at init", fontsize=8)
            ax.grid(alpha=0.3, which="major")
            _legend(ax)
    axes[0][0].text(0.01, 0.01, "dashed: λ^(b·(L−l)) from the output", transform=axes[0][0].transAxes, fontsize=7)
    return _save(fig, path)


def plot_depth(summary: pd.DataFrame, blocks_per_layer: Mapping[str, int], path: Path) -> Path:
    """Log ‖∂loss/∂x_0‖ at initialisation against depth L: a row per model, a line per strategy."""
    models = list(dict.fromkeys(summary.model))
    fig, axes = _figure(len(models), 3)
    for row, model in enumerate(models):
        frame = summary[summary.model == model]
        others = _others(frame)
        for (family, strategy, lam), group in group_keys(frame, ["family", "strategy", "lambda"]):
            ax = axes[row][_panel(family)]
            group = group.sort_values("depth")
            style = _style(family, lam, strategy, others)
            ax.plot(group.depth, group.input_first, marker="o", ms=3, color=style["color"], lw=1.4,
                    label=_finite_label(style["label"], list(group.input_first), "non-finite at L index"))
            ax.fill_between(group.depth, group.input_first_min, group.input_first_max, color=style["color"], alpha=0.15, lw=0)
            if family == XSKIP and math.isfinite(group.input_first.iloc[0]):
                first = group.depth.iloc[0]
                predicted = group.input_first.iloc[0] * np.power(lam, blocks_per_layer[model] * (group.depth - first))
                ax.plot(group.depth, predicted, color=style["color"], lw=0.8, ls="--")
        for col, ax in enumerate(axes[row]):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(sorted(frame.depth.unique()), [str(d) for d in sorted(frame.depth.unique())])
            ax.set_title(f"{model}: {PANELS[col]}", fontsize=9)
            ax.set_xlabel("depth L (layers)", fontsize=8)
            ax.set_ylabel("‖∂loss/∂x_0‖ at init", fontsize=8)
            ax.grid(alpha=0.3, which="major")
            _legend(ax)
    axes[0][0].text(0.01, 0.01, "dashed: λ^(b·ΔL) from the smallest L", transform=axes[0][0].transAxes, fontsize=7)
    return _save(fig, path)


def plot_training(readings: pd.DataFrame, depth: int, path: Path) -> Path:
    """Log ‖∂loss/∂x_0‖ over the training steps at one depth: a row per model, a line per strategy."""
    frame = readings[(readings.phase == "train") & (readings.depth == depth)]
    models = list(dict.fromkeys(frame.model))
    fig, axes = _figure(max(len(models), 1), 3)
    for row, model in enumerate(models):
        at_model = frame[frame.model == model]
        others = _others(at_model)
        for (family, strategy, lam), group in group_keys(at_model, ["family", "strategy", "lambda"]):
            ax = axes[row][_panel(family)]
            group = group.sort_values("step")
            style = _style(family, lam, strategy, others)
            label = style["label"]
            finite = np.isfinite(group[["loss", "input_first", "param_total"]]).all(axis=1)
            if not finite.all():
                label += f" (non-finite at step {group.step[~finite].iloc[0]})"
            ax.plot(group.step[finite], group.input_first[finite], color=style["color"], lw=1.2, label=label)
            if not finite.all() and finite.any():  # × marks the last finite reading of a diverged run
                ax.plot(group.step[finite].iloc[-1], group.input_first[finite].iloc[-1], "x", color=style["color"], ms=7)
        for col, ax in enumerate(axes[row]):
            ax.set_yscale("log")
            ax.set_title(f"{model}, L = {depth}, training ({frame['dtype'].iloc[0] if len(frame) else ''}): {PANELS[col]}", fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.set_ylabel("‖∂loss/∂x_0‖", fontsize=8)
            ax.grid(alpha=0.3, which="major")
            _legend(ax)
    return _save(fig, path)

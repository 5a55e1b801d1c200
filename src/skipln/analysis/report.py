"""Paper-style tables and learning curves of sweeps, read from the MLflow store.

    python -m skipln.analysis.report quickstart_resnet
    python -m skipln.analysis.report cifar10_paper cifar100_paper --out reports/cifar

writes, under ``reports/<sweep>/`` (``--out``):

- ``table.md``: rows strategy and network, columns data set; each cell the mean ± sample
  standard deviation over seeds of the final metric (``test/acc`` for classification,
  ``test/bleu`` for translation) and of the best value during training (max ``val/acc``, min
  ``val/loss``), with the number of runs averaged;
- ``table.csv``: the same numbers, one row per (network, strategy, data set), unformatted;
- ``runs.csv``: one row per run, with its outcome;
- ``curves-<metric>.png``: one panel per data set and network, one line per strategy, the
  mean over seeds with a ± std band;
- with ``--baseline <strategy>``, ``comparisons.csv`` and a section of ``table.md``: each
  strategy's final metric against the baseline's (difference of means, 95% interval, Welch's
  p; :mod:`skipln.analysis.comparison`).

A run counts only if it finished, was tested and did not diverge (no NaN or infinite loss):
failed, interrupted, untested and diverged runs are counted in each cell and listed under the
table, never silently averaged in. Strategy, network, data set and task come from the run's
tags (see :func:`describe`).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd

from skipln.analysis.comparison import against_baseline, comparison_markdown
from skipln.errors import SkipLNError
from skipln.run_vocabulary import (
    AXIS_TAG_PREFIX,
    CELL_INDEX_TAG,
    CELL_TAG,
    DIVERGED,
    FITTED,
    RESULT,
    SEED_TAG,
    STAGE_TAG,
    STATE_TAG,
    SWEEP_TAG,
    TESTED,
    TRIAL,
    VALUE_TAG_PREFIX,
)
from skipln.sweep.grid import SWEEP_NAME
from skipln.sweep.records import diverged, sweep_runs
from skipln.sweep.store import defaults_file, read_store, search_all, store_exists

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow import MlflowClient
    from mlflow.entities import Run


class ReportError(SkipLNError):
    """The runs asked for cannot be reported as asked (none found, no default metric for their task)."""


@dataclass(frozen=True)
class Objective:
    """A metric whose best value over training is its ``mode`` (``max`` or ``min``)."""

    key: str
    mode: Literal["max", "min"]

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``val/acc:max`` or ``val/loss:min``."""
        key, _, mode = text.rpartition(":")
        if not key or mode not in ("max", "min"):
            raise ReportError(f"--best must read <metric>:max or <metric>:min (e.g. val/acc:max), got {text!r}")
        return cls(key, mode)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.mode} {self.key}"


@dataclass(frozen=True)
class Profile:
    """What to report for runs of one task: the final metric, the best-during-training one, the curves."""

    metric: str
    best: Objective | None = None
    curves: tuple[str, ...] = ()


#: Defaults by the run's ``task`` tag (the LightningModule's class name).
PROFILES: dict[str, Profile] = {
    "ClassificationTask": Profile("test/acc", Objective("val/acc", "max"), ("val/acc", "train/loss_epoch")),
    "TranslationTask": Profile("test/bleu", Objective("val/loss", "min"), ("val/loss", "train/loss_epoch")),
}

Outcome = Literal["ok", "failed", "running", "untested", "diverged"]
PROBLEMS: tuple[Outcome, ...] = ("failed", "diverged", "running", "untested")
#: MLflow stores an infinite value as the largest float.
_INF = sys.float_info.max


# --- reading runs --------------------------------------------------------------------------


def load_runs(client: MlflowClient, experiment: str, sweeps: Sequence[str]) -> list[Run]:
    """Every active run of the named sweeps, oldest first."""
    bad = [sweep for sweep in sweeps if not SWEEP_NAME.match(sweep)]
    if bad:
        raise ReportError(f"sweep names are letters, digits, '_', '.' and '-' (as in a grid file's 'name'); got {bad[0]!r}")
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ReportError(f"the MLflow store has no experiment {experiment!r}: pass --experiment, or run the sweep first")
    runs = [run for sweep in sweeps for run in sweep_runs(client, found.experiment_id, sweep)]
    # A sweep still searching has trials but no results yet: its report is the search so far.
    missing = [sweep for sweep in sweeps if not any(run.data.tags.get(SWEEP_TAG) == sweep for run in runs)
               and not sweep_runs(client, found.experiment_id, sweep, TRIAL)]  # fmt: skip
    if missing:
        raise ReportError(
            f"no runs of sweep(s) {', '.join(missing)} in experiment {experiment!r}; start one with "
            f"`python -m skipln.sweep run sweeps/{missing[0]}.yaml`"
        )
    return sorted(runs, key=lambda run: run.info.start_time or 0)


#: What the report calls runs that no sweep made (given by id or by a filter).
AD_HOC = "runs"


def load_runs_by_id(client: MlflowClient, run_ids: Sequence[str]) -> list[Run]:
    """The runs with these ids, in any experiment, oldest first."""
    from mlflow.exceptions import MlflowException

    runs = []
    for run_id in run_ids:
        try:
            runs.append(client.get_run(run_id))
        except MlflowException as error:
            raise ReportError(f"no run {run_id!r} in the MLflow store: give run ids as the MLflow UI or a fit's summary shows them") from error
    return sorted(runs, key=lambda run: run.info.start_time or 0)


def load_runs_by_filter(client: MlflowClient, experiment: str, filter_string: str) -> list[Run]:
    """The active runs of ``experiment`` that match an MLflow search filter (``tags.data = 'cifar10'``), oldest first."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ReportError(f"the MLflow store has no experiment {experiment!r}: pass --experiment")
    try:
        runs = search_all(client, found.experiment_id, filter_string)
    except MlflowException as error:
        raise ReportError(f"--filter {filter_string!r} is not an MLflow search filter ({error.message}); e.g. --filter \"tags.data = 'cifar10'\"") from error
    # A sweep's searches and trials are not results; its result runs are.
    runs = [run for run in runs if run.data.tags.get(STAGE_TAG, RESULT) == RESULT]
    if not runs:
        raise ReportError(f"no runs in experiment {experiment!r} match --filter {filter_string!r}")
    return sorted(runs, key=lambda run: run.info.start_time or 0)


def describe(run: Run) -> dict[str, str]:
    """The run's task, network, data set and strategy.

    From the tags the CLI sets (``task``, ``net``, ``data``, ``skip``); else from the labels of a
    sweep's axes named ``net``, ``data`` or ``skip``; else from the run's config params (class
    names, e.g. ``RecursiveSkipLN(recursions=2)``).
    """
    tags, params = run.data.tags, run.data.params

    def short(key: str) -> str | None:
        value = params.get(key)
        return value.rsplit(".", 1)[-1] if value else None

    skip = short("model.net.skip.class_path")
    if skip is not None:
        prefix = "model.net.skip."
        args = sorted((k[len(prefix) :], v) for k, v in params.items() if k.startswith(prefix) and k != prefix + "class_path")
        skip += f"({', '.join(f'{k}={v}' for k, v in args)})" if args else ""
    return {
        "task": tags.get("task") or short("model.class_path") or "?",
        "net": tags.get("net") or tags.get(f"{AXIS_TAG_PREFIX}net") or short("model.net.class_path") or "?",
        "data": tags.get("data") or tags.get(f"{AXIS_TAG_PREFIX}data") or short("data.class_path") or "?",
        "skip": tags.get("skip") or tags.get(f"{AXIS_TAG_PREFIX}skip") or skip or "?",
    }


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value) and abs(value) < _INF


def outcome(run: Run, metric: str) -> Outcome:
    """``ok`` if the run finished, has a finite ``metric`` and no NaN/infinite loss; else what went wrong.

    ``diverged``: stopped at a non-finite loss (the DivergenceGuard's ``failure_reason`` tag) or
    finished with one; ``failed``: crashed or killed; ``running``: not ended (or interrupted
    without being ended); ``untested``: finished without the final metric.
    """
    status = run.info.status
    if status in ("FAILED", "KILLED"):
        # Stopped by the DivergenceGuard at a NaN/infinite loss, or crashed.
        return "diverged" if diverged(run) else "failed"
    if status != "FINISHED":
        return "running"
    latest = run.data.metrics
    if any(not _finite(value) for key, value in latest.items() if "loss" in key or key == metric):
        return "diverged"
    return "ok" if metric in latest else "untested"


def history(client: MlflowClient, run_id: str, key: str) -> pd.Series:
    """A metric's values by step; where a step was logged twice (a restarted run) the later value wins."""
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return pd.Series({m.step: m.value for m in points}, dtype=float, name=key)


def _best(values: pd.Series, objective: Objective) -> float | None:
    """The best finite value of ``objective``'s history ``values`` (None if there is none)."""
    values = values[values.map(_finite)]
    return (values.max() if objective.mode == "max" else values.min()) if len(values) else None


def run_frame(
    client: MlflowClient, runs: Sequence[Run], metric: str | None = None, best: Objective | None = None
) -> pd.DataFrame:
    """One row per run: its sweep, cell, seed, description, outcome, final metric and best value.

    ``metric`` and ``best`` default, per run, to its task's (:data:`PROFILES`). A run that failed
    before the CLI recorded its config (no tags, no params) is described like the other runs of
    its cell, so it is counted where it belongs.
    """
    infos = [describe(run) for run in runs]
    by_cell: dict[tuple[str | None, str | None], dict[str, str]] = {}
    for run, info in zip(runs, infos):
        if info["task"] != "?":
            by_cell.setdefault((run.data.tags.get(SWEEP_TAG), run.data.tags.get(CELL_TAG)), info)
    rows = []
    unknown: set[str] = set()
    for run, info in zip(runs, infos):
        if info["task"] == "?":
            info = by_cell.get((run.data.tags.get(SWEEP_TAG), run.data.tags.get(CELL_TAG)), info)
        sweep, cell, seed = run.data.tags.get(SWEEP_TAG), run.data.tags.get(CELL_TAG), run.data.tags.get(SEED_TAG)
        if sweep is None:
            # A run no sweep made: runs of the same network, data and strategy are its seeds.
            sweep, cell, seed = AD_HOC, "-".join((info["net"], info["data"], info["skip"])), run.data.params.get("seed_everything")
        profile = PROFILES.get(info["task"])
        run_metric = metric or (profile.metric if profile else None)
        run_best = best or (profile.best if profile else None)
        if run_metric is None:
            unknown.add(info["task"])
            continue
        best_value = _best(history(client, run.info.run_id, run_best.key), run_best) if run_best is not None else None
        rows.append(
            {
                "sweep": sweep,
                "cell": cell,
                "cell_index": _int(run.data.tags.get(CELL_INDEX_TAG)),
                "seed": seed,
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "experiment_id": run.info.experiment_id,
                "status": run.info.status,
                "outcome": outcome(run, run_metric),
                **info,
                "metric": run_metric,
                "value": run.data.metrics.get(run_metric),
                "best_metric": str(run_best) if run_best else None,
                "best": best_value,
                "tuned": tuned_values(run),
            }
        )
    if unknown:
        raise ReportError(
            f"no default metric for runs of task(s) {', '.join(sorted(unknown))} (defaults exist for "
            f"{', '.join(PROFILES)}): pass --metric, e.g. --metric test/acc, and --best, e.g. --best val/loss:min"
        )
    frame = pd.DataFrame(rows)
    if len(frame):
        # The grid's order of cells (runs oldest first where it is not recorded); stable, so sweeps keep their order.
        frame = frame.sort_values("cell_index", kind="stable", na_position="last").reset_index(drop=True)
    return label_strategies(frame)


def tuned_values(run: Run) -> str:
    """The values a sweep's search picked for this run's cell, e.g. ``lr=0.00316`` ('' if none was searched)."""
    tags = run.data.tags
    axes = [key.removeprefix(VALUE_TAG_PREFIX) for key in tags if key.startswith(VALUE_TAG_PREFIX)]
    return ", ".join(f"{axis}={tags.get(AXIS_TAG_PREFIX + axis, '?')}" for axis in sorted(axes))


def _int(text: str | None) -> float:
    return int(text) if text and text.isdigit() else math.nan


# --- the table -----------------------------------------------------------------------------

#: The runs that differ only by seed: one mean ± std each.
GROUP = ["sweep", "cell", "metric"]
DESCRIPTION = ["net", "strategy", "data", "task"]


def label_strategies(runs: pd.DataFrame) -> pd.DataFrame:
    """Add the column ``strategy``: the run's ``skip``, or ``skip [cell]`` where the skip connection
    alone does not tell the table's rows apart (a grid with another axis, e.g. learning rates), or
    ``skip [sweep: cell]`` where neither does (two sweeps with the same cells, reported together)."""
    runs = runs.copy()
    cell = runs["cell"].fillna("?")
    candidates = [runs["skip"], runs["skip"] + " [" + cell + "]", runs["skip"] + " [" + runs["sweep"].fillna("?") + ": " + cell + "]"]
    for labels in candidates:
        runs["strategy"] = labels
        cells = runs.drop_duplicates(["sweep", "cell", "metric"])
        if not cells.duplicated(["net", "strategy", "data", "metric"], keep=False).any():
            break
    return runs


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and count over the ``ok`` runs of each sweep cell; the other runs counted by outcome.

    Rows follow the grid's order of cells (:func:`run_frame` sorts the runs so).
    """
    summaries = []
    for key, group in runs.groupby(GROUP, sort=False, dropna=False):
        ok = group[group["outcome"] == "ok"]
        row = dict(zip(GROUP, key))
        row.update({column: group[column].iloc[0] for column in DESCRIPTION})
        row.update(_stats(ok["value"], "value"))
        row["best_metric"] = group["best_metric"].iloc[0]
        row.update(_stats(ok["best"], "best"))
        row["runs"] = len(group)
        row.update({problem: int((group["outcome"] == problem).sum()) for problem in PROBLEMS})
        summaries.append(row)
    return pd.DataFrame(summaries)


def _stats(values: pd.Series, name: str) -> dict[str, float | int]:
    values = values.dropna().astype(float)
    return {
        f"{name}_mean": values.mean() if len(values) else math.nan,
        f"{name}_std": values.std(ddof=1) if len(values) > 1 else math.nan,
        f"{name}_n": len(values),
    }


def format_mean_std(mean: float, std: float, n: int) -> str:
    """``0.9123 ± 0.0021 (n=3)``: about four significant digits, the std to the same decimals."""
    if n == 0 or math.isnan(mean):
        return "—"
    decimals = max(0, 3 - math.floor(math.log10(abs(mean)))) if mean else 4
    text = f"{mean:.{decimals}f}"
    if not math.isnan(std):
        text += f" ± {std:.{decimals}f}"
    return f"{text} (n={n})"


def paper_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows (network, strategy), columns ``<data> <metric>`` and ``<data> <best>``: formatted cells.

    A cell with runs that did not count says so, e.g. ``0.91 ± 0.01 (n=2); 1 diverged``.
    """
    cells: dict[tuple[str, str], dict[str, str]] = {}
    columns: list[str] = []
    for _, row in summary.iterrows():
        cell = cells.setdefault((row["net"], row["strategy"]), {})
        value = format_mean_std(row["value_mean"], row["value_std"], row["value_n"])
        problems = ", ".join(f"{row[p]} {p}" for p in PROBLEMS if row[p])
        metric_column = f"{row['data']} {row['metric']}"
        cell[metric_column] = f"{value}; {problems}" if problems else value
        new = [metric_column]
        if isinstance(row["best_metric"], str):
            best_column = f"{row['data']} {row['best_metric']}"
            cell[best_column] = format_mean_std(row["best_mean"], row["best_std"], row["best_n"])
            new.append(best_column)
        columns += [c for c in new if c not in columns]
    index = pd.MultiIndex.from_tuples(list(cells), names=["net", "strategy"])
    return pd.DataFrame([[cells[key].get(c, "") for c in columns] for key in cells], index=index, columns=columns)


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (index levels first)."""
    frame = table.reset_index()
    header = [str(c) for c in frame.columns]
    rows = [[str(v).replace("|", "\\|") for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def problem_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs left out of the means, and why."""
    columns = ["net", "strategy", "data", "seed", "outcome", "status", "run_id", "run_name"]
    return runs.loc[runs["outcome"] != "ok", columns].reset_index(drop=True)


# --- the search ----------------------------------------------------------------------------


def search_trials(
    client: MlflowClient, experiments: Sequence[str], sweeps: Sequence[str], objective: Objective | None,
    labels: Mapping[tuple[str, str], str] | None = None,
) -> pd.DataFrame:
    """One row per trial of the sweeps' searches: its cell, the values it tried, how far it got, its best ``objective``,
    and the objective at every step it was reported (columns ``<key>@<step>``: ASHA's rungs).

    What the picked values were picked from: a researcher checks that the best one is not at the
    edge of what was tried, how much the choice mattered, and where ASHA stopped a trial and why.
    """
    labels = labels or {}
    rows = []
    for experiment_id in experiments:
        for sweep in sweeps:
            for run in sweep_runs(client, experiment_id, sweep, TRIAL):
                tags = run.data.tags
                reported = history(client, run.info.run_id, objective.key) if objective is not None else pd.Series(dtype=float)
                best = _best(reported, objective) if objective is not None else None
                rows.append({
                    "sweep": sweep, "cell": tags.get(CELL_TAG), "cell_index": _int(tags.get(CELL_INDEX_TAG)),
                    "strategy": labels.get((sweep, tags.get(CELL_TAG))) or tags.get("skip") or tags.get(CELL_TAG),
                    "values": tuned_values(run),
                    # A trial whose process failed (not diverged) is left in its last state: say it failed.
                    "state": "failed" if run.info.status == "FAILED" and tags.get(STATE_TAG) != DIVERGED else tags.get(STATE_TAG, run.info.status.lower()),
                    "best_metric": str(objective) if objective else None, "best": best, "run_id": run.info.run_id,
                    **({f"{objective.key}@{step}": value for step, value in reported.items()} if objective else {}),
                })  # fmt: skip
    frame = pd.DataFrame(rows)
    if not len(frame):
        return frame
    by_step = sorted((c for c in frame.columns if "@" in c), key=lambda c: int(c.rpartition("@")[2]))
    frame = frame[[c for c in frame.columns if "@" not in c] + by_step]
    return frame.sort_values(["cell_index", "values"], kind="stable").reset_index(drop=True)


def trials_markdown(trials: pd.DataFrame) -> str:
    """Strategies down, values tried across; each entry the best objective, marked where ASHA stopped the trial."""
    def entry(row: pd.Series) -> str:
        value = "—" if row["best"] is None or pd.isna(row["best"]) else f"{row['best']:.4f}"
        return value + ("" if row["state"] in (FITTED, TESTED) else f" ({row['state']})")

    cells = trials.assign(entry=trials.apply(entry, axis=1), order=trials["cell_index"].fillna(math.inf))
    cells = cells.drop_duplicates(["order", "strategy", "values"], keep="last")  # a trial tried again: its last run
    table = cells.pivot(index=["order", "strategy"], columns="values", values="entry").sort_index(level=0).droplevel(0)
    table.columns.name = None
    return markdown(table.fillna(""))


def trials_legend(trials: pd.DataFrame) -> str:
    """What an entry of :func:`trials_markdown` is."""
    return (f"Each entry: the trial's {trials['best_metric'].iloc[0]} (one seed); "
            "'pruned': ASHA stopped it early, so its value is from fewer steps.")  # fmt: skip


# --- learning curves -----------------------------------------------------------------------


def curves(client: MlflowClient, runs: pd.DataFrame, key: str) -> pd.DataFrame:
    """The history of ``key`` of every ``ok`` run, long form: run_id, step, value."""
    frames = []
    for run_id in runs.loc[runs["outcome"] == "ok", "run_id"]:
        series = history(client, run_id, key)
        if len(series):
            frames.append(pd.DataFrame({"run_id": run_id, "step": series.index, "value": series.to_numpy()}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "step", "value"])


def plot_curves(runs: pd.DataFrame, points: pd.DataFrame, key: str) -> Figure:
    """One panel per (data set, network); per strategy the mean over seeds and a ± std band.

    A panel whose values span more than two orders of magnitude has a logarithmic y axis.
    """
    from matplotlib.figure import Figure

    data = points.merge(runs[["run_id", "net", "strategy", "data"]], on="run_id")
    panels = list(dict.fromkeys(zip(data["data"], data["net"])))
    strategies = list(dict.fromkeys(runs["strategy"]))  # every strategy keeps its colour in every panel
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(5.2 * columns, 3.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(strategies))]
    for ax, (data_name, net) in zip(axes, panels):
        panel = data[(data["data"] == data_name) & (data["net"] == net)]
        for color, skip in zip(colors, strategies):
            lines = panel[panel["strategy"] == skip].pivot_table(index="step", columns="run_id", values="value")
            if lines.empty:
                continue
            mean, std = lines.mean(axis=1), lines.std(axis=1, ddof=1).fillna(0.0)
            marker = "o" if len(mean) <= 30 else None  # a few validations: show where the points are
            ax.plot(mean.index, mean.to_numpy(), color=color, marker=marker, markersize=3, linewidth=1.4, label=f"{skip} (n={lines.shape[1]})")
            ax.fill_between(mean.index, (mean - std).to_numpy(), (mean + std).to_numpy(), color=color, alpha=0.2, linewidth=0)
        values = panel["value"]
        if len(values) and (values > 0).all() and values.max() > 100 * values.min():
            # One strategy far above the others (a run that blew up but stayed finite) would flatten them.
            ax.set_yscale("log")
        ax.set_title(f"{data_name} · {net}", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return figure


# --- the report ----------------------------------------------------------------------------


@dataclass
class Report:
    """A sweep's runs, their summary and the paper-style table, ready to write or show."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    table: pd.DataFrame
    curve_keys: tuple[str, ...] = ()
    figures: dict[str, Figure] = field(default_factory=dict)
    #: Per curve: every run's points, with its strategy and seed (what the figure averages).
    points: dict[str, pd.DataFrame] = field(default_factory=dict)
    comparisons: pd.DataFrame | None = None
    trials: pd.DataFrame | None = None

    def markdown(self, title: str) -> str:
        lines = [
            f"# {title}",
            "",
            markdown(self.table),
            "",
            "Mean ± sample standard deviation over seeds; n: the runs averaged. Only runs that finished, "
            "were tested and did not diverge count; the others are counted in their cell and listed below.",
        ]
        if self.comparisons is not None and len(self.comparisons):
            baseline = self.comparisons["baseline"].iloc[0]
            lines += [
                "", f"## Against {baseline}", "", comparison_markdown(self.comparisons), "",
                f"Δ: the strategy's mean minus {baseline}'s, of the final metric over the same runs as above; its 95% "
                "interval and two-sided p from Welch's t-test (unequal variances). With a few seeds the interval is "
                "wide. BH-adjusted p: Benjamini–Hochberg over the strategies compared on one network and data set "
                "(scipy.stats.false_discovery_control); Hedges' g: Δ over the pooled standard deviation, "
                "small-sample corrected.",
            ]
        tuned = self.runs[self.runs["tuned"].fillna("") != ""] if "tuned" in self.runs else self.runs.iloc[:0]
        if len(tuned):
            values = tuned.drop_duplicates(["net", "strategy", "data"])[["net", "strategy", "data", "tuned"]]
            lines += ["", "## Values found by the search", "", markdown(values.set_index(["net", "strategy", "data"])), "",
                      "Each cell's search-space axes were tuned by the sweep (Optuna or a grid, with ASHA stopping "
                      "trials that trailed) before its seeds ran at these values."]  # fmt: skip
        if self.trials is not None and len(self.trials):
            lines += ["", "## The search, trial by trial", "", trials_markdown(self.trials), "", trials_legend(self.trials)]
        problems = problem_runs(self.runs)
        if len(problems):
            lines += ["", "## Runs left out", "", markdown(problems.set_index(["net", "strategy"]))]
        return "\n".join(lines) + "\n"


def build_report(
    client: MlflowClient,
    runs: Sequence[Run],
    metric: str | None = None,
    best: Objective | None = None,
    curve_keys: Sequence[str] | None = None,
    baseline: str | None = None,
) -> Report:
    """Everything :func:`write_report` writes, in memory (the notebook shows it as it is)."""
    if not runs:
        raise ReportError(
            "no result runs to report (a sweep that is still searching has only search trials): "
            "search_so_far(client, experiment, sweeps, best) gives those, as `python -m skipln.analysis.report` shows them"
        )
    frame = run_frame(client, runs, metric, best)
    summary = summarize(frame)
    if curve_keys is None:
        keys = [best.key] if best is not None else []
        for task in dict.fromkeys(frame["task"]):
            keys += PROFILES[task].curves if task in PROFILES else []
        curve_keys = list(dict.fromkeys(keys))
    comparisons = against_baseline(frame, baseline) if baseline is not None else None
    trials = None
    if len(frame):
        objective = best or next((PROFILES[task].best for task in dict.fromkeys(frame["task"]) if task in PROFILES), None)
        sweeps = [sweep for sweep in dict.fromkeys(frame["sweep"]) if sweep and sweep != AD_HOC]
        labels = frame.drop_duplicates(["sweep", "cell"]).set_index(["sweep", "cell"])["strategy"].to_dict()
        trials = search_trials(client, list(dict.fromkeys(frame["experiment_id"])), sweeps, objective, labels)
    report = Report(frame, summary, paper_table(summary), tuple(curve_keys), comparisons=comparisons, trials=trials)
    for key in report.curve_keys:
        points = curves(client, frame, key)
        if len(points):
            report.figures[key] = plot_curves(frame, points, key)
            labels = frame[["run_id", "net", "data", "strategy", "seed"]]
            report.points[key] = labels.merge(points, on="run_id")[["net", "data", "strategy", "seed", "run_id", "step", "value"]]
    return report


def search_only_markdown(trials: pd.DataFrame, title: str) -> str:
    """The report of sweeps that have searched but have no result runs yet: the trials so far."""
    if not len(trials):
        return f"# {title}\n\nNo result runs and no search trials yet.\n"
    return (f"# {title}\n\nNo result runs yet: the search so far, trial by trial (`trials.csv` has the objective at "
            f"every step each trial reported).\n\n{trials_markdown(trials)}\n\n{trials_legend(trials)}\n")  # fmt: skip


def search_so_far(client: MlflowClient, experiment: str, sweeps: Sequence[str], best: Objective | None) -> pd.DataFrame:
    """The trials of ``sweeps`` that have no result runs yet; the objective is the task's unless ``best`` names one."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    if best is None:
        tasks = [run.data.tags.get("task") for sweep in sweeps for run in sweep_runs(client, experiment_id, sweep, TRIAL)]
        best = next((PROFILES[task].best for task in tasks if task in PROFILES), None)
    return search_trials(client, [experiment_id], sweeps, best)


def write_report(report: Report, out: Path, title: str) -> list[Path]:
    """Write table.md, table.csv, runs.csv, curves-*.png and their points (curves-*.csv) under ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "table.md", out / "table.csv", out / "runs.csv"]
    written[0].write_text(report.markdown(title))
    report.summary.to_csv(written[1], index=False)
    report.runs.to_csv(written[2], index=False)
    if report.comparisons is not None:
        written.append(out / "comparisons.csv")
        report.comparisons.to_csv(written[-1], index=False)
    if report.trials is not None and len(report.trials):
        written.append(out / "trials.csv")
        report.trials.to_csv(written[-1], index=False)
    for key, figure in report.figures.items():
        path = out / f"curves-{key.replace('/', '_')}.png"
        figure.savefig(path, dpi=90)
        written.append(path)
        if key in report.points:  # the numbers behind the figure, to re-plot or quote
            written.append(path.with_suffix(".csv"))
            report.points[key].to_csv(written[-1], index=False)
    return written


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m skipln.analysis.report",
        description="Write a paper-style table (mean ± std over seeds) and learning curves of sweeps from MLflow.",
        allow_abbrev=False,
    )
    parser.add_argument("sweeps", nargs="*", help="sweep name(s), as in the grid files' 'name' (their runs' 'sweep' tag)")
    parser.add_argument("--runs", nargs="+", metavar="RUN_ID", default=[], help="runs by id, with or without sweeps (runs of the same net, data and strategy are averaged as seeds)")
    parser.add_argument("--filter", help="the runs an MLflow search filter selects, e.g. \"tags.data = 'cifar10' and params.trainer.max_epochs = '30'\"")
    parser.add_argument("--metric", help="the final metric (default by task: test/acc, test/bleu)")
    parser.add_argument("--best", type=str, help="best value during training, <metric>:max|min (default by task: val/acc:max, val/loss:min)")
    parser.add_argument("--curves", nargs="*", help="metrics to plot against steps (default by task: val/acc or val/loss, and train/loss_epoch)")
    parser.add_argument("--baseline", help="compare every strategy's final metric with this one's (e.g. post_ln): Δ, 95%% interval, Welch's p")
    parser.add_argument("--out", type=Path, help="output folder (default: reports/<sweep>[+<sweep>…])")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: configs/defaults.yaml's)")
    parser.add_argument("--experiment", help="MLflow experiment (default: configs/defaults.yaml's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if not (args.sweeps or args.runs or args.filter):
        cli.error("name the runs to report: sweep names, --runs RUN_ID …, or --filter \"tags.data = 'cifar10'\"")
    try:
        root = Path.cwd()
        store = read_store([str(defaults_file(root / "main.py"))], root, args.tracking_uri, args.experiment)
        if not store_exists(store):
            raise ReportError(f"no MLflow store at {store.tracking_uri}: run a sweep first, or pass --tracking-uri")
        import matplotlib

        matplotlib.use("Agg")
        import mlflow

        client = mlflow.MlflowClient(store.tracking_uri)
        best = Objective.parse(args.best) if args.best else None
        runs = load_runs(client, store.experiment, args.sweeps) if args.sweeps else []
        runs += load_runs_by_id(client, args.runs) if args.runs else []
        runs += load_runs_by_filter(client, store.experiment, args.filter) if args.filter else []
        runs = list({run.info.run_id: run for run in runs}.values())  # a run named twice counts once
        names = [*args.sweeps, *(["runs"] if args.runs else []), *(["filter"] if args.filter else [])]
        title = " + ".join([*args.sweeps, *([f"runs {', '.join(r[:8] for r in args.runs)}"] if args.runs else []),
                            *([f"filter {args.filter}"] if args.filter else [])])  # fmt: skip
        out = args.out or Path("reports") / "+".join(names)
        if not runs:  # only sweeps that are still searching
            trials = search_so_far(client, store.experiment, args.sweeps, best)
            out.mkdir(parents=True, exist_ok=True)
            text = search_only_markdown(trials, title)
            (out / "table.md").write_text(text)
            trials.to_csv(out / "trials.csv", index=False)
            print(text + f"wrote {out / 'table.md'}, {out / 'trials.csv'}")
            return 0
        report = build_report(client, runs, args.metric, best, args.curves, baseline=args.baseline)
        paths = write_report(report, out, title)
    except SkipLNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.markdown(title))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Each strategy against a baseline, over seeds: the difference of means, its 95% interval, Welch's p.

A table of means ± std says how runs spread; a reader comparing two rows wants to know whether
their difference is larger than that spread. For every network and data set this compares
the final metric of each strategy's runs with the baseline strategy's runs of the same
network and data set, by Welch's two-sample t-test (unequal variances): the difference of the
means, its 95% confidence interval from Student's t with the Welch–Satterthwaite degrees of
freedom, and the two-sided p-value. With three seeds a side the interval is wide, and nothing
here corrects for comparing many strategies at once; the table says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from skipln.errors import SkipLNError

#: The columns of :func:`against_baseline`'s frame.
COLUMNS = ["net", "data", "metric", "strategy", "n", "mean", "baseline", "baseline_n", "baseline_mean", "difference", "ci_low", "ci_high", "p"]


class ComparisonError(SkipLNError):
    """The baseline asked for is not among the runs."""


def welch(values: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """``(difference of means, interval low, interval high, two-sided p)`` of Welch's t-test.

    The interval and p are NaN where they are undefined: fewer than two values on a side, or
    no spread at all on both sides.
    """
    from scipy import stats

    a, b = [float(v) for v in values], [float(v) for v in baseline]
    if not a or not b:
        return math.nan, math.nan, math.nan, math.nan
    difference = sum(a) / len(a) - sum(b) / len(b)
    if len(a) < 2 or len(b) < 2 or stats.tvar(a) + stats.tvar(b) == 0:
        return difference, math.nan, math.nan, math.nan
    test = stats.ttest_ind(a, b, equal_var=False)
    interval = test.confidence_interval(confidence)
    return difference, float(interval.low), float(interval.high), float(test.pvalue)


def against_baseline(runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per (network, data set, metric, strategy ≠ baseline): the strategy's ``ok`` runs against the baseline's.

    ``runs`` is :func:`skipln.analysis.report.run_frame`'s frame (columns ``net``, ``data``,
    ``metric``, ``strategy``, ``outcome``, ``value``). Groups without baseline runs are left out.

    Raises:
        ComparisonError: no ``ok`` run of ``baseline`` at all (the message lists the strategies).
    """
    ok = runs[runs["outcome"] == "ok"]
    if not (ok["strategy"] == baseline).any():
        names = ", ".join(dict.fromkeys(runs["strategy"]))
        raise ComparisonError(f"--baseline {baseline!r}: no finished, tested run of that strategy; the strategies are: {names}")
    rows = []
    for (net, data, metric), group in ok.groupby(["net", "data", "metric"], sort=False):
        base = group.loc[group["strategy"] == baseline, "value"].astype(float)
        if base.empty:
            continue
        for strategy, other in group.groupby("strategy", sort=False):
            if strategy == baseline:
                continue
            values = other["value"].astype(float)
            difference, low, high, p = welch(values.tolist(), base.tolist())
            rows.append(
                {
                    "net": net, "data": data, "metric": metric, "strategy": strategy, "n": len(values),
                    "mean": values.mean(), "baseline": baseline, "baseline_n": len(base), "baseline_mean": base.mean(),
                    "difference": difference, "ci_low": low, "ci_high": high, "p": p,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def _number(value: float, decimals: int) -> str:
    return "—" if math.isnan(value) else f"{value:+.{decimals}f}"


def comparison_markdown(comparisons: pd.DataFrame, decimals: int = 4) -> str:
    """The comparisons as a Markdown table: Δ (strategy − baseline), its 95% interval, p."""
    lines = [
        "| net | data | strategy | metric | n | Δ vs baseline (n) | 95% interval of Δ | Welch p |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in comparisons.itertuples(index=False):
        interval = "—" if math.isnan(row.ci_low) else f"[{_number(row.ci_low, decimals)}, {_number(row.ci_high, decimals)}]"
        p = "—" if math.isnan(row.p) else ("< 0.001" if row.p < 0.001 else f"{row.p:.3f}")
        lines.append(
            f"| {row.net} | {row.data} | {row.strategy} | {row.metric} | {row.n} | "
            f"{_number(row.difference, decimals)} vs {row.baseline} ({row.baseline_n}) | {interval} | {p} |"
        )
    return "\n".join(lines)


__all__ = ["COLUMNS", "ComparisonError", "against_baseline", "comparison_markdown", "welch"]

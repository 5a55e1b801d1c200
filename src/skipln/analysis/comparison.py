"""Each strategy against a baseline, over seeds: the difference of means, its 95% interval, Welch's p,
the p adjusted for the number of comparisons, and an effect size.

A table of means ± std says how runs spread; a reader comparing two rows wants to know whether
their difference is larger than that spread. For every network and data set this compares
the final metric of each strategy's runs with the baseline strategy's runs of the same
network and data set, by Welch's two-sample t-test (unequal variances): the difference of the
means, its 95% confidence interval from Student's t with the Welch–Satterthwaite degrees of
freedom, and the two-sided p-value. With three seeds a side the interval is wide.

Comparing many strategies with one baseline makes some small p-values by chance. Within each
family — the strategies compared on one network, data set and metric — ``p_adjusted`` is the
Benjamini–Hochberg adjusted p (``scipy.stats.false_discovery_control``): calling every
comparison with ``p_adjusted < 0.05`` a difference keeps the expected share of false ones below
5%. ``hedges_g`` is the difference in units of the pooled standard deviation of the runs,
corrected for small samples (Hedges' g): ~0.2 small, ~0.8 large, by Cohen's convention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from skipln.errors import SkipLNError

#: The columns of :func:`against_baseline`'s frame.
COLUMNS = [
    "net", "data", "metric", "strategy", "n", "mean", "baseline", "baseline_n", "baseline_mean",
    "difference", "ci_low", "ci_high", "p", "p_adjusted", "hedges_g",
]  # fmt: skip


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


def hedges_g(values: Sequence[float], baseline: Sequence[float]) -> float:
    """The difference of means over the pooled standard deviation, times Hedges' small-sample correction.

    NaN with fewer than two values on a side or no spread at all.
    """
    a, b = [float(v) for v in values], [float(v) for v in baseline]
    n, m = len(a), len(b)
    if n < 2 or m < 2:
        return math.nan
    mean_a, mean_b = sum(a) / n, sum(b) / m
    pooled = (sum((v - mean_a) ** 2 for v in a) + sum((v - mean_b) ** 2 for v in b)) / (n + m - 2)
    if pooled == 0:
        return math.nan
    return (mean_a - mean_b) / math.sqrt(pooled) * (1 - 3 / (4 * (n + m) - 9))


def adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (scipy); NaN entries stay NaN and do not count as tests."""
    from scipy import stats

    tested = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    adjusted = [math.nan] * len(p_values)
    if tested:
        for i, q in zip(tested, stats.false_discovery_control([p_values[i] for i in tested], method="bh")):
            adjusted[i] = float(q)
    return adjusted


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
        family = len(rows)
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
                    "hedges_g": hedges_g(values.tolist(), base.tolist()),
                }
            )
        for row, q in zip(rows[family:], adjust([row["p"] for row in rows[family:]])):
            row["p_adjusted"] = q
    return pd.DataFrame(rows, columns=COLUMNS)


def _number(value: float, decimals: int) -> str:
    return "—" if math.isnan(value) else f"{value:+.{decimals}f}"


def _p(value: float) -> str:
    return "—" if math.isnan(value) else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def comparison_markdown(comparisons: pd.DataFrame, decimals: int = 4) -> str:
    """The comparisons as a Markdown table: Δ (strategy − baseline), its 95% interval, p, BH-adjusted p, Hedges' g."""
    lines = [
        "| net | data | strategy | metric | n | Δ vs baseline (n) | 95% interval of Δ | Welch p | BH-adjusted p | Hedges' g |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in comparisons.itertuples(index=False):
        interval = "—" if math.isnan(row.ci_low) else f"[{_number(row.ci_low, decimals)}, {_number(row.ci_high, decimals)}]"
        lines.append(
            f"| {row.net} | {row.data} | {row.strategy} | {row.metric} | {row.n} | "
            f"{_number(row.difference, decimals)} vs {row.baseline} ({row.baseline_n}) | {interval} | {_p(row.p)} | "
            f"{_p(row.p_adjusted)} | {_number(row.hedges_g, 2)} |"
        )
    return "\n".join(lines)


__all__ = ["COLUMNS", "ComparisonError", "adjust", "against_baseline", "comparison_markdown", "hedges_g", "welch"]

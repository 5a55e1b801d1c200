"""Strategies against a baseline over seeds: Welch's t-test, as scipy and a hand computation give it."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from skipln.analysis.comparison import ComparisonError, adjust, against_baseline, comparison_markdown, hedges_g, welch


def runs(rows: list[tuple[str, float, str]]) -> pd.DataFrame:
    """(strategy, value, outcome) rows of one network, data set and metric."""
    return pd.DataFrame(
        [{"net": "resnet20", "data": "digits", "metric": "test/acc", "strategy": s, "value": v, "outcome": o} for s, v, o in rows]
    )


def test_welch_difference_interval_and_p_match_a_hand_computation() -> None:
    a, b = [0.90, 0.92, 0.97], [0.80, 0.85, 0.84]
    difference, low, high, p = welch(a, b)
    assert difference == pytest.approx(0.1)
    se = math.sqrt(stats.tvar(a) / 3 + stats.tvar(b) / 3)
    df = se**4 / ((stats.tvar(a) / 3) ** 2 / 2 + (stats.tvar(b) / 3) ** 2 / 2)
    assert (low, high) == pytest.approx((0.1 - stats.t.ppf(0.975, df) * se, 0.1 + stats.t.ppf(0.975, df) * se))
    assert p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert low > 0 and p < 0.05  # the interval excludes 0 exactly when p < 0.05


def test_welch_is_undefined_with_one_run_or_no_spread() -> None:
    assert all(math.isnan(x) for x in welch([0.9], [0.8, 0.85])[1:])
    difference, low, _, p = welch([0.9, 0.9], [0.8, 0.8])
    assert difference == pytest.approx(0.1) and math.isnan(low) and math.isnan(p)


def test_every_strategy_is_compared_with_the_baselines_ok_runs_only() -> None:
    frame = runs([
        ("post_ln", 0.90, "ok"), ("post_ln", 0.92, "ok"), ("post_ln", 0.10, "diverged"),
        ("rskip", 0.95, "ok"), ("rskip", 0.97, "ok"),
        ("skip", 0.80, "ok"), ("skip", 0.82, "ok"),
    ])
    table = against_baseline(frame, "post_ln")
    assert list(table["strategy"]) == ["rskip", "skip"]
    rskip = table.iloc[0]
    assert (rskip["n"], rskip["baseline_n"]) == (2, 2)  # the diverged baseline run does not count
    assert rskip["difference"] == pytest.approx(0.05)
    assert "| resnet20 | digits | rskip | test/acc | 2 | +0.0500 vs post_ln (2) |" in comparison_markdown(table)


def test_hedges_g_is_the_difference_over_the_pooled_std_with_the_small_sample_correction() -> None:
    a, b = [0.90, 0.92, 0.97], [0.80, 0.85, 0.84]
    pooled = math.sqrt((2 * stats.tvar(a) + 2 * stats.tvar(b)) / 4)
    assert hedges_g(a, b) == pytest.approx((sum(a) / 3 - sum(b) / 3) / pooled * (1 - 3 / (4 * 6 - 9)))
    assert math.isnan(hedges_g([0.9], [0.8, 0.85])) and math.isnan(hedges_g([0.9, 0.9], [0.8, 0.8]))


def test_benjamini_hochberg_adjusts_p_values_by_their_rank_and_skips_undefined_ones() -> None:
    # By hand: sorted p (0.01, 0.02, 0.04) → min over ranks ≥ i of p·m/rank = (0.03, 0.03, 0.04).
    assert adjust([0.04, math.nan, 0.01, 0.02]) == pytest.approx([0.04, math.nan, 0.03, 0.03], nan_ok=True)


def test_p_values_are_adjusted_within_each_network_and_data_set_not_across_them() -> None:
    one = runs([("post_ln", 0.90, "ok"), ("post_ln", 0.91, "ok"), ("rskip", 0.95, "ok"), ("rskip", 0.97, "ok"),
                ("skip", 0.80, "ok"), ("skip", 0.82, "ok")])  # fmt: skip
    other = one.assign(data="cifar10")
    table = against_baseline(pd.concat([one, other]), "post_ln")
    family = table[table["data"] == "digits"]
    assert family["p_adjusted"].tolist() == pytest.approx(adjust(family["p"].tolist()))
    assert (table["p_adjusted"] >= table["p"]).all()


def test_an_unknown_baseline_is_refused_with_the_strategies_listed() -> None:
    with pytest.raises(ComparisonError, match="--baseline 'postln'.*the strategies are: post_ln, skip"):
        against_baseline(runs([("post_ln", 0.9, "ok"), ("skip", 0.8, "ok")]), "postln")

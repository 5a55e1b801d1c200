"""Reports of sweeps: mean ± std over seeds as the paper shows them, with every run that did not count accounted for."""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import mlflow
import pandas as pd
import pytest

from conftest import DEFAULTS
from skipln.analysis.report import (
    Objective,
    ReportError,
    build_report,
    curves,
    format_mean_std,
    history,
    load_runs,
    main,
    plot_curves,
    run_frame,
    summarize,
)
from sweep_support import EXPERIMENT, add_run, new_store

matplotlib.use("Agg")

NAN = math.nan


class Store:
    """A fresh MLflow store in which a test makes the runs a sweep would have made."""

    def __init__(self, root: Path) -> None:
        self.uri = new_store(root)
        self.client = mlflow.MlflowClient(self.uri)
        self.experiment_id = self.client.create_experiment(EXPERIMENT)

    def run(
        self,
        skip: str,
        seed: int,
        metrics: Mapping[str, Sequence[float]],
        *,
        status: str = "FINISHED",
        sweep: str = "demo",
        data: str = "digits",
        net: str = "resnet20",
        task: str = "ClassificationTask",
        cell: str | None = None,
    ) -> str:
        tags = {"sweep": sweep, "sweep_cell": cell or f"skip={skip}", "seed": str(seed), "task": task, "net": net, "data": data, "skip": skip}
        return add_run(self.client, self.experiment_id, tags=tags, metrics=metrics, status=status)

    def report(self, *sweeps: str, **options: object):  # type: ignore[no-untyped-def]
        return build_report(self.client, load_runs(self.client, EXPERIMENT, sweeps or ("demo",)), **options)  # type: ignore[arg-type]


@pytest.fixture
def store(workdir: Path) -> Store:
    return Store(workdir)


def classified(test_acc: float, val_acc: Sequence[float] = (0.5, 0.6), val_loss: float = 0.3) -> dict[str, list[float]]:
    return {"test/acc": [test_acc], "val/acc": list(val_acc), "val/loss": [val_loss], "train/loss_epoch": [1.0, 0.5]}


def search_trial(store: Store, lr: str, val_acc: Sequence[float], state: str, status: str = "FINISHED") -> str:
    """A trial of post_ln's search over ``lr``, as the sweep tags it, with its validation accuracy by step."""
    trial = store.run("post_ln", 0, {"val/acc": list(val_acc)}, status=status)
    for key, value in (("sweep_stage", "trial"), ("sweep.lr", lr), ("sweep_value.lr", lr), ("sweep_state", state)):
        store.client.set_tag(trial, key, value)
    return trial


def row(summary: pd.DataFrame, skip: str) -> pd.Series:
    (index,) = summary.index[summary["strategy"] == skip]
    return summary.loc[index]


def test_cells_are_the_mean_and_sample_std_over_seeds(store: Store) -> None:
    for seed, acc in enumerate([0.90, 0.92, 0.97]):
        store.run("rskip_ln-r2", seed, classified(acc))
    store.run("skip", 0, classified(0.80))
    report = store.report()
    rskip = row(report.summary, "rskip_ln-r2")
    # By hand: mean 0.93; deviations -0.03, -0.01, 0.04; sample variance 0.0026 / 2 = 0.0013.
    assert rskip["value_mean"] == pytest.approx(0.93)
    assert rskip["value_std"] == pytest.approx(math.sqrt(0.0013))
    assert rskip["value_n"] == 3
    assert report.table.loc[("resnet20", "rskip_ln-r2"), "digits test/acc"] == "0.9300 ± 0.0361 (n=3)"
    assert report.table.loc[("resnet20", "skip"), "digits test/acc"] == "0.8000 (n=1)"


def test_best_is_the_max_val_acc_over_training_for_classification(store: Store) -> None:
    store.run("skip", 0, classified(0.9, val_acc=[0.5, 0.8, 0.7]))
    store.run("skip", 1, classified(0.9, val_acc=[0.6, 0.9, 0.85]))
    report = store.report()
    assert row(report.summary, "skip")["best_mean"] == pytest.approx(0.85)
    assert report.table.loc[("resnet20", "skip"), "digits max val/acc"] == "0.8500 ± 0.0707 (n=2)"


def test_translation_reports_test_bleu_and_the_min_val_loss(store: Store) -> None:
    for seed, (bleu, losses) in enumerate([(30.0, [5.0, 3.2, 3.4]), (31.0, [5.0, 3.0, 3.1])]):
        store.run("post_ln", seed, {"test/bleu": [bleu], "val/loss": losses}, task="TranslationTask", data="iwslt14", net="transformer")
    report = store.report()
    assert report.table.loc[("transformer", "post_ln"), "iwslt14 test/bleu"] == "30.50 ± 0.71 (n=2)"
    assert report.table.loc[("transformer", "post_ln"), "iwslt14 min val/loss"] == "3.100 ± 0.141 (n=2)"


def test_failed_runs_are_counted_and_listed_not_averaged(store: Store) -> None:
    store.run("xskip-2", 0, classified(0.90))
    store.run("xskip-2", 1, classified(0.94))
    failed = store.run("xskip-2", 2, classified(0.10), status="FAILED")
    report = store.report()
    xskip = row(report.summary, "xskip-2")
    assert (xskip["value_mean"], xskip["value_n"], xskip["runs"], xskip["failed"]) == (pytest.approx(0.92), 2, 3, 1)
    assert report.table.loc[("resnet20", "xskip-2"), "digits test/acc"] == "0.9200 ± 0.0283 (n=2); 1 failed"
    assert failed in report.markdown("demo").split("## Runs left out")[1]


def test_a_run_whose_loss_went_nan_or_infinite_is_diverged_not_averaged(store: Store) -> None:
    store.run("xskip-2", 0, classified(0.90))
    store.run("xskip-2", 1, classified(0.10, val_loss=NAN))
    store.run("xskip-2", 2, {**classified(0.10), "train/loss_epoch": [1.0, math.inf]})
    xskip = row(store.report().summary, "xskip-2")
    assert (xskip["value_mean"], xskip["value_n"], xskip["diverged"]) == (pytest.approx(0.90), 1, 2)


def test_a_run_stopped_by_the_divergence_guard_is_diverged_not_failed(store: Store) -> None:
    store.run("xskip-2", 0, classified(0.90))
    stopped = store.run("xskip-2", 1, {"val/acc": [0.1]}, status="FAILED")
    store.client.set_tag(stopped, "failure_reason", "training diverged: the loss is nan at step 24 (epoch 1) of …")
    store.client.set_tag(stopped, "failure", "diverged")
    xskip = row(store.report().summary, "xskip-2")
    assert (xskip["value_n"], xskip["diverged"], xskip["failed"]) == (1, 1, 0)
    store.client.set_terminated(stopped, "FINISHED")  # a later attempt finished: the tag is history
    store.client.log_metric(stopped, "test/acc", 0.8)
    assert row(store.report().summary, "xskip-2")["value_n"] == 2


def test_runs_still_running_or_not_tested_are_counted_apart(store: Store) -> None:
    store.run("skip", 0, classified(0.9))
    store.run("skip", 1, {"val/acc": [0.5]}, status="RUNNING")
    store.run("skip", 2, {"val/acc": [0.5], "val/loss": [0.4]})
    report = store.report()
    skip = row(report.summary, "skip")
    assert (skip["value_n"], skip["running"], skip["untested"]) == (1, 1, 1)
    assert report.table.loc[("resnet20", "skip"), "digits test/acc"] == "0.9000 (n=1); 1 running, 1 untested"


def test_a_cell_with_no_run_that_counts_shows_a_dash_and_why(store: Store) -> None:
    store.run("xskip-0.5", 0, classified(0.1), status="FAILED")
    assert store.report().table.loc[("resnet20", "xskip-0.5"), "digits test/acc"] == "—; 1 failed"


def test_rows_follow_the_grid_columns_are_data_sets_across_sweeps(store: Store) -> None:
    for sweep, data in (("c10", "cifar10"), ("c100", "cifar100")):
        for skip in ("skip", "post_ln", "rskip_ln-r2"):
            store.run(skip, 0, classified(0.5), sweep=sweep, data=data)
    table = store.report("c10", "c100").table
    assert list(table.index.get_level_values("strategy")) == ["skip", "post_ln", "rskip_ln-r2"]
    assert list(table.columns) == ["cifar10 test/acc", "cifar10 max val/acc", "cifar100 test/acc", "cifar100 max val/acc"]


def test_cells_with_the_same_strategy_are_told_apart_by_their_cell(store: Store) -> None:
    store.run("skip", 0, classified(0.5), cell="lr=0.1,skip=skip")
    store.run("skip", 0, classified(0.7), cell="lr=0.05,skip=skip")
    table = store.report().table
    assert list(table.index.get_level_values("strategy")) == ["skip [lr=0.1,skip=skip]", "skip [lr=0.05,skip=skip]"]


def test_without_cli_tags_runs_are_described_by_their_config_params(store: Store) -> None:
    run_id = add_run(store.client, store.experiment_id, tags={"sweep": "demo", "sweep_cell": "skip=x", "seed": "0"},
                     metrics={"test/acc": [0.5]})  # fmt: skip
    for key, value in {
        "model.class_path": "skipln.tasks.classification.ClassificationTask",
        "model.net.class_path": "skipln.models.resnet.ResNet",
        "model.net.skip.class_path": "skipln.skip.RecursiveSkipLN",
        "model.net.skip.recursions": "2",
        "data.class_path": "skipln.data.digits.DigitsDataModule",
    }.items():
        store.client.log_param(run_id, key, value)
    (described,) = store.report().runs.to_dict("records")
    assert (described["task"], described["net"], described["data"]) == ("ClassificationTask", "ResNet", "DigitsDataModule")
    assert described["strategy"] == "RecursiveSkipLN(recursions=2)"


def test_a_run_that_failed_before_logging_its_config_counts_in_its_cell(store: Store) -> None:
    store.run("skip", 0, classified(0.9))
    add_run(store.client, store.experiment_id, tags={"sweep": "demo", "sweep_cell": "skip=skip", "seed": "1"}, status="FAILED")
    skip = row(store.report().summary, "skip")
    assert (skip["runs"], skip["failed"], skip["value_n"]) == (2, 1, 1)


def test_a_task_without_defaults_needs_metric_or_is_a_clear_error(store: Store) -> None:
    store.run("skip", 0, {"test/f1": [0.7], "val/f1": [0.5, 0.6]}, task="SegmentationTask")
    with pytest.raises(ReportError, match="no default metric for runs of task.*SegmentationTask.*pass --metric"):
        store.report()
    report = store.report(metric="test/f1", best=Objective("val/f1", "max"))
    assert report.table.loc[("resnet20", "skip"), "digits max val/f1"] == "0.6000 (n=1)"


def test_an_unknown_sweep_or_experiment_is_a_clear_error(store: Store) -> None:
    with pytest.raises(ReportError, match="no runs of sweep.*nope.*python -m skipln.sweep run sweeps/nope.yaml"):
        load_runs(store.client, EXPERIMENT, ["nope"])
    with pytest.raises(ReportError, match="sweep names are letters"):
        load_runs(store.client, EXPERIMENT, ["x' OR tags.sweep != '"])
    with pytest.raises(ReportError, match="no experiment 'other'"):
        load_runs(store.client, "other", ["demo"])


def test_a_step_logged_twice_by_a_restarted_run_keeps_the_later_value(store: Store) -> None:
    run_id = store.run("skip", 0, {"val/acc": [0.1, 0.2]})
    store.client.log_metric(run_id, "val/acc", 0.9, step=1, timestamp=10_000)
    assert history(store.client, run_id, "val/acc").to_dict() == {0: 0.1, 1: 0.9}


def test_curves_are_the_mean_over_seeds_with_a_std_band(store: Store) -> None:
    store.run("skip", 0, classified(0.9, val_acc=[0.2, 0.6]))
    store.run("skip", 1, classified(0.9, val_acc=[0.4, 0.8]))
    store.run("skip", 2, classified(0.9, val_acc=[0.0, 0.0]), status="FAILED")
    runs = run_frame(store.client, load_runs(store.client, EXPERIMENT, ["demo"]))
    figure = plot_curves(runs, curves(store.client, runs, "val/acc"), "val/acc")
    (axes,) = [ax for ax in figure.axes if ax.get_visible()]
    (line,) = axes.get_lines()
    assert list(line.get_xdata()) == [0, 1]
    assert list(line.get_ydata()) == pytest.approx([0.3, 0.7])
    assert line.get_label() == "skip (n=2)"
    assert axes.get_title() == "digits · resnet20"


def test_a_curve_far_above_the_others_puts_the_panel_on_a_log_scale(store: Store) -> None:
    # A run that blew up but stayed finite (xSkip λ 2's loss in the hundreds) next to losses near 1.
    store.run("post_ln", 0, {**classified(0.9), "val/loss": [4.0, 3.0]})
    store.run("xskip-2", 0, {**classified(0.1), "val/loss": [600.0, 45.0]})
    runs = run_frame(store.client, load_runs(store.client, EXPERIMENT, ["demo"]))
    (axes,) = [ax for ax in plot_curves(runs, curves(store.client, runs, "val/loss"), "val/loss").axes if ax.get_visible()]
    assert axes.get_yscale() == "log"
    (axes,) = [ax for ax in plot_curves(runs, curves(store.client, runs, "val/acc"), "val/acc").axes if ax.get_visible()]
    assert axes.get_yscale() == "linear"


def test_format_shows_four_significant_digits_and_the_std_to_the_same_decimals() -> None:
    assert format_mean_std(0.91234, 0.0021, 3) == "0.9123 ± 0.0021 (n=3)"
    assert format_mean_std(34.567, 0.4, 3) == "34.57 ± 0.40 (n=3)"
    assert format_mean_std(0.5, NAN, 1) == "0.5000 (n=1)"
    assert format_mean_std(NAN, NAN, 0) == "—"


def test_rows_keep_the_grid_order_of_cells_even_when_runs_were_redone_later(store: Store) -> None:
    for index, skip in ((2, "c"), (0, "b"), (1, "a")):
        run_id = store.run(skip, 0, classified(0.5))
        store.client.set_tag(run_id, "sweep_cell_index", str(index))
    assert list(summarize(store.report().runs)["strategy"]) == ["b", "a", "c"]


def test_two_sweeps_with_the_same_cells_keep_apart_in_one_report(store: Store) -> None:
    # E.g. a grid run again with BN in place of LN under another name: same cells, same tags.
    store.run("post_ln", 0, classified(0.90), sweep="ln")
    store.run("post_ln", 0, classified(0.80), sweep="bn")
    table = store.report("ln", "bn").table
    assert list(table.index.get_level_values("strategy")) == ["post_ln [ln: skip=post_ln]", "post_ln [bn: skip=post_ln]"]
    assert list(table["digits test/acc"]) == ["0.9000 (n=1)", "0.8000 (n=1)"]


def test_the_command_writes_markdown_csv_and_curves(store: Store, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copyfile(DEFAULTS, (workdir / "configs").mkdir() or workdir / "configs" / "defaults.yaml")
    for seed, acc in enumerate([0.9, 0.8]):
        store.run("rskip_ln-r2", seed, classified(acc))
    assert main(["demo"]) == 0
    out = workdir / "reports" / "demo"
    assert sorted(p.name for p in out.iterdir()) == [
        "curves-train_loss_epoch.csv", "curves-train_loss_epoch.png", "curves-val_acc.csv", "curves-val_acc.png", "runs.csv", "table.csv", "table.md"
    ]
    points = pd.read_csv(out / "curves-val_acc.csv")
    assert list(points.columns) == ["net", "data", "strategy", "seed", "run_id", "step", "value"] and len(points) == 4  # 2 runs × 2 steps
    assert "| resnet20 | rskip_ln-r2 | 0.8500 ± 0.0707 (n=2) |" in (out / "table.md").read_text()
    assert pd.read_csv(out / "table.csv")["value_mean"].tolist() == pytest.approx([0.85])
    assert len(pd.read_csv(out / "runs.csv")) == 2
    assert all(0 < (out / name).stat().st_size < 300_000 for name in ("curves-val_acc.png", "curves-train_loss_epoch.png"))
    assert "rskip_ln-r2" in capsys.readouterr().out


def test_the_command_with_a_baseline_adds_the_comparisons_to_the_table_and_a_csv(store: Store, workdir: Path) -> None:
    shutil.copyfile(DEFAULTS, (workdir / "configs").mkdir() or workdir / "configs" / "defaults.yaml")
    for seed, (base, rskip) in enumerate([(0.90, 0.95), (0.91, 0.97), (0.92, 0.96)]):
        store.run("post_ln", seed, classified(base))
        store.run("rskip_ln-r2", seed, classified(rskip))
    assert main(["demo", "--baseline", "post_ln"]) == 0
    out = workdir / "reports" / "demo"
    table = (out / "table.md").read_text()
    assert "## Against post_ln" in table
    assert "| resnet20 | digits | rskip_ln-r2 | test/acc | 3 | +0.0500 vs post_ln (3) |" in table
    assert pd.read_csv(out / "comparisons.csv")["difference"].tolist() == pytest.approx([0.05])


def test_a_sweep_that_has_only_searched_so_far_reports_its_trials(store: Store, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copyfile(DEFAULTS, (workdir / "configs").mkdir() or workdir / "configs" / "defaults.yaml")
    search_trial(store, "0.01", (0.70, 0.80), "fitted")
    search_trial(store, "0.1", (0.60,), "pruned")
    assert main(["demo"]) == 0
    out = workdir / "reports" / "demo"
    assert sorted(p.name for p in out.iterdir()) == ["table.md", "trials.csv"]
    assert "No result runs yet" in (out / "table.md").read_text()
    assert "| post_ln | 0.8000 | 0.6000 (pruned) |" in (out / "table.md").read_text()
    assert pd.read_csv(out / "trials.csv")["val/acc@1"].tolist()[0] == pytest.approx(0.8)
    assert "No result runs yet" in capsys.readouterr().out


def test_a_baseline_that_is_not_a_strategy_of_the_sweep_is_a_clear_error(store: Store, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copyfile(DEFAULTS, (workdir / "configs").mkdir() or workdir / "configs" / "defaults.yaml")
    store.run("skip", 0, classified(0.9))
    assert main(["demo", "--baseline", "post_ln"]) == 2
    assert "error: --baseline 'post_ln': no finished, tested run of that strategy; the strategies are: skip" in capsys.readouterr().err


def test_the_command_without_a_store_says_so(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--tracking-uri", "sqlite:///mlruns/mlflow.db", "--experiment", "skipln"]) == 2
    assert "no MLflow store at sqlite:///" in capsys.readouterr().err


def test_the_report_says_which_value_each_strategys_search_picked(store: Store) -> None:
    for skip, lr in (("post_ln", "0.00316"), ("rskip_ln-r2", "0.01")):
        for seed in range(2):
            run_id = store.run(skip, seed, classified(0.9 + seed / 100))
            store.client.set_tag(run_id, "sweep.lr", lr)
            store.client.set_tag(run_id, "sweep_value.lr", lr)
    text = store.report().markdown("demo")
    assert "## Values found by the search" in text
    assert "| resnet20 | post_ln | digits | lr=0.00316 |" in text and "| resnet20 | rskip_ln-r2 | digits | lr=0.01 |" in text


def test_search_trials_and_searches_are_not_results(store: Store) -> None:
    store.run("post_ln", 0, classified(0.9))
    trial = store.run("post_ln", 1, classified(0.1))
    store.client.set_tag(trial, "sweep_stage", "trial")
    summary = store.report().summary
    assert row(summary, "post_ln")["value_n"] == 1


def test_the_report_lists_every_trial_of_the_search_with_its_best_value_and_whether_it_was_pruned(store: Store, workdir: Path) -> None:
    store.run("post_ln", 0, classified(0.9))
    search_trial(store, "0.01", (0.70, 0.80), "fitted")
    search_trial(store, "0.1", (0.60,), "pruned")
    search_trial(store, "1.0", (), "fitting", status="FAILED")
    report = store.report()
    assert report.trials is not None
    assert sorted(zip(report.trials["values"], report.trials["best"].fillna(-1))) == [("lr=0.01", 0.8), ("lr=0.1", 0.6), ("lr=1.0", -1)]
    text = report.markdown("demo")
    assert "## The search, trial by trial" in text
    assert "| post_ln | 0.8000 | 0.6000 (pruned) | — (failed) |" in text


def test_the_trials_table_holds_the_objective_at_every_step_a_trial_reported(store: Store) -> None:
    store.run("post_ln", 0, classified(0.9))
    search_trial(store, "0.01", (0.70, 0.80), "fitted")
    search_trial(store, "0.1", (0.60,), "pruned")
    trials = store.report().trials
    assert trials is not None
    assert list(trials.columns[-2:]) == ["val/acc@0", "val/acc@1"]
    fitted, pruned = trials.set_index("values").loc["lr=0.01"], trials.set_index("values").loc["lr=0.1"]
    assert (fitted["val/acc@0"], fitted["val/acc@1"]) == (0.70, 0.80)
    assert pruned["val/acc@0"] == 0.60 and math.isnan(pruned["val/acc@1"])


def ad_hoc_run(store: Store, skip: str, acc: float, data: str = "digits") -> str:
    """A run made by `main.py fit` + `test`, not by a sweep: the CLI's tags, no sweep tags."""
    tags = {"task": "ClassificationTask", "net": "resnet20", "data": data, "skip": skip}
    return add_run(store.client, store.experiment_id, tags=tags, metrics=classified(acc))


def test_runs_given_by_id_are_reported_with_runs_of_one_strategy_as_seeds(store: Store, workdir: Path) -> None:
    shutil.copyfile(DEFAULTS, (workdir / "configs").mkdir() or workdir / "configs" / "defaults.yaml")
    ids = [ad_hoc_run(store, "skip", 0.90), ad_hoc_run(store, "skip", 0.92), ad_hoc_run(store, "post_ln", 0.95)]
    ad_hoc_run(store, "skip", 0.10)  # not named: not reported
    assert main(["--runs", *ids, "--out", "out"]) == 0
    table = (workdir / "out" / "table.md").read_text()
    assert "| resnet20 | skip | 0.9100 ± 0.0141 (n=2) |" in table
    assert "| resnet20 | post_ln | 0.9500 (n=1) |" in table


def test_runs_selected_by_an_mlflow_filter_are_reported(store: Store, workdir: Path) -> None:
    shutil.copyfile(DEFAULTS, (workdir / "configs").mkdir() or workdir / "configs" / "defaults.yaml")
    ad_hoc_run(store, "skip", 0.90, data="cifar10")
    ad_hoc_run(store, "skip", 0.50, data="digits")
    assert main(["--filter", "tags.data = 'cifar10'", "--out", "out"]) == 0
    assert len(pd.read_csv(workdir / "out" / "runs.csv")) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runs", "0123456789abcdef"], "no run '0123456789abcdef' in the MLflow store"),
        (["--filter", "tags.data = "], "is not an MLflow search filter"),
        (["--filter", "tags.data = 'imagenet'"], "no runs in experiment 'skipln' match --filter"),
    ],
)
def test_runs_that_cannot_be_found_are_a_clear_error(store: Store, workdir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    shutil.copyfile(DEFAULTS, (workdir / "configs").mkdir() or workdir / "configs" / "defaults.yaml")
    ad_hoc_run(store, "skip", 0.9)
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_the_command_without_sweeps_runs_or_filter_says_what_to_give(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([])
    assert "name the runs to report: sweep names, --runs RUN_ID …, or --filter" in capsys.readouterr().err


def test_a_report_of_no_runs_says_where_the_search_trials_are() -> None:
    with pytest.raises(ReportError, match="no result runs to report.*search_so_far"):
        build_report(None, [])  # type: ignore[arg-type]

"""Sweeps on a local Ray: concurrent trials, retried killed trials, a killed driver, tuned axes, diverged cells.

Each run is a real ``main.py fit`` then ``test`` of a tiny model (sweep_support), so these tests
show the whole path: Ray Tune trial → child process → MLflow run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Run

from conftest import REPO
from skipln.sweep.cli import main
from sweep_support import EXPERIMENT, new_store

pytestmark = pytest.mark.slow

TESTS = str(Path(__file__).parent)
TINY = """model:
  class_path: sweep_support.TinyClassifier
data:
  class_path: sweep_support.Blobs
trainer:
  max_epochs: 2
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 1
"""


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray with two CPUs for the module; its workers (and their children) find sweep_support."""
    import ray

    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS, previous]))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        if previous is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = previous


@pytest.fixture
def repo(workdir: Path, local_ray: None) -> Path:
    (workdir / "sweeps").mkdir()
    (workdir / "tiny.yaml").write_text(TINY)
    new_store(workdir)
    return workdir


def grid(repo: Path, body: str) -> str:
    (repo / "sweeps" / "g.yaml").write_text("name: g\nbase: tiny.yaml\n" + body)
    return "sweeps/g.yaml"


def sweep(path: str, *args: str) -> int:
    return main(["run", path, "--main", str(REPO / "main.py"), "--quiet", *args])


def runs(repo: Path, stage: str = "result") -> list[Run]:
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    found = client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []
    return sorted((r for r in found if r.data.tags.get("sweep_stage", "result") == stage), key=lambda r: r.data.tags.get("sweep_cell", ""))


def history(repo: Path, run: Run, key: str) -> dict[int, float]:
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    return {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}


def test_a_grid_runs_two_trials_at_once_each_a_tagged_fitted_and_tested_run(repo: Path) -> None:
    path = grid(repo, "axes:\n  lr: [--model.init_args.lr=0.5, --model.init_args.lr=0.1]\nseeds: 2\n")
    assert sweep(path, "--cpus-per-trial=1") == 0
    done = runs(repo)
    assert len(done) == 4
    for run in done:
        assert run.info.status == "FINISHED"
        assert run.data.tags["sweep"] == "g" and run.data.tags["sweep_state"] == "tested"
        assert run.data.tags["sweep_cell"] == f"lr={run.data.tags['sweep.lr']}"
        assert {"val/acc", "test/acc"} <= set(run.data.metrics)
        assert run.data.params["seed_everything"] == run.data.tags["seed"]
    # Ray ran them side by side: some two runs' fit-to-test intervals overlap.
    spans = sorted((r.info.start_time, r.info.end_time) for r in done)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))


def test_a_trial_killed_mid_fit_is_retried_and_resumes_from_its_last_checkpoint(repo: Path) -> None:
    marker = repo / "died"
    path = grid(repo, "seeds: 1\n")
    # 4 steps an epoch: last.ckpt is written at step 4 (end of epoch 0); the process dies at step 6.
    args = ["--trainer.max_epochs=3", "--model.init_args.die_at_step=6", f"--model.init_args.die_marker={marker}"]
    assert sweep(path, *args) == 0
    assert marker.exists()
    (run,) = runs(repo)
    assert run.data.tags["sweep_state"] == "tested" and run.data.tags["sweep_attempts"] == "2"
    assert history(repo, run, "start_step") == {0: 0.0, 4: 4.0}  # the second fit started from step 4, not 0


def test_a_killed_driver_is_resumed_by_the_same_command_without_repeating_a_run(repo: Path) -> None:
    path = grid(repo, "axes:\n  lr: [--model.init_args.lr=0.5, --model.init_args.lr=0.1]\nseeds: 2\n")
    command = [sys.executable, "-m", "skipln.sweep", "run", path, "--main", str(REPO / "main.py"), "--quiet", "--num-cpus=2"]
    driver = subprocess.Popen(command, cwd=repo, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(r.data.tags.get("sweep_state") == "tested" for r in runs(repo)):
        time.sleep(1)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = {r.info.run_id: r.data.tags.get("sweep_state") for r in runs(repo)}
    assert "tested" in before.values() and len(before) == 4, before
    assert set(before.values()) != {"tested"}  # killed with work left

    assert sweep(path) == 0
    after = runs(repo)
    assert {r.info.run_id for r in after} == set(before)  # the same four runs, none made twice
    assert all(r.data.tags["sweep_state"] == "tested" for r in after)
    for run in after:
        if before[run.info.run_id] == "tested":
            assert run.data.tags["sweep_attempts"] == "1"  # finished before the kill: not run again


def test_a_searched_axis_picks_a_value_where_training_works_and_the_seeds_run_at_it(repo: Path) -> None:
    # SGD on the blobs: below ~1e-2 the loss hardly moves in 3 epochs; from ~0.1 it falls fast.
    path = grid(
        repo,
        "axes:\n  lr: {key: model.init_args.lr, loguniform: [1.0e-5, 3.0]}\n"
        "search: {trials: 6, metric: val/loss, mode: min, reduction_factor: 2}\nseeds: 2\n",
    )
    assert sweep(path, "--trainer.max_epochs=3") == 0
    (search,) = runs(repo, "search")
    assert search.data.tags["sweep_state"] == "searched"
    best = float(search.data.tags["sweep_value.lr"])
    assert best > 0.05
    trials = runs(repo, "trial")
    assert len(trials) == 6 and all(t.data.tags["mlflow.parentRunId"] == search.info.run_id for t in trials)
    losses = {float(t.data.tags["sweep_value.lr"]): t.data.metrics["val/loss"] for t in trials}
    assert losses[best] == min(losses.values())
    results = runs(repo)
    assert len(results) == 2
    for run in results:
        assert float(run.data.tags["sweep_value.lr"]) == best
        assert f"--model.init_args.lr={best!r}" in run.data.tags["sweep_args"]
        assert run.data.tags["sweep_state"] == "tested"


def test_a_diverging_cell_is_recorded_as_diverged_and_the_others_finish(repo: Path) -> None:
    path = grid(repo, "axes:\n  nan: {fine: --model.init_args.nan_at_step=null, blows: --model.init_args.nan_at_step=2}\nseeds: 1\n")
    assert sweep(path) == 0
    states = {r.data.tags["sweep.nan"]: (r.data.tags["sweep_state"], r.info.status) for r in runs(repo)}
    assert states == {"fine": ("tested", "FINISHED"), "blows": ("diverged", "FAILED")}


def test_a_search_whose_every_trial_diverges_is_a_result_that_is_not_searched_again(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = grid(
        repo,
        "axes:\n  nan: {fine: --model.init_args.nan_at_step=null, blows: --model.init_args.nan_at_step=2}\n"
        "  lr: {key: model.init_args.lr, grid_search: [0.1, 0.5]}\n"
        "search: {trials: 1, metric: val/loss, mode: min}\nseeds: 1\n",
    )
    assert sweep(path) == 0
    assert [(r.data.tags["sweep.nan"], r.data.tags["sweep_state"]) for r in runs(repo)] == [("fine", "tested")]
    searches = {r.data.tags["sweep_cell"]: r for r in runs(repo, "search")}
    assert searches["nan=blows"].data.tags["sweep_state"] == "diverged"
    assert "not run: nan=blows: every trial of the search of nan=blows diverged" in capsys.readouterr().out
    trials = len(runs(repo, "trial"))
    assert sweep(path) == 0  # again: nothing is searched or run
    assert len(runs(repo, "trial")) == trials
    assert sweep(path, "--dry-run") == 0
    assert "searched nan=blows: every trial diverged; its seeds are not run" in capsys.readouterr().out


def test_a_cell_whose_search_fails_stops_alone_and_the_others_run_their_seeds(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A trainer setting Lightning refuses: every trial of that cell exits with a config error.
    path = grid(
        repo,
        "axes:\n  mode: {fine: --trainer.max_epochs=1, broken: --trainer.max_epochs=-5}\n"
        "  lr: {key: model.init_args.lr, grid_search: [0.1]}\n"
        "search: {trials: 1, metric: val/loss, mode: min}\nseeds: 1\n",
    )
    assert sweep(path) == 1
    assert [(r.data.tags["sweep.mode"], r.data.tags["sweep_state"]) for r in runs(repo)] == [("fine", "tested")]
    assert "not run: mode=broken, its search failed: the search of mode=broken found no value" in capsys.readouterr().out

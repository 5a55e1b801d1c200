"""The two kinds of Ray Tune trial a sweep runs, each bound to one MLflow run.

- :func:`result_trial`: one (cell, seed) of the grid — fit, then test on the best checkpoint.
- :func:`search_trial`: one value of a cell's search — fit only, its metric reported to Ray Tune
  after every validation so ASHA can stop it early.

Both decide what to do from the run's tags each time they start, so a trial that Ray retries
after its process died resumes from ``last.ckpt`` instead of starting over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skipln.errors import SkipLNError
from skipln.run_vocabulary import (
    ATTEMPTS_TAG,
    DIVERGED,
    FAILURE_REASON_TAG,
    FAILURE_TAG,
    FIT_EXIT_TAG,
    FITTED,
    FITTING,
    SEED_TAG,
    STAGE_TAG,
    STATE_TAG,
    SWEEP_TAG,
    TEST_EXIT_TAG,
    TESTED,
    TRIAL,
    TRIAL_TAG,
)
from skipln.sweep.grid import Cell, Search, SearchAxis
from skipln.sweep.launch import Launcher
from skipln.sweep.records import Action, checkpoint_to_test, decide, diverged, run_tags, value_tags
from skipln.sweep.store import search_all

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

#: The key under which a search trial reports its metric to Ray Tune.
OBJECTIVE = "objective"


class TrialFailed(SkipLNError, RuntimeError):
    """A run's fit or test exited with an error (Ray Tune retries the trial)."""


@dataclass
class ResultRun:
    """One (cell, seed) of the grid: the config files and overrides it trains with, its run, and what this invocation does."""

    cell: Cell
    seed: int
    items: tuple[str, ...]
    run_id: str = ""  # until the run is made
    action: Action = Action.NEW


def _client(launcher: Launcher) -> MlflowClient:
    import mlflow

    return mlflow.MlflowClient(launcher.store.tracking_uri)


def result_trial(config: dict[str, Any], *, launcher: Launcher, runs: list[ResultRun], retry_diverged: bool) -> None:
    """Ray Tune trainable: bring ``runs[config["run"]]`` to ``tested`` (or ``diverged``)."""
    from ray import tune

    tune.report({"state": execute(launcher, _client(launcher), runs[config["run"]], retry_diverged)})


def execute(launcher: Launcher, client: MlflowClient, spec: ResultRun, retry_diverged: bool = False) -> str:
    """Fit (unless only the test is missing) and test one run; returns its state."""
    run = client.get_run(spec.run_id)
    checkpoints = launcher.checkpoint_dir(spec.items, spec.run_id)
    action = decide(run, has_last_checkpoint=(checkpoints / "last.ckpt").is_file(), retry_diverged=retry_diverged)
    if action is Action.SKIP:
        return run.data.tags.get(STATE_TAG, "")
    attempt = _next_attempt(client, run)
    # A diverged fit is the experiment's answer for this seed; testing weights from before the blow-up would mislead.
    if action.fits and _fit(launcher, client, run, spec.cell, spec.items, spec.seed, action, attempt) == DIVERGED:
        return DIVERGED
    ckpt = checkpoint_to_test(checkpoints, launcher.root)
    if ckpt is None:
        raise TrialFailed(f"run {spec.run_id} cannot be tested: no checkpoint in {checkpoints}")
    code = launcher.run_stage(client, spec.run_id, "test", launcher.command("test", spec.items, spec.seed, spec.run_id, ckpt), attempt)
    client.set_tag(spec.run_id, TEST_EXIT_TAG, str(code))
    if code != 0:
        raise TrialFailed(f"test of run {spec.run_id} ({spec.cell.key}, seed {spec.seed}) exited with status {code}: see the run's artifact sweep/")
    client.set_tag(spec.run_id, STATE_TAG, TESTED)
    return TESTED


def _next_attempt(client: MlflowClient, run: Run) -> int:
    attempt = int(run.data.tags.get(ATTEMPTS_TAG) or 0) + 1
    client.set_tag(run.info.run_id, ATTEMPTS_TAG, str(attempt))
    return attempt


def _fit(launcher: Launcher, client: MlflowClient, run: Run, cell: Cell, items: tuple[str, ...], seed: int, action: Action,
         attempt: int, watch: Any = None) -> str:  # fmt: skip
    """Fit the run; returns its state, ``fitted`` or ``diverged``, or raises TrialFailed (for Ray to retry)."""
    run_id = run.info.run_id
    for tag in (FAILURE_TAG, FAILURE_REASON_TAG):  # why the last attempt failed stays in its log (sweep/fit*.log)
        if tag in run.data.tags:
            client.delete_tag(run_id, tag)
    client.set_tag(run_id, STATE_TAG, FITTING)
    resume = launcher.checkpoint_dir(items, run_id) / "last.ckpt" if action is Action.RESUME else None
    code = launcher.run_stage(client, run_id, "fit", launcher.command("fit", items, seed, run_id, resume), attempt, watch)
    client.set_tag(run_id, FIT_EXIT_TAG, str(code))
    if code != 0 and not diverged(client.get_run(run_id)):
        raise TrialFailed(f"fit of run {run_id} ({cell.key}, seed {seed}) exited with status {code}: see the run's artifact sweep/")
    state = FITTED if code == 0 else DIVERGED
    client.set_tag(run_id, STATE_TAG, state)
    return state


def search_trial(config: dict[str, Any], *, launcher: Launcher, cell: Cell, items: tuple[str, ...], axes: tuple[SearchAxis, ...],
                 search: Search, seed: int, parent_run_id: str) -> None:  # fmt: skip
    """Ray Tune trainable: fit ``cell`` at the values Optuna proposed, reporting ``search.metric`` as it is logged."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    client = _client(launcher)
    run_items = items + tuple(axis.override(config[axis.axis]) for axis in axes)
    found = search_all(client, launcher.experiment_id, f"tags.{SWEEP_TAG} = '{cell.sweep}' and tags.{TRIAL_TAG} = '{trial_id}'")
    run = found[-1] if found else client.create_run(
        launcher.experiment_id,
        run_name=f"{cell.name}-" + "-".join(f"{a.axis}{a.label(config[a.axis])}" for a in axes),
        tags=run_tags(cell, run_items) | value_tags(axes, config)
        | {SEED_TAG: str(seed), STAGE_TAG: TRIAL, TRIAL_TAG: trial_id, "mlflow.parentRunId": parent_run_id},
    )  # fmt: skip
    run_id = run.info.run_id
    worst = -math.inf if search.mode == "max" else math.inf

    def report(step: int, value: float) -> None:
        tune.report({OBJECTIVE: value if math.isfinite(value) else worst, "step": step})

    action = decide(run, has_last_checkpoint=(launcher.checkpoint_dir(run_items, run_id) / "last.ckpt").is_file())
    if not action.fits:  # a restored search: this trial had finished; tell Ray Tune what it reached
        for entry in sorted(client.get_metric_history(run_id, search.metric), key=lambda m: m.step):
            report(entry.step, entry.value)
    elif _fit(launcher, client, run, cell, run_items, seed, action, _next_attempt(client, run), (search.metric, report)) == DIVERGED:
        report(-1, worst)  # so Optuna learns that this region blows up

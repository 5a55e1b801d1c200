"""Tuning a cell's search-space axes: Optuna proposes values, ASHA stops poor trials early.

Each cell is searched once, by its own Ray Tune experiment under ``<storage>/<sweep>/``: a
search interrupted with the driver is restored from there (trials that had finished are kept,
the others resume from their ``last.ckpt``). The cell's ``search`` run in MLflow holds the
trials as nested runs and, once done, the best values (tags ``sweep.<axis>`` and
``sweep_value.<axis>``, state ``searched``), which every later invocation reuses.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skipln.run_vocabulary import (
    CELL_TAG, DIVERGED, FITTED, FITTING, PRUNED, SEARCH, SEARCHED, STAGE_TAG, STATE_TAG, TRIAL_TAG, VALUE_TAG_PREFIX,
)
from skipln.sweep.grid import Cell, Grid, SweepError
from skipln.sweep.records import run_tags, sweep_runs, value_tags
from skipln.sweep.store import search_all
from skipln.sweep.trials import OBJECTIVE, search_trial

if TYPE_CHECKING:
    from mlflow.entities import Run

    from skipln.sweep.runner import Sweep


def search_run(sweep: Sweep, cell: Cell) -> Run | None:
    """The cell's ``search`` run, if it has one."""
    runs = [r for r in sweep_runs(sweep.client, sweep.launcher.experiment_id, sweep.grid.name, SEARCH) if r.data.tags.get(CELL_TAG) == cell.key]
    return runs[-1] if runs else None


class SearchDiverged(SweepError):
    """Every trial of a cell's search diverged: a result (the strategy trains at none of the values
    tried), recorded on the search run so that later invocations neither search again nor run its seeds."""

    def __init__(self, cell_key: str, run_id: str, folder: Path) -> None:
        super().__init__(
            f"every trial of the search of {cell_key} diverged, so it has no value to run its seeds at (the trials are "
            f"under run {run_id}); to search it again, e.g. over other values, delete that run "
            f"(`mlflow runs delete --run-id {run_id}`) and the folder {folder}"
        )


def search_diverged(run: Run | None) -> bool:
    """Whether the search ended with every trial diverged."""
    return run is not None and run.data.tags.get(STATE_TAG) == DIVERGED


def searched_values(run: Run | None) -> dict[str, Any] | None:
    """The best values a finished search recorded, or None if the search is not done."""
    if run is None or run.data.tags.get(STATE_TAG) != SEARCHED:
        return None
    return {key.removeprefix(VALUE_TAG_PREFIX): json.loads(value) for key, value in run.data.tags.items() if key.startswith(VALUE_TAG_PREFIX)}


def search_cell(sweep: Sweep, cell: Cell) -> dict[str, Any]:
    """The best values of the grid's search axes for ``cell``: searched now, or read from a finished search."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    grid, search = sweep.grid, sweep.grid.search
    assert search is not None
    parent = search_run(sweep, cell)
    done = searched_values(parent)
    if done is not None:
        return done
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", cell.key)
    path = sweep.storage.absolute() / f"{grid.name}-search" / name
    if search_diverged(parent):
        raise SearchDiverged(cell.key, parent.info.run_id, path)
    items = sweep.cell_items(cell)
    if parent is None:
        parent = sweep.client.create_run(sweep.launcher.experiment_id, run_name=f"{cell.name}-search", tags=run_tags(cell, items) | {STAGE_TAG: SEARCH})
    parent_id = parent.info.run_id
    trainable = tune.with_resources(
        tune.with_parameters(search_trial, launcher=sweep.launcher, cell=cell, items=items, axes=grid.search_axes,
                             search=search, seed=grid.search_seed, parent_run_id=parent_id),
        sweep.resources,
    )  # fmt: skip
    if tune.Tuner.can_restore(str(path)):
        sweep.out(f"search of {cell.key}: resuming the interrupted search in {path}")
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        sweep.out(f"search of {cell.key}: {search.trials} trials over " + ", ".join(map(str, grid.search_axes)))
        tuner = tune.Tuner(
            trainable,
            param_space={axis.axis: axis.domain() for axis in grid.search_axes},
            tune_config=tune.TuneConfig(
                metric=OBJECTIVE,
                mode=search.mode,
                search_alg=_search_algorithm(grid),
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=10**6, grace_period=search.grace_period,
                                        reduction_factor=search.reduction_factor),  # fmt: skip
                num_samples=search.trials,
                reuse_actors=False,
            ),
            run_config=sweep.run_config(name, path.parent),
        )
    results = tuner.fit()
    failed = {r.metrics.get("trial_id") for r in results if r.error is not None}
    _close_trials(sweep, parent_id, failed)
    try:
        best = results.get_best_result(metric=OBJECTIVE, mode=search.mode, scope="all")
    except RuntimeError:
        best = None
    trial_runs = search_all(sweep.client, sweep.launcher.experiment_id, _trials_of(parent_id))
    if trial_runs and all(run.data.tags.get(STATE_TAG) == DIVERGED for run in trial_runs):
        sweep.client.set_tag(parent_id, STATE_TAG, DIVERGED)
        sweep.client.set_terminated(parent_id, "FAILED")
        raise SearchDiverged(cell.key, parent_id, path)
    if best is None or OBJECTIVE not in (best.metrics or {}):
        sweep.client.set_terminated(parent_id, "FAILED")
        raise SweepError(f"the search of {cell.key} found no value: no trial reported {search.metric} (see the trial runs under run {parent_id})")
    values = {axis.axis: best.config[axis.axis] for axis in grid.search_axes}
    for key, text in value_tags(grid.search_axes, values).items():
        sweep.client.set_tag(parent_id, key, text)
    objective = best.metrics_dataframe[OBJECTIVE]
    sweep.client.log_metric(parent_id, f"best/{search.metric}", float(objective.max() if search.mode == "max" else objective.min()))
    sweep.client.set_tag(parent_id, STATE_TAG, SEARCHED)
    sweep.client.set_terminated(parent_id, "FINISHED")
    sweep.out(f"search of {cell.key}: best " + ", ".join(f"{a.axis}={a.label(values[a.axis])}" for a in grid.search_axes))
    return values


def _search_algorithm(grid: Grid) -> Any:
    """Optuna proposes the values; a ``grid_search`` axis, which Optuna cannot take, means Ray Tune's own
    variant generator: every grid value, with any other axis sampled at random."""
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    if any(axis.distribution == "grid_search" for axis in grid.search_axes):
        return BasicVariantGenerator(random_state=grid.search_seed)
    return OptunaSearch(seed=grid.search_seed)


def _trials_of(parent_id: str) -> str:
    """The MLflow filter for a search's trial runs (nested under its search run)."""
    return f"tags.mlflow.parentRunId = '{parent_id}'"


def _close_trials(sweep: Sweep, parent_id: str, failed: set[Any]) -> None:
    """Trials that ASHA stopped were killed mid-fit, their runs left RUNNING: record them as pruned.

    A trial stopped at its last report, after its fit had ended, has a finished run still marked
    ``fitting``: its fit is complete, so it is ``fitted``.
    """
    trials = _trials_of(parent_id)
    for run in search_all(sweep.client, sweep.launcher.experiment_id, f"{trials} and attributes.status = 'RUNNING'"):
        if run.data.tags.get(TRIAL_TAG) in failed:
            sweep.client.set_terminated(run.info.run_id, "FAILED")
        else:
            sweep.client.set_tag(run.info.run_id, STATE_TAG, PRUNED)
            sweep.client.set_terminated(run.info.run_id, "FINISHED")
    ended = f"{trials} and attributes.status = 'FINISHED' and tags.{STATE_TAG} = '{FITTING}'"
    for run in search_all(sweep.client, sweep.launcher.experiment_id, ended):
        sweep.client.set_tag(run.info.run_id, STATE_TAG, FITTED)

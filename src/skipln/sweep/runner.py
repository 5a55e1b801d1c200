"""The sweep driver: plans every run against the MLflow store, then hands the work to Ray Tune.

1. Every cell with search-space axes is searched (:mod:`skipln.sweep.search`), once: its best
   values are kept on the cell's ``search`` run and reused by later invocations.
2. Every (cell, seed) whose run is not yet tested becomes one Ray Tune trial
   (:func:`skipln.sweep.trials.result_trial`), placed by the resources it asks for and retried,
   resuming from ``last.ckpt``, when its process or node dies.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skipln.run_vocabulary import ARGS_TAG, CELL_TAG, CONFIG_HASH_TAG, FINGERPRINT_TAG, SEED_TAG, STATE_TAG
from skipln.sweep.grid import Cell, Grid, SweepError
from skipln.sweep.launch import Launcher
from skipln.sweep.records import config_hash, decide, fingerprint, run_tags, sweep_runs, value_tags
from skipln.sweep.trials import ResultRun, result_trial

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass
class Sweep:
    grid: Grid
    launcher: Launcher
    client: MlflowClient
    extra: tuple[str, ...] = ()
    #: What each trial asks Ray for, and how often a trial whose process died is tried again.
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0, "gpu": 0.0})
    max_retries: int = 2
    storage: Path = Path("mlruns/ray")
    accept_changed: bool = False
    retry_diverged: bool = False
    verbose: int = 1
    out: Callable[[str], None] = print

    def cell_items(self, cell: Cell, values: dict[str, Any] | None = None) -> tuple[str, ...]:
        """The config files and overrides of a cell's runs, in the order the CLI applies them."""
        searched = tuple(axis.override(values[axis.axis]) for axis in self.grid.search_axes) if values else ()
        return self.grid.items(cell) + searched + self.extra

    # -- planning --

    def plan(self, tuned: dict[str, dict[str, Any]]) -> list[ResultRun]:
        """Every (cell, seed) with its run and what to do; refuses runs made with other arguments."""
        existing = {(r.data.tags.get(CELL_TAG, ""), r.data.tags.get(SEED_TAG, "")): r
                    for r in sweep_runs(self.client, self.launcher.experiment_id, self.grid.name)}  # fmt: skip
        planned, changed, edited = [], [], []
        for cell, seed in self.grid.runs():
            items = self.cell_items(cell, tuned.get(cell.key))
            run = existing.get((cell.key, str(seed)))
            if run is None:
                planned.append(ResultRun(cell, seed, items))
                continue
            if run.data.tags.get(FINGERPRINT_TAG) != fingerprint(items):
                changed.append((cell, seed, run, items))
            last = self.launcher.checkpoint_dir(items, run.info.run_id) / "last.ckpt"
            action = decide(run, has_last_checkpoint=last.is_file(), retry_diverged=self.retry_diverged)
            planned.append(ResultRun(cell, seed, items, run.info.run_id, action))
            if run.data.tags.get(CONFIG_HASH_TAG) != self._config_hash(items):
                edited.append(planned[-1])
        if changed and not self.accept_changed:
            cell, seed, run, items = changed[0]
            raise SweepError(
                f"{len(changed)} run(s) of sweep '{self.grid.name}' were made with other arguments than this grid and "
                f"command line give now, e.g. run {run.info.run_id} ({cell.key}, seed {seed}):\n"
                f"  then: {run.data.tags.get(ARGS_TAG, '(not recorded)')}\n"
                f"  now:  {shlex.join(items)}\n"
                "Their results would not be comparable. Run the new grid under another name (--name <new name>), "
                "or pass --accept-changed to keep those runs as they are."
            )
        if edited:
            self.out(f"warning: the config files of {len(edited)} run(s) changed since they were made "
                     f"(e.g. run {edited[0].run_id}, {edited[0].cell.key}, seed {edited[0].seed}); the runs are kept as they are.")  # fmt: skip
        return planned

    def _config_hash(self, items: tuple[str, ...]) -> str:
        return config_hash(items, self.launcher.root, self.launcher.defaults)

    def create_run(self, item: ResultRun, values: dict[str, Any] | None) -> None:
        """Make the MLflow run of a (cell, seed) with the sweep's tags; its fit and test log into it."""
        searched = value_tags(self.grid.search_axes, values) if values else {}
        tags = run_tags(item.cell, item.items) | searched | {
            SEED_TAG: str(item.seed), FINGERPRINT_TAG: fingerprint(item.items), CONFIG_HASH_TAG: self._config_hash(item.items)}
        run = self.client.create_run(self.launcher.experiment_id, run_name=f"{item.cell.name}-s{item.seed}", tags=tags)
        item.run_id = run.info.run_id

    # -- running --

    def run_results(self, todo: list[ResultRun]) -> dict[str, str]:
        """Fit and test the planned runs as Ray Tune trials; returns an error message per run id that failed."""
        from ray import tune

        trainable = tune.with_parameters(result_trial, launcher=self.launcher, runs=todo, retry_diverged=self.retry_diverged)
        tuner = tune.Tuner(
            tune.with_resources(trainable, self.resources),
            param_space={"run": tune.grid_search(list(range(len(todo))))},
            # One worker process serves trial after trial: each new one would import Ray, MLflow and skipln again.
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=self.run_config(f"{self.grid.name}-results"),
        )
        errors = {}
        for result in tuner.fit():
            if result.error is not None:
                run_id = todo[result.config["run"]].run_id
                errors[run_id] = str(result.error).strip().splitlines()[-1][:300]
                if self.client.get_run(run_id).info.status == "RUNNING":  # its process was killed before it could say
                    self.client.set_terminated(run_id, "FAILED")
        return errors

    def run_config(self, name: str, storage: Path | None = None) -> Any:
        from ray import tune

        return tune.RunConfig(
            name=name,
            storage_path=str((storage or self.storage).absolute()),
            failure_config=tune.FailureConfig(max_failures=self.max_retries),
            verbose=self.verbose,
        )


def summary(sweep: Sweep, planned: list[ResultRun], errors: dict[str, str]) -> str:
    """A table of every run of the sweep: its state in the store now, and any error of this invocation."""
    rows = [("cell", "seed", "run", "state", "note")]
    for item in planned:
        run = sweep.client.get_run(item.run_id) if item.run_id else None
        state = (run.data.tags.get(STATE_TAG) or run.info.status.lower()) if run else "not run"
        rows.append((item.cell.key, str(item.seed), (item.run_id or "-")[:8], state, errors.get(item.run_id, "")))
    widths = [max(map(len, column)) for column in zip(*rows)]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    counts = Counter(row[3] for row in rows[1:])
    head = f"sweep {sweep.grid.name}: {counts['tested']} of {len(planned)} runs tested"
    others = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()) if state != "tested")
    return "\n".join([head + (f" ({others})" if others else ""), *lines])


@contextmanager
def ray_session(address: str | None, num_cpus: int | None, num_gpus: int | None, sqlite_store: bool) -> Iterator[None]:
    """Local Ray started here (or an existing cluster joined with ``address``), shut down afterwards."""
    import logging

    import ray

    if ray.is_initialized():  # already set up by the caller (a notebook, the tests)
        yield
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        if sqlite_store and len(nodes) > 1:
            raise SweepError(
                f"the Ray cluster at {address} has {len(nodes)} nodes, but the MLflow store is a SQLite file that only "
                "this machine reaches: start a tracking server on shared storage (mlflow server --backend-store-uri "
                "<database> --host 0.0.0.0 --port 5000) and pass --tracking-uri http://<host>:5000"
            )
        yield
    finally:
        ray.shutdown()

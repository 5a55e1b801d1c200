"""Sweeps: every cell of a grid of configs × every seed, one MLflow run each, resumable.

    python -m skipln.sweep run sweeps/cifar10_paper.yaml --dry-run
    python -m skipln.sweep run sweeps/cifar10_paper.yaml [--max-runs N] [--trainer.max_epochs=2 …]

A grid file names the sweep, the config files every run reads (``base``), one or more axes
(each a list of config files or ``--key=value`` overrides, one of which each run takes) and
the seeds::

    name: quickstart_resnet
    base: [configs/quickstart/resnet.yaml]
    axes:
      skip: [configs/skip/skip.yaml, configs/skip/rskip_ln2.yaml]
      lr:                                 # labels: the files' names, the overrides' values
        - --model.init_args.optimizer.init_args.lr=0.1
        - --model.init_args.optimizer.init_args.lr=0.05
      width:                              # a mapping names the choices itself
        narrow: --model.init_args.net.init_args.width=16
        wide: [--model.init_args.net.init_args.width=64, --data.init_args.batch_size=256]
    seeds: [0, 1, 2]

Each (cell, seed) is its own MLflow run, tagged ``sweep``, ``sweep_cell`` (e.g.
``lr=0.1,skip=rskip_ln2,width=wide``), ``seed`` and ``sweep.<axis>``. The runner creates the run itself,
then trains and tests in child processes (``main.py fit`` then ``main.py test`` on the best
checkpoint) that log into that run, so a run that crashes or diverges is recorded and the sweep
goes on. Run the same command again and it skips the runs that are done, tests the ones that
trained but were not tested, and retries the interrupted or failed ones (resuming from their
``last.ckpt`` where there is one). Runs go seed by seed: a sweep stopped half-way has every
cell with fewer seeds, rather than some cells with all seeds and others with none.

Paths in a grid file are relative to the directory the runner is started from (the repository
root, like ``main.py``'s ``--config``). Config files apply in order: ``base``, then the axes in
the order the file lists them, then the overrides given on the runner's command line.
"""

from __future__ import annotations

import argparse
import codecs
import hashlib
import itertools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from skipln.errors import SkipLNError
from skipln.processes import process_alive

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

# Tags the runner puts on every run of a sweep (the report reads them back).
SWEEP_TAG = "sweep"
CELL_TAG = "sweep_cell"
SEED_TAG = "seed"
AXIS_TAG_PREFIX = "sweep."
#: How far the runner got: ``fitting`` → ``fitted`` → ``tested``, or ``diverged``.
STATE_TAG = "sweep_state"
FIT_EXIT_TAG = "sweep_fit_exit"
TEST_EXIT_TAG = "sweep_test_exit"
#: Hash of the run's arguments: a grid or command line that changed is noticed.
FINGERPRINT_TAG = "sweep_fingerprint"
ARGS_TAG = "sweep_args"
#: Hash of the contents of the config files the run read (a warning, not an error, if it changed).
CONFIG_HASH_TAG = "sweep_config_hash"
ATTEMPTS_TAG = "sweep_attempts"
#: The cell's position in the grid: reports list strategies in the grid file's order.
CELL_INDEX_TAG = "sweep_cell_index"
HOST_TAG = "sweep_host"
PID_TAG = "sweep_pid"

FITTING, FITTED, TESTED, DIVERGED = "fitting", "fitted", "tested", "diverged"
#: The tag :class:`skipln.callbacks.DivergenceGuard` puts on a run it stopped, and how its value starts.
FAILURE_REASON_TAG = "failure_reason"
DIVERGED_REASON = "training diverged"

GRID_KEYS = {
    "name": "the sweep's name (letters, digits, _ . -), the value of every run's 'sweep' tag",
    "description": "free text",
    "base": "config files / --key=value overrides every run reads first",
    "axes": "a mapping axis name -> choices (a list, or a mapping label -> config file(s) / overrides)",
    "seeds": "a list of integer seeds, or a count n for seeds 0 … n-1",
}
#: What a sweep may be called (it goes into MLflow filter strings unquoted).
SWEEP_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_AXIS = re.compile(r"^[A-Za-z0-9_]+$")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
MLFLOW_LOGGER_CLASSES = ("lightning.pytorch.loggers.MLFlowLogger", "lightning.pytorch.loggers.mlflow.MLFlowLogger")
#: MLflow's limit on a tag's value is 8000 characters.
_MAX_TAG = 5000


class SweepError(SkipLNError):
    """A grid file, a sweep's command line or its MLflow store is not usable as given."""


# --- the grid ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """One value of an axis: its label and the config files / overrides it adds."""

    axis: str
    label: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class Cell:
    """One combination of choices, one per axis (in the grid file's order of axes)."""

    sweep: str
    choices: tuple[Choice, ...]
    index: int = 0

    @property
    def key(self) -> str:
        """``axis=label`` pairs sorted by axis: stable under reordering the file and adding seeds."""
        pairs = sorted((c.axis, c.label) for c in self.choices)
        return ",".join(f"{axis}={label}" for axis, label in pairs) or "default"

    @property
    def name(self) -> str:
        """A readable run-name stem: the labels in the file's order of axes."""
        return "-".join(c.label for c in self.choices) or self.sweep

    @property
    def labels(self) -> dict[str, str]:
        return {c.axis: c.label for c in self.choices}

    @property
    def items(self) -> tuple[str, ...]:
        return tuple(item for choice in self.choices for item in choice.items)


@dataclass(frozen=True)
class Grid:
    """A parsed, validated grid file."""

    name: str
    path: Path
    base: tuple[str, ...]
    axes: tuple[tuple[str, tuple[Choice, ...]], ...]
    seeds: tuple[int, ...]
    description: str = ""

    def cells(self) -> list[Cell]:
        """The cartesian product of the axes, first axis outermost."""
        combos = itertools.product(*(choices for _, choices in self.axes))
        return [Cell(self.name, combo, index) for index, combo in enumerate(combos)]

    def runs(self) -> list[tuple[Cell, int]]:
        """Every (cell, seed), seed by seed."""
        cells = self.cells()
        return [(cell, seed) for seed in self.seeds for cell in cells]

    def items(self, cell: Cell) -> tuple[str, ...]:
        return self.base + cell.items


def load_grid(path: str | os.PathLike[str], *, root: Path | None = None) -> Grid:
    """Read and validate a grid file; config paths are checked relative to ``root`` (the cwd)."""
    path = Path(path)
    root = Path.cwd() if root is None else root
    if not path.is_file():
        raise SweepError(f"grid file {path} does not exist (grids ship in sweeps/, e.g. sweeps/quickstart_resnet.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepError(f"grid file {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise SweepError(f"grid file {path} must be a mapping with keys {', '.join(GRID_KEYS)}; got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - set(GRID_KEYS))
    if unknown:
        allowed = "\n".join(f"  {key}: {meaning}" for key, meaning in GRID_KEYS.items())
        raise SweepError(f"grid file {path}: unknown key(s) {', '.join(map(repr, unknown))}; the keys are:\n{allowed}")

    name = data.get("name")
    if not isinstance(name, str) or not SWEEP_NAME.match(name):
        raise SweepError(f"grid file {path}: 'name' must be a name of letters, digits, '_', '.' or '-', got {name!r}")
    base = _items(data.get("base") or [], f"grid file {path}: 'base'", root)
    axes = _axes(data.get("axes") or {}, path, root)
    seeds = _seeds(data.get("seeds", [0]), path)
    description = data.get("description") or ""
    return Grid(name=name, path=path, base=base, axes=axes, seeds=seeds, description=str(description))


def _items(value: Any, where: str, root: Path) -> tuple[str, ...]:
    """A config file, an override, or a list of them → checked strings."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise SweepError(f"{where} must be a config file, a --key=value override or a list of them, got {value!r}")
    for item in values:
        if item.startswith("--"):
            if "=" not in item or item.startswith("--="):
                raise SweepError(f"{where}: override {item!r} must read --key=value (e.g. --trainer.max_epochs=5)")
        elif not (root / item).is_file():
            raise SweepError(f"{where}: config file {item} does not exist (paths are relative to {root})")
    return tuple(values)


def _axes(value: Any, path: Path, root: Path) -> tuple[tuple[str, tuple[Choice, ...]], ...]:
    if not isinstance(value, dict):
        raise SweepError(f"grid file {path}: 'axes' must be a mapping of axis name -> choices, got {value!r}")
    axes = []
    for axis, spec in value.items():
        where = f"grid file {path}: axis {axis!r}"
        if not isinstance(axis, str) or not _AXIS.match(axis):
            raise SweepError(f"{where}: an axis name must be letters, digits and '_'")
        if isinstance(spec, dict):
            choices = []
            for label, items in spec.items():
                if not isinstance(label, str) or _LABEL_UNSAFE.search(label):
                    raise SweepError(f"{where}: label {label!r} must be letters, digits, '_', '.', '+' or '-'")
                choices.append(Choice(axis, label, _items(items, f"{where}, choice {label!r}", root)))
        elif isinstance(spec, list):
            choices = [Choice(axis, _label(items), _items(items, where, root)) for items in spec]
        else:
            raise SweepError(f"{where} must list its choices (a list, or a mapping label -> config file(s)), got {spec!r}")
        if not choices:
            raise SweepError(f"{where} has no choices")
        seen: dict[str, Choice] = {}
        for choice in choices:
            if choice.label in seen:
                raise SweepError(
                    f"{where}: two choices have the label {choice.label!r} ({list(seen[choice.label].items)} and "
                    f"{list(choice.items)}); name them with a mapping, e.g. {axis}: {{a: …, b: …}}"
                )
            seen[choice.label] = choice
        axes.append((axis, tuple(choices)))
    return tuple(axes)


def _label(items: Any) -> str:
    """``configs/skip/rskip_ln2.yaml`` → ``rskip_ln2``; ``--model.x.lr=0.1`` → ``0.1``; a list joins with ``+``."""
    parts = [items] if isinstance(items, str) else items if isinstance(items, list) else [str(items)]
    labels = []
    for item in map(str, parts):
        labels.append(item.partition("=")[2] if item.startswith("--") else Path(item).stem)
    return _LABEL_UNSAFE.sub("_", "+".join(labels)).strip("_") or "choice"


def _seeds(value: Any, path: Path) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise SweepError(f"grid file {path}: 'seeds' as a count must be >= 1, got {value}")
        return tuple(range(value))
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    ):
        raise SweepError(f"grid file {path}: 'seeds' must be a non-empty list of integers >= 0 or a count, got {value!r}")
    if len(set(value)) != len(value):
        raise SweepError(f"grid file {path}: 'seeds' repeats a seed: {value}")
    return tuple(value)


# --- where runs are tracked ----------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """An MLflow tracking URI and experiment name."""

    tracking_uri: str
    experiment: str


def config_value(items: Iterable[str], key: str, root: Path) -> Any:
    """The value of a dotted ``key`` after applying config files and overrides in order (None if unset).

    Reads only what a sweep needs to know before a run starts (where it is tracked, where its
    checkpoints go); it does not resolve everything jsonargparse does.
    """
    found: Any = None
    for item in items:
        if item.startswith("--"):
            name, _, value = item[2:].partition("=")
            if name == key:
                found = yaml.safe_load(value)
            continue
        try:
            node: Any = yaml.safe_load((root / item).read_text())
        except (OSError, yaml.YAMLError):
            continue
        for part in key.split("."):
            node = _mlflow_logger(node) if part == "logger" and isinstance(node, dict) else node
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                break
        else:
            found = node
    return found


def _mlflow_logger(trainer: dict[str, Any]) -> dict[str, Any]:
    """The trainer with its ``logger`` narrowed to the (first) MLflow logger of a list."""
    logger = trainer.get("logger")
    if isinstance(logger, list):
        mlflow_loggers = [entry for entry in logger if isinstance(entry, dict) and entry.get("class_path") in MLFLOW_LOGGER_CLASSES]
        return {**trainer, "logger": mlflow_loggers[0]} if mlflow_loggers else {k: v for k, v in trainer.items() if k != "logger"}
    return trainer


def defaults_file(main: Path) -> Path:
    """The config file ``main.py`` reads before any other."""
    return main.resolve().parent / "configs" / "defaults.yaml"


def read_store(items: Sequence[str], root: Path, tracking_uri: str | None = None, experiment: str | None = None) -> Store:
    """The store the configs log to (``trainer.logger``'s MLflow settings), unless given explicitly."""
    uri = tracking_uri or config_value(items, "trainer.logger.init_args.tracking_uri", root)
    name = experiment or config_value(items, "trainer.logger.init_args.experiment_name", root)
    if not uri or not name:
        raise SweepError(
            f"cannot tell which MLflow store and experiment to use: no config file sets them "
            f"(trainer.logger.init_args.tracking_uri / experiment_name; read: {', '.join(items) or 'none'}); "
            "give them explicitly (--tracking-uri and --experiment; in the notebook TRACKING_URI and EXPERIMENT)"
        )
    return Store(absolute_sqlite_uri(str(uri), root), str(name))


def absolute_sqlite_uri(uri: str, root: Path) -> str:
    """``sqlite:///mlruns/mlflow.db`` → the same file by its absolute path, so every process agrees on it."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.startswith(prefix + "/"):
        return uri
    return prefix + str((root / uri.removeprefix(prefix)).absolute())


def store_exists(store: Store) -> bool:
    """False for a local SQLite store whose file is missing (so a dry run or a report creates nothing)."""
    prefix = "sqlite:///"
    return not store.tracking_uri.startswith(prefix) or Path(store.tracking_uri.removeprefix(prefix)).is_file()


def sweep_runs(client: MlflowClient, experiment_id: str, sweep: str) -> list[Run]:
    """Every active run of the experiment tagged ``sweep=<sweep>``, oldest first."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=f"tags.{SWEEP_TAG} = '{sweep}'", max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return sorted(runs, key=lambda run: run.info.start_time or 0)


# --- what to do with each run --------------------------------------------------------------


class Action(str, Enum):
    NEW = "new"  # no run yet: create it, fit, test
    RESUME = "resume"  # interrupted or failed, has last.ckpt: fit from it, test
    RESTART = "restart"  # interrupted or failed without a checkpoint: fit from scratch into the same run, test
    TEST = "test"  # fitted but not (successfully) tested
    SKIP = "skip"  # fitted and tested
    BUSY = "busy"  # a live process on this machine is running it

    @property
    def fits(self) -> bool:
        return self in (Action.NEW, Action.RESUME, Action.RESTART)

    @property
    def works(self) -> bool:
        return self not in (Action.SKIP, Action.BUSY)


def decide(run: Run | None, *, has_last_checkpoint: bool, running_here: bool, retry_diverged: bool = False) -> Action:
    """What a sweep does with the run of one (cell, seed), from its status and the runner's tags.

    A run that diverged (stopped by the DivergenceGuard) is a result, not an accident: it is
    kept as it is unless ``retry_diverged`` — retrying the same seed would diverge again.
    """
    if run is None:
        return Action.NEW
    if run.info.status == "RUNNING" and running_here:
        return Action.BUSY
    state = run.data.tags.get(STATE_TAG)
    if state == TESTED and run.info.status == "FINISHED":
        return Action.SKIP
    if state == DIVERGED and not retry_diverged:
        return Action.SKIP
    if state in (FITTED, TESTED):
        return Action.TEST
    return Action.RESUME if has_last_checkpoint else Action.RESTART


def is_running_here(run_id: str, host: str | None, pid: str | None) -> bool:
    """Whether the child process recorded for a run is alive on this machine and working on that run.

    On Linux the process's command line must name the run, so a recycled process id does not
    keep a dead run from being retried.
    """
    if host != socket.gethostname() or not pid or not pid.isdigit():
        return False
    if Path("/proc/self/cmdline").is_file():
        try:
            return run_id in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
    return process_alive(int(pid))


@dataclass
class Planned:
    """One (cell, seed) of the sweep: its run (if any), what to do, and how it went."""

    cell: Cell
    seed: int
    run: Run | None
    action: Action
    run_id: str | None = None
    fit_exit: int | None = None
    test_exit: int | None = None
    #: What happened in this invocation; ``ok`` is True once the run is fitted and tested.
    result: str = ""
    ok: bool = False


def fingerprint(items: Sequence[str]) -> str:
    """A short hash of a run's arguments (without the runner's own: seed, run id, checkpoint)."""
    return hashlib.sha256(json.dumps(list(items)).encode()).hexdigest()[:16]


def config_hash(items: Sequence[str], root: Path, defaults: Path | None) -> str:
    """A short hash of the parsed contents of the config files a run reads (comments do not count)."""
    files = ([defaults] if defaults is not None and defaults.is_file() else []) + [
        root / item for item in items if not item.startswith("--")
    ]
    contents = []
    for file in files:
        try:
            contents.append(yaml.safe_load(file.read_text()))
        except (OSError, yaml.YAMLError):
            contents.append(None)
    return hashlib.sha256(json.dumps(contents, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- running -------------------------------------------------------------------------------


@dataclass
class Sweep:
    """Runs a grid: plans every (cell, seed) against the store, then works through the plan."""

    grid: Grid
    store: Store
    main: Path
    extra: tuple[str, ...] = ()
    root: Path = field(default_factory=Path.cwd)
    python: str = sys.executable
    echo: bool = True
    accept_changed: bool = False
    retry_diverged: bool = False
    client: MlflowClient | None = None
    experiment_id: str | None = None
    out: Callable[[str], None] = print

    # -- paths and commands --

    def run_items(self, cell: Cell) -> tuple[str, ...]:
        """The config files and overrides of a run, in the order the CLI applies them."""
        return self.grid.items(cell) + self.extra

    def defaults(self) -> Path:
        return defaults_file(self.main)

    def checkpoint_dir(self, cell: Cell, run_id: str) -> Path:
        """Where the CLI's ModelCheckpoint writes: ``<default_root_dir>/<experiment id>/<run id>/checkpoints``."""
        items = [str(self.defaults()), *self.run_items(cell)]
        root_dir = config_value(items, "trainer.default_root_dir", self.root) or "."
        return self.root / str(root_dir) / str(self.experiment_id) / run_id / "checkpoints"

    def command(self, stage: str, cell: Cell, seed: int, run_id: str, ckpt_path: Path | None = None) -> list[str]:
        """``python main.py <stage> --config … --seed_everything=<seed> --trainer.logger… [--ckpt_path=…]``."""
        args: list[str] = []
        for item in self.run_items(cell):
            args += [item] if item.startswith("--") else ["--config", item]
        logger = "--trainer.logger.init_args."
        args += [
            f"--seed_everything={seed}",
            f"{logger}tracking_uri={self.store.tracking_uri}",
            f"{logger}experiment_name={self.store.experiment}",
            f"{logger}run_id={run_id}",
        ]
        if ckpt_path is not None:
            args.append(f"--ckpt_path={ckpt_path}")
        return [self.python, str(self.main), stage, *args]

    # -- planning --

    def plan(self) -> list[Planned]:
        """Every (cell, seed) with its existing run and what to do with it; refuses runs made with other arguments."""
        existing: dict[tuple[str, str], Run] = {}
        if self.client is not None and self.experiment_id is not None:
            for run in sweep_runs(self.client, self.experiment_id, self.grid.name):
                key = (run.data.tags.get(CELL_TAG, ""), run.data.tags.get(SEED_TAG, ""))
                existing[key] = run  # the newest wins if a run was duplicated by hand

        planned, changed, edited = [], [], []
        for cell, seed in self.grid.runs():
            run = existing.get((cell.key, str(seed)))
            if run is None:
                planned.append(Planned(cell, seed, None, Action.NEW))
                continue
            tags, run_id = run.data.tags, run.info.run_id
            if tags.get(FINGERPRINT_TAG) != fingerprint(self.run_items(cell)):
                changed.append((cell, seed, run))
            elif tags.get(CONFIG_HASH_TAG) != config_hash(self.run_items(cell), self.root, self.defaults()):
                edited.append((cell, seed, run))
            action = decide(
                run,
                has_last_checkpoint=(self.checkpoint_dir(cell, run_id) / "last.ckpt").is_file(),
                running_here=is_running_here(run_id, tags.get(HOST_TAG), tags.get(PID_TAG)),
                retry_diverged=self.retry_diverged,
            )
            planned.append(Planned(cell, seed, run, action, run_id=run_id))

        if changed and not self.accept_changed:
            cell, seed, run = changed[0]
            raise SweepError(
                f"{len(changed)} run(s) of sweep '{self.grid.name}' were made with other arguments than this grid and "
                f"command line give now, e.g. run {run.info.run_id} ({cell.key}, seed {seed}):\n"
                f"  then: {run.data.tags.get(ARGS_TAG, '(not recorded)')}\n"
                f"  now:  {shlex.join(self.run_items(cell))}\n"
                "Their results would not be comparable. Run the new grid under another name (--name <new name>), "
                "or pass --accept-changed to keep those runs as they are."
            )
        if edited:
            cell, seed, run = edited[0]
            self.out(
                f"warning: the config files of {len(edited)} run(s) changed since they were made "
                f"(e.g. run {run.info.run_id}, {cell.key}, seed {seed}); the runs are kept as they are."
            )
        return planned

    # -- execution --

    def execute(self, item: Planned) -> None:
        """Fit (unless only the test is missing) and test one run, recording exit codes as tags."""
        assert self.client is not None and self.experiment_id is not None
        client, cell, seed = self.client, item.cell, item.seed
        items = self.run_items(cell)
        if item.run_id is None:
            run = client.create_run(
                self.experiment_id,
                run_name=f"{cell.name}-s{seed}",
                tags={
                    SWEEP_TAG: self.grid.name,
                    CELL_TAG: cell.key,
                    CELL_INDEX_TAG: str(cell.index),
                    SEED_TAG: str(seed),
                    **{f"{AXIS_TAG_PREFIX}{axis}": label for axis, label in cell.labels.items()},
                    FINGERPRINT_TAG: fingerprint(items),
                    ARGS_TAG: shlex.join(items)[:_MAX_TAG],
                },
            )
            item.run_id = run.info.run_id
        run_id = item.run_id
        attempt = int(item.run.data.tags.get(ATTEMPTS_TAG) or 0) + 1 if item.run is not None else 1
        client.set_tag(run_id, ATTEMPTS_TAG, str(attempt))
        client.set_tag(run_id, CONFIG_HASH_TAG, config_hash(items, self.root, self.defaults()))
        checkpoints = self.checkpoint_dir(cell, run_id)

        if item.action.fits:
            if item.run is not None and FAILURE_REASON_TAG in item.run.data.tags:
                # Why the last attempt failed is in its log (sweep/fit*.log); the tags describe this attempt.
                client.delete_tag(run_id, FAILURE_REASON_TAG)
            client.set_tag(run_id, STATE_TAG, FITTING)
            resume = checkpoints / "last.ckpt" if item.action is Action.RESUME else None
            item.fit_exit = self._stage(run_id, "fit", self.command("fit", cell, seed, run_id, resume), attempt)
            client.set_tag(run_id, FIT_EXIT_TAG, str(item.fit_exit))
            if item.fit_exit != 0:
                reason = client.get_run(run_id).data.tags.get(FAILURE_REASON_TAG, "")
                if reason.startswith(DIVERGED_REASON):
                    # The experiment's answer for this seed; testing weights from before the blow-up would mislead.
                    client.set_tag(run_id, STATE_TAG, DIVERGED)
                    item.result, item.ok = "diverged (kept as a result; not tested)", True
                else:
                    item.result = f"fit failed (exit {item.fit_exit}): see the run's artifact sweep/"
                return
            client.set_tag(run_id, STATE_TAG, FITTED)

        ckpt = checkpoint_to_test(checkpoints, self.root)
        if ckpt is None:
            item.result = f"not tested: no checkpoint in {checkpoints}"
            return
        item.test_exit = self._stage(run_id, "test", self.command("test", cell, seed, run_id, ckpt), attempt)
        client.set_tag(run_id, TEST_EXIT_TAG, str(item.test_exit))
        if item.test_exit != 0:
            item.result = f"test failed (exit {item.test_exit}): see the run's artifact sweep/"
            return
        client.set_tag(run_id, STATE_TAG, TESTED)
        item.result, item.ok = f"fitted, tested {ckpt.name}", True

    def _stage(self, run_id: str, stage: str, command: list[str], attempt: int) -> int:
        """Run one child process into the run; its output goes to the console and to the run's artifacts."""
        assert self.client is not None
        client = self.client
        # RUNNING while a child works on it, so another runner on this machine leaves it alone.
        client.update_run(run_id, status="RUNNING")

        def started(pid: int) -> None:
            client.set_tag(run_id, HOST_TAG, socket.gethostname())
            client.set_tag(run_id, PID_TAG, str(pid))

        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / (f"{stage}.log" if attempt == 1 else f"{stage}-{attempt}.log")
            try:
                code = run_child(command, log, echo=self.echo, cwd=self.root, on_start=started)
            except KeyboardInterrupt:
                self._close(run_id, log, "KILLED")
                raise
            self._close(run_id, log, "FINISHED" if code == 0 else "FAILED")
        return code

    def _close(self, run_id: str, log: Path, status: str) -> None:
        """Keep the child's output with the run; end a run its child left RUNNING, or that it ended wrongly."""
        assert self.client is not None
        if log.is_file():
            self.client.log_artifact(run_id, str(log), artifact_path="sweep")
        current = self.client.get_run(run_id).info.status
        # A child killed before its logger could end the run leaves it RUNNING; one that failed after the
        # logger ended it (e.g. in teardown) leaves it FINISHED.
        if current == "RUNNING" or (status != "FINISHED" and current == "FINISHED"):
            self.client.set_terminated(run_id, status)

    def run(self, planned: list[Planned], max_runs: int | None = None) -> list[Planned]:
        """Work through the plan (at most ``max_runs`` runs that need work); returns what was done."""
        assert self.client is not None
        for item in planned:  # runs made before the runner recorded the grid's order
            if item.run is not None and CELL_INDEX_TAG not in item.run.data.tags:
                self.client.set_tag(item.run.info.run_id, CELL_INDEX_TAG, str(item.cell.index))
        todo = [item for item in planned if item.action.works]
        if max_runs is not None:
            todo = todo[:max_runs]
        for number, item in enumerate(todo, 1):
            self.out(
                f"\n[{number}/{len(todo)}] sweep {self.grid.name}: {item.cell.key}, seed {item.seed} — "
                f"{item.action.value}{f' run {item.run_id}' if item.run_id else ''}"
            )
            self.execute(item)
        return todo


def checkpoint_to_test(checkpoints: Path, root: Path) -> Path | None:
    """The best checkpoint the run's ModelCheckpoint recorded in ``last.ckpt``; else ``last.ckpt``; else None."""
    last = checkpoints / "last.ckpt"
    if not last.is_file():
        return None
    import torch  # only here: reading a checkpoint's callback state is the runner's one use of torch

    try:
        state = torch.load(last, map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # an unreadable last.ckpt: `test` on it reports what is wrong with it
        return last
    callbacks = state.get("callbacks") if isinstance(state, dict) else None
    for callback in (callbacks or {}).values():
        best = callback.get("best_model_path") if isinstance(callback, dict) else None
        if best:
            # Lightning records it as the child saw it: relative to the child's working directory.
            path = Path(best) if Path(best).is_absolute() else root / best
            if path.is_file():
                return path
    return last


def run_child(
    command: Sequence[str],
    log: Path,
    *,
    echo: bool = True,
    cwd: Path | None = None,
    on_start: Callable[[int], None] | None = None,
) -> int:
    """Run ``command``, copying its output to ``log`` (and the console); return its exit status.

    On Ctrl-C the child (which usually got the signal too) is given time to shut down
    cleanly — Lightning ends the run — and the interrupt is re-raised.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with log.open("wb") as sink, subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd
    ) as child:
        assert child.stdout is not None
        if on_start is not None:
            on_start(child.pid)
        try:
            for chunk in iter(lambda: child.stdout.read1(1 << 16), b""):  # type: ignore[union-attr]
                sink.write(chunk)
                if echo:
                    sys.stdout.write(decoder.decode(chunk))
                    sys.stdout.flush()
        except KeyboardInterrupt:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
            try:
                sink.write(child.stdout.read())
                child.wait(timeout=60)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                child.kill()
            raise
        return child.wait()


# --- the command line ----------------------------------------------------------------------


def summary(planned: Sequence[Planned], done: Sequence[Planned], grid: Grid) -> str:
    """A table of every run of the sweep and what happened to it in this invocation."""
    worked = {id(item) for item in done}
    rows = [("cell", "seed", "run", "action", "result")]
    for item in planned:
        if id(item) in worked:
            result = item.result
        elif item.action is Action.SKIP:
            result = "diverged before" if item.run and item.run.data.tags.get(STATE_TAG) == DIVERGED else "done before"
        elif item.action is Action.BUSY:
            result = f"being run by process {item.run.data.tags.get(PID_TAG) if item.run else '?'}"
        else:
            result = "not run yet"
        rows.append((item.cell.key, str(item.seed), (item.run_id or "-")[:8], item.action.value, result))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    complete = sum(item.action is Action.SKIP for item in planned) + sum(item.ok for item in done)
    failed = sum(not item.ok for item in done)
    waiting = sum(item.action.works and id(item) not in worked for item in planned)
    busy = sum(item.action is Action.BUSY for item in planned)
    diverged = sum(item.run is not None and item.run.data.tags.get(STATE_TAG) == DIVERGED for item in planned if item.action is Action.SKIP)
    diverged += sum(item.result.startswith("diverged") for item in done)
    head = f"sweep {grid.name}: {complete} of {len(planned)} runs complete" + (f" ({diverged} diverged)" if diverged else "")
    head += f"; {failed} failed in this invocation" if done else ""
    head += f"; {waiting} not run yet" + (f"; {busy} being run by another process" if busy else "")
    return "\n".join([head, *lines])


def _shard(value: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", value)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise argparse.ArgumentTypeError(f"--shard must read K/N with 1 <= K <= N (e.g. 1/2), got {value!r}")
    return int(match[1]), int(match[2])


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m skipln.sweep",
        description="Run a grid of configs × seeds, one MLflow run each; run again to resume.",
        allow_abbrev=False,
    )
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run (or resume) the sweep of a grid file",
        description="Run every (cell, seed) of a grid file that is not done yet. Arguments the runner does not "
        "know (--key=value) are passed to every run, e.g. --trainer.max_epochs=2 or --config=configs/trainer/gpu_bf16.yaml.",
        allow_abbrev=False,
    )
    run.add_argument("grid", type=Path, help="the grid file, e.g. sweeps/quickstart_resnet.yaml")
    run.add_argument("--dry-run", action="store_true", help="show what would run and how, change nothing")
    run.add_argument("--max-runs", type=int, metavar="N", help="run at most N runs that need work, then stop")
    run.add_argument("--name", help="run the grid under another sweep name (e.g. a smoke test of a big grid)")
    run.add_argument("--shard", type=_shard, metavar="K/N", help="run only every N-th run, from the K-th: N runners share a sweep")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: configs/defaults.yaml's)")
    run.add_argument("--experiment", help="MLflow experiment (default: configs/defaults.yaml's)")
    run.add_argument("--main", type=Path, default=Path("main.py"), help="the CLI entry point (default: ./main.py)")
    run.add_argument("--accept-changed", action="store_true", help="keep runs made with other arguments instead of stopping")
    run.add_argument("--retry-diverged", action="store_true", help="run again the runs that diverged (kept as results otherwise)")
    run.add_argument("--quiet", action="store_true", help="do not echo the runs' output (it is kept as the runs' artifacts)")
    return top


def overrides(extra: Sequence[str], root: Path) -> tuple[str, ...]:
    """Extra command-line arguments as grid items: ``--key=value`` (``--key value`` is joined), and
    ``--config file`` as the config file itself."""
    items: list[str] = []
    tokens = list(extra)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--") or token == "--":
            raise SweepError(
                f"unexpected argument {token!r}: arguments after the grid file are overrides for every run, "
                "e.g. --trainer.max_epochs=2 or --config=configs/trainer/gpu_bf16.yaml"
            )
        if "=" not in token:
            if not tokens or tokens[0].startswith("--"):
                raise SweepError(f"override {token!r} has no value: write {token}=<value>")
            token = f"{token}={tokens.pop(0)}"
        key, _, value = token.partition("=")
        items.append(value if key == "--config" else token)
    return _items(items, "the command line", root) if items else ()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m skipln.sweep run …``: returns 0 when every run it worked on fit and tested, 1 otherwise."""
    args, extra = parser().parse_known_args(argv)
    try:
        return _run(args, overrides(extra, Path.cwd()))
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, extra: tuple[str, ...]) -> int:
    root = Path.cwd()
    main_path = args.main if args.main.is_absolute() else root / args.main
    if not main_path.is_file():
        raise SweepError(f"{main_path} does not exist: run the sweep from the repository root, or pass --main path/to/main.py")
    if args.max_runs is not None and args.max_runs < 0:
        raise SweepError(f"--max-runs must be >= 0, got {args.max_runs}")
    grid = load_grid(args.grid, root=root)
    if args.name:
        if not SWEEP_NAME.match(args.name):
            raise SweepError(f"--name must be letters, digits, '_', '.' or '-', got {args.name!r}")
        grid = Grid(args.name, grid.path, grid.base, grid.axes, grid.seeds, grid.description)
    store = read_store([str(defaults_file(main_path)), *grid.base, *extra], root, args.tracking_uri, args.experiment)

    import mlflow  # slow to import: only once the command line is known to be good

    sweep = Sweep(grid, store, main_path, extra, root=root, echo=not args.quiet, accept_changed=args.accept_changed,
                  retry_diverged=args.retry_diverged)
    if store_exists(store) or not args.dry_run:
        sweep.client = mlflow.MlflowClient(store.tracking_uri)
        experiment = sweep.client.get_experiment_by_name(store.experiment)
        if experiment is None and not args.dry_run:
            sweep.experiment_id = sweep.client.create_experiment(store.experiment)
        elif experiment is not None:
            sweep.experiment_id = experiment.experiment_id

    print(f"sweep {grid.name}: {len(grid.cells())} cells × {len(grid.seeds)} seeds; store {store.tracking_uri}, experiment {store.experiment}")
    planned = sweep.plan()
    if args.shard:
        k, n = args.shard
        planned = [item for index, item in enumerate(planned) if index % n == k - 1]

    if args.dry_run:
        print(_dry_run(sweep, planned, args.max_runs))
        return 0
    done: list[Planned] = []
    try:
        done = sweep.run(planned, args.max_runs)
    finally:
        print("\n" + summary(planned, done, grid))
    return 0 if all(item.ok for item in done) else 1


def _dry_run(sweep: Sweep, planned: list[Planned], max_runs: int | None) -> str:
    todo = [item for item in planned if item.action.works][: max_runs if max_runs is not None else None]
    lines = [summary(planned, [], sweep.grid), "", f"would run {len(todo)}:"]
    for item in todo:
        run_id = item.run_id or "<new run>"
        lines.append(f"  {item.cell.key}, seed {item.seed} ({item.action.value}):")
        if item.action.fits:
            resume = sweep.checkpoint_dir(item.cell, run_id) / "last.ckpt" if item.action is Action.RESUME else None
            lines.append("    " + shlex.join(sweep.command("fit", item.cell, item.seed, run_id, resume)))
        lines.append("    " + shlex.join(sweep.command("test", item.cell, item.seed, run_id, Path("<best or last checkpoint>"))))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""Grid files: a sweep's configs, axes (lists of choices or search spaces) and seeds.

A grid file names the sweep, the config files every run reads (``base``), one or more axes and
the seeds::

    name: quickstart_resnet
    base: [configs/quickstart/resnet.yaml]
    axes:
      skip: [configs/skip/skip.yaml, configs/skip/rskip_ln2.yaml]   # labels: the files' names
      width:                                                         # a mapping names the choices itself
        narrow: --model.init_args.net.init_args.width=16
        wide: [--model.init_args.net.init_args.width=64, --data.init_args.batch_size=256]
      lr:                                                            # a search space, tuned per cell
        key: model.init_args.optimizer.init_args.lr
        loguniform: [1.0e-4, 1.0e-1]
    search: {trials: 8, metric: val/acc, mode: max}
    seeds: [0, 1, 2]

The list axes span the cells (their cartesian product). Search-space axes are tuned in every
cell (:mod:`skipln.sweep.search`); the seeds then run at each cell's best value.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skipln.errors import SkipLNError
from skipln.validation import is_int, is_real

GRID_KEYS = {
    "name": "the sweep's name (letters, digits, _ . -), the value of every run's 'sweep' tag",
    "description": "free text",
    "base": "config files / --key=value overrides every run reads first",
    "axes": "a mapping axis name -> choices (a list, a mapping label -> config file(s) / overrides, or a search space)",
    "search": "how search-space axes are tuned: trials, metric, mode (and grace_period, reduction_factor, seed)",
    "seeds": "a list of integer seeds, or a count n for seeds 0 … n-1",
}
#: Search-space distributions, as Ray Tune names them, with how many numbers each takes.
#: ``grid_search`` tries every value (in every repeat: ``trials`` is then how often the grid runs).
DISTRIBUTIONS = {"uniform": 2, "loguniform": 2, "randint": 2, "choice": None, "grid_search": None}
SEARCH_KEYS = {
    "trials": "how many values to try in each cell (Ray Tune's num_samples; with a grid_search axis, how often its grid runs)",
    "metric": "the metric the trials are judged by, as logged (e.g. val/acc)",
    "mode": "max or min",
    "grace_period": "ASHA: epochs every trial runs before it can be stopped early (default 1)",
    "reduction_factor": "ASHA: the fraction 1/rf of trials that goes on at each rung (default 3)",
    "seed": "the training seed of the trials (default: the grid's first seed)",
}
#: What a sweep may be called (it goes into MLflow filter strings unquoted).
SWEEP_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_AXIS = re.compile(r"^[A-Za-z0-9_]+$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


class SweepError(SkipLNError):
    """A grid file, a sweep's command line or its MLflow store is not usable as given."""


@dataclass(frozen=True)
class Choice:
    """One value of a list axis: its label and the config files / overrides it adds."""

    axis: str
    label: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class SearchAxis:
    """An axis searched in every cell: a config key and a Ray Tune distribution over its values."""

    axis: str
    key: str
    distribution: str
    args: tuple[Any, ...]

    def __str__(self) -> str:
        return f"{self.key} ~ {self.distribution}{list(self.args)}"

    def domain(self) -> Any:
        """The Ray Tune search domain (``tune.loguniform(1e-4, 1e-1)``, ``tune.choice([...])``)."""
        from ray import tune

        if self.distribution in ("choice", "grid_search"):
            return getattr(tune, self.distribution)(list(self.args))
        return getattr(tune, self.distribution)(*self.args)

    def override(self, value: Any) -> str:
        return f"--{self.key}={value}"

    @staticmethod
    def label(value: Any) -> str:
        """A short, stable text for a value: ``0.00316`` → ``0.00316``, ``1.5e-05`` → ``1.5e-05``."""
        return f"{value:.3g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Search:
    """How the search-space axes are tuned: Optuna proposes, ASHA stops the poor trials early."""

    trials: int
    metric: str
    mode: str
    grace_period: int = 1
    reduction_factor: int = 3
    seed: int | None = None


@dataclass(frozen=True)
class Cell:
    """One combination of choices, one per list axis (in the grid file's order of axes)."""

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


@dataclass(frozen=True)
class Grid:
    """A parsed, validated grid file."""

    name: str
    base: tuple[str, ...]
    axes: tuple[tuple[str, tuple[Choice, ...]], ...]
    seeds: tuple[int, ...]
    search_axes: tuple[SearchAxis, ...] = ()
    search: Search | None = None

    def cells(self) -> list[Cell]:
        """The cartesian product of the list axes, first axis outermost."""
        combos = itertools.product(*(choices for _, choices in self.axes))
        return [Cell(self.name, combo, index) for index, combo in enumerate(combos)]

    def runs(self) -> list[tuple[Cell, int]]:
        """Every (cell, seed), seed by seed: a sweep stopped half-way has every cell with fewer seeds."""
        cells = self.cells()
        return [(cell, seed) for seed in self.seeds for cell in cells]

    def items(self, cell: Cell) -> tuple[str, ...]:
        """The config files and overrides of a cell's runs: the base, then each choice's, in the order of the axes."""
        return self.base + tuple(item for choice in cell.choices for item in choice.items)

    @property
    def search_seed(self) -> int:
        return self.search.seed if self.search is not None and self.search.seed is not None else self.seeds[0]


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
    _known_keys(data, GRID_KEYS, f"grid file {path}")

    name = data.get("name")
    if not isinstance(name, str) or not SWEEP_NAME.match(name):
        raise SweepError(f"grid file {path}: 'name' must be a name of letters, digits, '_', '.' or '-', got {name!r}")
    base = check_items(data.get("base") or [], f"grid file {path}: 'base'", root)
    axes, search_axes = _axes(data.get("axes") or {}, path, root)
    seeds = _seeds(data.get("seeds", [0]), path)
    return Grid(name, base, axes, seeds, search_axes, _search(data.get("search"), path, bool(search_axes)))


def _known_keys(data: dict[Any, Any], known: dict[str, str], where: str) -> None:
    unknown = sorted(set(map(str, data)) - set(known))
    if unknown:
        allowed = "\n".join(f"  {key}: {meaning}" for key, meaning in known.items())
        raise SweepError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; the keys are:\n{allowed}")


def check_items(value: Any, where: str, root: Path) -> tuple[str, ...]:
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


def _axes(value: Any, path: Path, root: Path) -> tuple[tuple[tuple[str, tuple[Choice, ...]], ...], tuple[SearchAxis, ...]]:
    if not isinstance(value, dict):
        raise SweepError(f"grid file {path}: 'axes' must be a mapping of axis name -> choices, got {value!r}")
    axes, searched = [], []
    for axis, spec in value.items():
        where = f"grid file {path}: axis {axis!r}"
        if not isinstance(axis, str) or not _AXIS.match(axis):
            raise SweepError(f"{where}: an axis name must be letters, digits and '_'")
        if isinstance(spec, dict) and "key" in spec:
            searched.append(_search_axis(axis, spec, where))
            continue
        if isinstance(spec, dict):
            choices = []
            for label, items in spec.items():
                if not isinstance(label, str) or _LABEL_UNSAFE.search(label):
                    raise SweepError(f"{where}: label {label!r} must be letters, digits, '_', '.', '+' or '-'")
                choices.append(Choice(axis, label, check_items(items, f"{where}, choice {label!r}", root)))
        elif isinstance(spec, list):
            choices = [Choice(axis, _label(items), check_items(items, where, root)) for items in spec]
        else:
            raise SweepError(
                f"{where} must list its choices (a list, or a mapping label -> config file(s)) or be a search space "
                f"({{key: <config key>, loguniform: [low, high]}}), got {spec!r}"
            )
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
    return tuple(axes), tuple(searched)


def _search_axis(axis: str, spec: dict[str, Any], where: str) -> SearchAxis:
    key = spec["key"]
    if not isinstance(key, str) or not _KEY.match(key):
        raise SweepError(f"{where}: 'key' must be a dotted config key (e.g. model.init_args.optimizer.init_args.lr), got {key!r}")
    named = [name for name in spec if name != "key"]
    if len(named) != 1 or named[0] not in DISTRIBUTIONS:
        raise SweepError(
            f"{where}: a search space is 'key' and one distribution of {', '.join(DISTRIBUTIONS)} "
            f"(e.g. loguniform: [1.0e-4, 1.0e-1]), got {', '.join(map(str, named)) or 'none'}"
        )
    distribution, args = named[0], spec[named[0]]
    count = DISTRIBUTIONS[distribution]
    numbers = isinstance(args, list) and all(is_real(a) for a in args)
    if count is None:
        if not isinstance(args, list) or not args:
            raise SweepError(f"{where}: {distribution!r} takes a non-empty list of values, got {args!r}")
    elif not numbers or len(args) != count or not all(math.isfinite(a) for a in args) or not args[0] < args[1]:
        raise SweepError(f"{where}: {distribution!r} takes [low, high] with low < high, got {args!r}")
    elif distribution == "loguniform" and args[0] <= 0:
        raise SweepError(f"{where}: 'loguniform' needs low > 0, got {args!r}")
    return SearchAxis(axis, key, distribution, tuple(args))


def _search(value: Any, path: Path, needed: bool) -> Search | None:
    where = f"grid file {path}: 'search'"
    if value is None:
        if needed:
            raise SweepError(f"{where} is missing: a grid with a search-space axis says how to tune it, e.g. search: {{trials: 8, metric: val/acc, mode: max}}")
        return None
    if not needed:
        raise SweepError(f"{where} is given but no axis is a search space ({{key: <config key>, loguniform: [low, high]}})")
    if not isinstance(value, dict):
        raise SweepError(f"{where} must be a mapping, e.g. {{trials: 8, metric: val/acc, mode: max}}, got {value!r}")
    _known_keys(value, SEARCH_KEYS, where)
    for required in ("trials", "metric", "mode"):
        if required not in value:
            raise SweepError(f"{where} needs '{required}' ({SEARCH_KEYS[required]})")
    if not isinstance(value["metric"], str) or not value["metric"]:
        raise SweepError(f"{where}: 'metric' must name a logged metric (e.g. val/acc), got {value['metric']!r}")
    if value["mode"] not in ("max", "min"):
        raise SweepError(f"{where}: 'mode' must be max or min, got {value['mode']!r}")
    for key, least in (("trials", 1), ("grace_period", 1), ("reduction_factor", 2), ("seed", 0)):
        number = value.get(key, least)
        if not (is_int(number) and number >= least or key == "seed" and number is None):
            raise SweepError(f"{where}: '{key}' must be an integer >= {least}, got {number!r}")
    return Search(**value)  # its keys are known: Search's fields


def _label(items: Any) -> str:
    """``configs/skip/rskip_ln2.yaml`` → ``rskip_ln2``; ``--model.x.lr=0.1`` → ``0.1``; a list joins with ``+``."""
    parts = [items] if isinstance(items, str) else items if isinstance(items, list) else [str(items)]
    labels = [item.partition("=")[2] if item.startswith("--") else Path(item).stem for item in map(str, parts)]
    return _LABEL_UNSAFE.sub("_", "+".join(labels)).strip("_") or "choice"


def _seeds(value: Any, path: Path) -> tuple[int, ...]:
    if is_int(value):
        if value < 1:
            raise SweepError(f"grid file {path}: 'seeds' as a count must be >= 1, got {value}")
        return tuple(range(value))
    if not isinstance(value, list) or not value or not all(is_int(s) and s >= 0 for s in value):
        raise SweepError(f"grid file {path}: 'seeds' must be a non-empty list of integers >= 0 or a count, got {value!r}")
    if len(set(value)) != len(value):
        raise SweepError(f"grid file {path}: 'seeds' repeats a seed: {value}")
    return tuple(value)


def overrides(extra: list[str] | tuple[str, ...], root: Path) -> tuple[str, ...]:
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
    return check_items(items, "the command line", root) if items else ()

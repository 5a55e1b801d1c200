"""Where a sweep's runs are tracked: the MLflow store and experiment its configs name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from skipln.run_vocabulary import MLFLOW_LOGGER_CLASSES, SQLITE_PREFIX
from skipln.sweep.grid import SweepError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run


@dataclass(frozen=True)
class Store:
    """An MLflow tracking URI and experiment name."""

    tracking_uri: str
    experiment: str

    @property
    def is_sqlite(self) -> bool:
        return self.tracking_uri.startswith(SQLITE_PREFIX)


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
        node = read_yaml(root / item)  # an unreadable file sets nothing here: the run itself reports it
        for part in key.split("."):
            node = _mlflow_logger(node) if part == "logger" and isinstance(node, dict) else node
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                break
        else:
            found = node
    return found


def read_yaml(path: Path) -> Any:
    """A config file's contents, with the files it names as values read in; None if it cannot be read or parsed.

    A value that names a YAML file (``net: nets/resnet56.yaml``) is that file's contents to
    jsonargparse, read relative to the naming file's folder: so here too, and a composed file
    reads the same as the one it replaced.
    """
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return _read_named_files(content, path.parent)


def _read_named_files(value: Any, folder: Path) -> Any:
    if isinstance(value, dict):
        return {key: _read_named_files(item, folder) for key, item in value.items()}
    if isinstance(value, list):
        return [_read_named_files(item, folder) for item in value]
    if isinstance(value, str) and value.endswith((".yaml", ".yml")) and (folder / value).is_file():
        return read_yaml(folder / value)
    return value


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
    if not uri.startswith(SQLITE_PREFIX) or uri.startswith(SQLITE_PREFIX + "/"):
        return uri
    return SQLITE_PREFIX + str((root / uri.removeprefix(SQLITE_PREFIX)).absolute())


def store_exists(store: Store) -> bool:
    """False for a local SQLite store whose file is missing (so a dry run or a report creates nothing)."""
    return not store.is_sqlite or Path(store.tracking_uri.removeprefix(SQLITE_PREFIX)).is_file()


def search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    """Every active run of the experiment matching ``filter_string``, oldest first."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return sorted(runs, key=lambda run: run.info.start_time or 0)

"""Logging the study to MLflow: one run with the config as params, the slopes as metrics, the files as artifacts."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from skipln.analysis.gradients.config import StudyConfig
from skipln.errors import SkipLNError
from skipln.run_vocabulary import SQLITE_PREFIX


class TrackingError(SkipLNError):
    """The MLflow store cannot be reached or written."""


def flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``{"models": {"resnet": {"width": 16}}}`` → ``("models.resnet.width", "16")``."""
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from flatten(value, name)
        else:
            yield name, str(value)[:6000]  # MLflow's longest param value


def log_run(
    config: StudyConfig,
    files: Sequence[Path],
    markdown: str,
    slope_table: pd.DataFrame,
    *,
    run_name: str,
    tags: Mapping[str, str],
    tracking_uri: str,
    experiment: str,
) -> str:
    """Log the study as one MLflow run: the config as params, the slopes as metrics, every file as an artifact.

    Returns the run's id. A local SQLite store's path is made absolute and its folder created;
    a new experiment in it keeps its artifacts beside the database (``<folder>/<experiment>/``).
    """
    from mlflow.exceptions import MlflowException

    try:
        return _log_run(config, files, markdown, slope_table, run_name, tags, tracking_uri, experiment)
    except MlflowException as error:
        raise TrackingError(
            f"could not log the study to MLflow at {tracking_uri!r} (experiment {experiment!r}): {error}. The tables and "
            f"figures are written; log them later with --replot and a reachable --tracking-uri."
        ) from error


def _log_run(
    config: StudyConfig,
    files: Sequence[Path],
    markdown: str,
    slope_table: pd.DataFrame,
    run_name: str,
    tags: Mapping[str, str],
    tracking_uri: str,
    experiment: str,
) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from skipln.tracking import local_store_uri

    uri = local_store_uri(tracking_uri)
    assert uri is not None
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        location = None
        if uri.startswith(SQLITE_PREFIX):
            location = (Path(uri.removeprefix(SQLITE_PREFIX)).parent / experiment).as_uri()
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    run = client.create_run(experiment_id, run_name=run_name, tags={"study": "gradients", **tags})
    run_id = run.info.run_id
    try:
        params = [Param(k, v) for k, v in flatten(config.resolved)]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
        now = int(time.time() * 1000)
        metrics = []
        for row in slope_table.itertuples(index=False):
            for name in ("slope_per_block", "through_stack_per_block"):
                value = getattr(row, name)
                if math.isfinite(value):
                    metrics.append(Metric(f"{row.model}/{row.strategy}/{name}", float(value), now, 0))
        for start in range(0, len(metrics), 500):
            client.log_batch(run_id, metrics=metrics[start : start + 500])
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in (("summary.md", markdown), ("config.yaml", yaml.safe_dump(dict(config.resolved), sort_keys=False))):
                path = Path(tmp) / name
                path.write_text(text)
                client.log_artifact(run_id, str(path))
        for path in files:
            client.log_artifact(run_id, str(path), artifact_path="figures" if path.suffix == ".png" else "tables")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id

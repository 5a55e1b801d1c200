"""MLflow bookkeeping for runs started from the CLI.

Lightning's :class:`~lightning.pytorch.loggers.MLFlowLogger` does the logging; this module
adds what a researcher needs to compare runs: the resolved config as flat, searchable params
and as a YAML artifact, a readable run name, and a link from every checkpoint back to its
run so that ``test --ckpt_path …`` reports into the run that trained the weights.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

#: Key under which a checkpoint remembers the MLflow run that wrote it.
CHECKPOINT_RUN_KEY = "skipln_mlflow_run_id"

#: MLflow refuses longer param values.
_MAX_PARAM_VALUE = 6000


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``{"model": {"init_args": {"lr": 1}}}`` → ``("model.lr", "1")``.

    ``init_args`` levels are dropped so keys read as the user thinks of them
    (``model.net.skip.recursions``); ``class_path`` stays, so the class is searchable too.
    """
    for key, value in config.items():
        if str(key).startswith("__"):  # jsonargparse's bookkeeping (__path__, __default_config__)
            continue
        name = prefix if key == "init_args" else (f"{prefix}.{key}" if prefix else str(key))
        if isinstance(value, Mapping):
            yield from flatten_config(value, name)
        else:
            yield name, str(value)[:_MAX_PARAM_VALUE]


def mlflow_loggers(trainer: Trainer) -> list[MLFlowLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)]


def run_name(model: LightningModule, datamodule: Any) -> str:
    """``<net>-<data>-<strategy>``, e.g. ``resnet56-cifar10-rskip_ln-r2``; parts that are unknown are left out."""
    net = getattr(model, "net", None)
    parts = [
        getattr(net, "name", None),
        getattr(datamodule, "name", None),
        getattr(getattr(net, "skip", None), "tag", None),
    ]
    return "-".join(str(p) for p in parts if p) or type(model).__name__


def run_tags(model: LightningModule, datamodule: Any) -> dict[str, str]:
    net = getattr(model, "net", None)
    skip = getattr(net, "skip", None)
    tags = {
        "task": type(model).__name__,
        "net": getattr(net, "name", None),
        "data": getattr(datamodule, "name", None),
        "skip": getattr(skip, "tag", None),
    }
    return {k: str(v) for k, v in tags.items() if v is not None}


def name_runs(trainer: Trainer, model: LightningModule, datamodule: Any) -> None:
    """Give every MLflow run that has not started yet a readable name and searchable tags."""
    for logger in mlflow_loggers(trainer):
        if logger._run_id is not None:  # noqa: SLF001 - an existing run (sweep, resume, test) keeps its name
            if trainer.is_global_zero:
                existing = logger.experiment.get_run(logger._run_id).data.tags  # noqa: SLF001
                for key, value in run_tags(model, datamodule).items():
                    if key not in existing:
                        logger.experiment.set_tag(logger._run_id, key, value)  # noqa: SLF001
            continue
        tags = dict(logger.tags or {})
        tags.setdefault("mlflow.runName", run_name(model, datamodule))
        for key, value in run_tags(model, datamodule).items():
            tags.setdefault(key, value)
        logger.tags = tags


def local_store_uri(tracking_uri: str | None) -> str | None:
    """Make a local SQLite store's path absolute and create its folder.

    SQLite does not create directories, and MLflow caches one store per URI string, so a
    relative ``sqlite:///mlruns/mlflow.db`` would keep pointing at the first working
    directory of a process.
    """
    prefix = "sqlite:///"
    if not tracking_uri or not tracking_uri.startswith(prefix):
        return tracking_uri
    path = Path(tracking_uri.removeprefix(prefix)).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{prefix}{path}"


def run_id_of_checkpoint(path: str | os.PathLike[str]) -> str | None:
    """The MLflow run that wrote a checkpoint, if it was written by a skipln run."""
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except (OSError, RuntimeError):
        return None
    value = checkpoint.get(CHECKPOINT_RUN_KEY) if isinstance(checkpoint, dict) else None
    return value if isinstance(value, str) else None


class MLflowConfigCallback(SaveConfigCallback):
    """Logs the resolved config to MLflow: flat params, the YAML file, and the run id in checkpoints.

    Replaces Lightning's SaveConfigCallback, whose ``log_dir`` does not exist for an
    MLflow logger on a database store (run it with ``save_to_log_dir=False``).
    """

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        from mlflow.entities import Param  # mlflow is imported only when a run logs to it

        config = self.parser.dump(self.config, skip_none=False, format="yaml")
        flat = dict(flatten_config(yaml.safe_load(config)))
        for logger in mlflow_loggers(trainer):
            client, run_id = logger.experiment, logger.run_id
            assert run_id is not None
            existing = client.get_run(run_id).data.params
            # Params are immutable in MLflow: a run continued by `test` or a resumed `fit` adds only new keys.
            fresh = {k: v for k, v in flat.items() if k not in existing}
            params = [Param(k, v) for k, v in sorted(fresh.items())]
            for start in range(0, len(params), 100):
                client.log_batch(run_id, params=params[start : start + 100])
            with tempfile.TemporaryDirectory() as tmp:
                name = "config.yaml" if not existing else f"config-{stage}.yaml"
                path = Path(tmp) / name
                path.write_text(config)
                client.log_artifact(run_id, str(path))

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in mlflow_loggers(trainer):
            checkpoint[CHECKPOINT_RUN_KEY] = logger.run_id
            return

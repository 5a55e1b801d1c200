"""MLflow bookkeeping for runs started from the CLI.

Lightning's :class:`~lightning.pytorch.loggers.MLFlowLogger` does the logging; this module
adds what a researcher needs to compare runs: the resolved config as flat, searchable params
and as a YAML artifact, a readable run name, and a link from every checkpoint back to its
run so that ``test --ckpt_path …`` reports into the run that trained the weights.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from skipln import compat
from skipln.checkpoints import read_checkpoint
from skipln.errors import ConfigError
from skipln.run_vocabulary import RUN_NAME_TAG, SERVER_URI_PREFIXES, SQLITE_PREFIX, SWEEP_TAG

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


def run_tags(model: LightningModule, datamodule: Any) -> dict[str, str]:
    """The searchable tags ``task``, ``net``, ``data`` and ``skip`` (the strategy's tag), those that are known."""
    net = getattr(model, "net", None)
    tags = {
        "task": type(model).__name__,
        "net": getattr(net, "name", None),
        "data": getattr(datamodule, "name", None),
        "skip": getattr(getattr(net, "skip", None), "tag", None),
    }
    return {k: str(v) for k, v in tags.items() if v is not None}


def _name_parts(model: LightningModule, datamodule: Any, keys: tuple[str, ...] = ("net", "data", "skip")) -> str:
    tags = run_tags(model, datamodule)
    return "-".join(tags[key] for key in keys if tags.get(key))


def run_name(model: LightningModule, datamodule: Any) -> str:
    """``<net>-<data>-<strategy>``, e.g. ``resnet56-cifar10-rskip_ln-r2``; parts that are unknown are left out."""
    return _name_parts(model, datamodule) or type(model).__name__


def sweep_run_name(name: str, model: LightningModule, datamodule: Any) -> str:
    """A sweep's run name (its cell's labels and seed, ``rskip_ln2-s0``) led by the net and data, as
    every other run's: ``resnet20-fashion_mnist-rskip_ln2-s0``; unchanged if it already is."""
    prefix = _name_parts(model, datamodule, ("net", "data"))
    return name if not prefix or name.startswith(f"{prefix}-") else f"{prefix}-{name}"


def name_runs(trainer: Trainer, model: LightningModule, datamodule: Any) -> None:
    """Give every MLflow run that has not started yet a readable name and searchable tags."""
    for logger in mlflow_loggers(trainer):
        run_id = compat.logger_given_run_id(logger)
        if run_id is not None:  # an existing run (resume, test) keeps its name; a sweep's gets the net and data
            if trainer.is_global_zero:
                existing = logger.experiment.get_run(run_id).data.tags
                for key, value in run_tags(model, datamodule).items():
                    if key not in existing:
                        logger.experiment.set_tag(run_id, key, value)
                name = existing.get(RUN_NAME_TAG)
                if SWEEP_TAG in existing and name and (qualified := sweep_run_name(name, model, datamodule)) != name:
                    logger.experiment.set_tag(run_id, RUN_NAME_TAG, qualified)
            continue
        # Tags the config gave the logger win.
        logger.tags = {RUN_NAME_TAG: run_name(model, datamodule), **run_tags(model, datamodule), **(logger.tags or {})}


def local_store_uri(tracking_uri: str | None) -> str | None:
    """Make a local SQLite store's path absolute and create its folder.

    SQLite does not create directories, and MLflow caches one store per URI string, so a
    relative ``sqlite:///mlruns/mlflow.db`` would keep pointing at the first working
    directory of a process.
    """
    if not tracking_uri or not tracking_uri.startswith(SQLITE_PREFIX):
        return tracking_uri
    path = Path(tracking_uri.removeprefix(SQLITE_PREFIX)).absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(_unwritable_store(path, error)) from error
    return f"{SQLITE_PREFIX}{path}"


#: Seconds a tracking server gets to answer the start-up check (MLflow's own requests retry for minutes).
SERVER_CHECK_TIMEOUT_S = 10.0


def prepare_tracking_store(tracking_uri: str | None, experiment_name: str, artifact_location: str | None = None) -> str | None:
    """Check at start-up that runs can be logged to ``tracking_uri``, and make its experiment exist.

    Returns the URI to use (a local store's path made absolute). A local SQLite store must be
    writable; it is created, and the experiment in it, by one process at a time (a file lock
    beside the database), so that several runs started at once on a fresh store do not race
    to create the same tables or experiment. A tracking server must answer an HTTP request
    within :data:`SERVER_CHECK_TIMEOUT_S`: MLflow retries a refused connection with back-off
    for minutes (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``), which
    stays so for a server that drops out during a run, but a wrong address is reported at once.

    Raises:
        ConfigError: the store cannot be written or the server cannot be reached, with the fix.
    """
    uri = local_store_uri(tracking_uri)
    if uri is None:
        return None
    if uri.startswith(SQLITE_PREFIX):
        path = Path(uri.removeprefix(SQLITE_PREFIX))
        _check_writable(path)
        with _store_lock(path):
            _ensure_experiment(uri, experiment_name, artifact_location, store=path)
    elif uri.startswith(SERVER_URI_PREFIXES):
        check_server_reachable(uri)
        _ensure_experiment(uri, experiment_name, artifact_location, store=None)
    return uri


def check_writable_folder(folder: str | os.PathLike[str], setting: str) -> None:
    """Create ``folder`` if needed and write a scratch file in it; a ConfigError naming ``setting`` if that fails.

    A real write, not ``os.access``: that answers yes to root on a read-only mount.
    """
    path = Path(folder).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ConfigError(
            f"cannot write to {path} ({_reason(error, with_path=False)}), the folder {setting} names: make it writable, "
            f"or set {setting} to a writable folder"
        ) from error


def ping_server(uri: str, timeout: float) -> None:
    """One HTTP request to the tracking server's ``/health``; any answer counts (proxies and TLS settings as MLflow uses them).

    Raises:
        requests.RequestException: no answer within ``timeout`` seconds, or no connection.
    """
    import requests  # a dependency of mlflow

    requests.get(f"{uri.rstrip('/')}/health", timeout=timeout, stream=True).close()


def check_server_reachable(uri: str) -> None:
    """:func:`ping_server` at start-up, a ConfigError with the fix if the server does not answer."""
    import requests  # a dependency of mlflow

    try:
        ping_server(uri, SERVER_CHECK_TIMEOUT_S)
    except requests.RequestException as error:
        reason = type(error).__name__
        if isinstance(error, requests.ConnectionError):
            reason = "connection refused or host unknown"
        elif isinstance(error, requests.Timeout):
            reason = f"no answer within {SERVER_CHECK_TIMEOUT_S:g} s"
        raise ConfigError(
            f"cannot reach the MLflow tracking server at {uri} ({reason}): start it (`mlflow server --host <host> "
            "--port <port>`) or correct trainer.logger.init_args.tracking_uri; to log locally instead, set "
            f"it to {SQLITE_PREFIX}mlruns/mlflow.db"
        ) from error


def _check_writable(database: Path) -> None:
    """The store's folder takes new files (SQLite writes a journal beside the database) and the database opens for writing."""
    check_writable_folder(database.parent, "trainer.logger.init_args.tracking_uri")
    if database.exists():
        try:
            with database.open("r+b"):
                pass
        except OSError as error:
            raise ConfigError(_unwritable_store(database, error)) from error


def _unwritable_store(database: Path, error: OSError) -> str:
    return (
        f"cannot write the MLflow store {database} ({_reason(error)}): make it writable, or log to another store "
        f"with --trainer.logger.init_args.tracking_uri {SQLITE_PREFIX}<a writable folder>/mlflow.db"
    )


def _reason(error: OSError, with_path: bool = True) -> str:
    """``permission denied: /x/mlruns``; a path in the way of a folder is named as such."""
    if isinstance(error, FileExistsError) and error.filename:
        return f"{error.filename} is a file, not a folder"
    if isinstance(error, NotADirectoryError) and error.filename:
        return f"part of the path {error.filename} is a file, not a folder"
    reason = (error.strerror or str(error)).lower()
    return f"{reason}: {error.filename}" if error.filename and with_path else reason


@contextmanager
def _store_lock(database: Path) -> Iterator[None]:
    """An exclusive lock on ``<database>.lock``, held while the store's tables and experiment are created."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent first runs may race, as with MLflow alone
        yield
        return
    with database.with_name(database.name + ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_experiment(uri: str, name: str, artifact_location: str | None, store: Path | None) -> None:
    """Create the experiment as MLFlowLogger would (same name and artifact location), unless it exists.

    MLFlowLogger looks the experiment up and creates it if missing; two runs starting together
    would both try to create it, and the second fail. Another process may still win the race
    against a server: then its experiment is used.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        client = MlflowClient(uri)  # a new SQLite store gets its tables here
        if client.get_experiment_by_name(name) is None:
            try:
                client.create_experiment(name, artifact_location=artifact_location)
            except MlflowException:
                if client.get_experiment_by_name(name) is None:
                    raise
    except (MlflowException, SQLAlchemyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if store is None:
            raise ConfigError(
                f"the MLflow tracking server at {uri} answered with an error ({first_line[:300]}): check that the address "
                "is an MLflow server's, and your credentials (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD)"
            ) from error
        raise ConfigError(
            f"cannot use the MLflow store {store} ({first_line}): check that it is an MLflow SQLite database you "
            f"can write, or log to another store with --trainer.logger.init_args.tracking_uri "
            f"{SQLITE_PREFIX}<a writable folder>/mlflow.db"
        ) from error


def run_id_of_checkpoint(path: str | os.PathLike[str]) -> str | None:
    """The MLflow run that wrote a checkpoint, if it was written by a skipln run."""
    value = (read_checkpoint(path) or {}).get(CHECKPOINT_RUN_KEY)
    return value if isinstance(value, str) else None


class MLflowConfigCallback(SaveConfigCallback):
    """Logs the resolved config to MLflow: flat params, the YAML file, and the run id in checkpoints.

    Replaces Lightning's SaveConfigCallback, whose ``log_dir`` does not exist for an
    MLflow logger on a database store (run it with ``save_to_log_dir=False``).

    ``data_values`` names attributes of the data module whose values the CLI links into the
    model (``num_classes``, ``in_channels``): linked keys are not part of the dumped config, so
    they are logged as params ``data.<name>`` from the data module itself.
    """

    def __init__(self, *args: Any, data_values: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_values = tuple(data_values)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        from mlflow.entities import Param  # mlflow is imported only when a run logs to it

        config = self.parser.dump(self.config, skip_none=False, format="yaml")
        flat = dict(flatten_config(yaml.safe_load(config)))
        for name in self.data_values:
            value = getattr(trainer.datamodule, name, None)
            if value is not None:
                flat.setdefault(f"data.{name}", str(value))
        for logger in mlflow_loggers(trainer):
            client, run_id = logger.experiment, logger.run_id
            assert run_id is not None
            existing = client.get_run(run_id).data.params
            # Params are immutable in MLflow: a run continued by `test` or a resumed `fit` adds only new keys.
            fresh = {k: v for k, v in flat.items() if k not in existing}
            # MLflow's client splits the params into the batches its store takes (100 each).
            client.log_batch(run_id, params=[Param(k, v) for k, v in sorted(fresh.items())])
            client.log_text(run_id, config, "config.yaml" if not existing else f"config-{stage}.yaml")

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in mlflow_loggers(trainer):
            checkpoint[CHECKPOINT_RUN_KEY] = logger.run_id
            return

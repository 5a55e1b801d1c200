"""The command line: ``python main.py fit|validate|test|predict --config …`` (LightningCLI).

Model and data are given in subclass mode (``class_path``/``init_args``), so any task,
network, strategy or data module of the package — or of the user's own package — is named
in YAML. ``configs/defaults.yaml`` sets what every run shares (MLflow tracking under
``mlruns/``, checkpoints, LR monitoring); the experiment files only say what differs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from skipln.errors import find_user_error
from skipln.tracking import MLflowConfigCallback, local_store_uri, name_runs, run_id_of_checkpoint

SUBCOMMANDS = ("fit", "validate", "test", "predict")
MLFLOW_LOGGER = "lightning.pytorch.loggers.MLFlowLogger"


class SkipLNCLI(LightningCLI):
    """LightningCLI with MLflow bookkeeping: config as params, readable run names, test into the training run."""

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        logger = config.trainer.get("logger")
        for entry in logger if isinstance(logger, list) else [logger]:
            if not _is_mlflow(entry):
                continue
            init_args = entry.init_args
            init_args.tracking_uri = local_store_uri(init_args.get("tracking_uri"))
            # A checkpoint written by a skipln run knows its MLflow run: continue that run, so
            # `test --ckpt_path …` puts BLEU/accuracy beside the training curves.
            ckpt_path = config.get("ckpt_path")
            if init_args.get("run_id") is None and ckpt_path and Path(ckpt_path).is_file():
                init_args.run_id = run_id_of_checkpoint(ckpt_path)

    def after_instantiate_classes(self) -> None:
        name_runs(self.trainer, self.model, self.datamodule)


def _is_mlflow(entry: Any) -> bool:
    class_path = getattr(entry, "class_path", None) if entry is not None else None
    return class_path in (MLFLOW_LOGGER, "lightning.pytorch.loggers.mlflow.MLFlowLogger")


def cli_main(args: Sequence[str] | None = None, default_config_files: Sequence[str | Path] = ()) -> SkipLNCLI | None:
    """Run the CLI; errors the user can fix are printed as one message, without a traceback."""
    defaults = [str(p) for p in default_config_files if Path(p).is_file()]
    try:
        return SkipLNCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=MLflowConfigCallback,
            save_config_kwargs={"save_to_log_dir": False},
            parser_kwargs={cmd: {"default_config_files": defaults} for cmd in SUBCOMMANDS},
            auto_configure_optimizers=False,
            args=list(args) if args is not None else None,
        )
    except Exception as error:
        user_error = find_user_error(error)
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr)
        raise SystemExit(user_error.exit_code) from None

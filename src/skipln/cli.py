"""The command line: ``python main.py fit|validate|test|predict --config …`` (LightningCLI).

Model and data are given in subclass mode (``class_path``/``init_args``), so any task,
network, strategy or data module of the package — or of the user's own package — is named
in YAML. ``configs/defaults.yaml`` sets what every run shares (MLflow tracking under
``mlruns/``, checkpoints, LR monitoring); the experiment files only say what differs.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentError
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from skipln import compat
from skipln.callbacks import DivergenceGuard
from skipln.checkpoint_io import check_checkpoint
from skipln.checkpoints import option_values, with_checkpoint_config
from skipln.errors import ConfigError, explain_parser_error, explain_yaml_error, find_user_error
from skipln.fit_records import fit_runs
from skipln.gradient_monitor import GradientMonitor
from skipln.resumable_runs import Resumable, find_last_checkpoint
from skipln.resume import LOST_PROCESS, TRACKING_OUTAGE, ResumeState
from skipln.run_summary import fit_summary, predict_summary, print_summary, test_summary
from skipln.run_vocabulary import MLFLOW_LOGGER_CLASSES
from skipln.tracking import MLflowConfigCallback, check_writable_folder, flatten_config, name_runs, prepare_tracking_store, run_id_of_checkpoint
from skipln.validation import is_real

SUBCOMMANDS = ("fit", "validate", "test", "predict")
#: Callbacks a run has one of: a later one (from the command line) replaces the default.
SINGLE_CALLBACKS: tuple[type[Callback], ...] = (DivergenceGuard, ResumeState, GradientMonitor)
#: Values the data determines, set in the model from the instantiated data module (``source → target``).
#: A link whose data module lacks the attribute, or whose model lacks the argument, is skipped; a
#: value written in YAML for a target is replaced by the data's.
DATA_LINKS: tuple[tuple[str, str], ...] = (
    ("data.num_classes", "model.init_args.num_classes"),
    ("data.num_classes", "model.init_args.net.init_args.num_classes"),
    ("data.in_channels", "model.init_args.net.init_args.in_channels"),
    # The tokenizer's size: reading it trains (or loads) the tokenizer when the classes are built.
    ("data.vocab_size", "model.init_args.net.init_args.vocab_size"),
)


class SkipLNCLI(LightningCLI):
    """LightningCLI with MLflow bookkeeping: config as params, readable run names, test into the training run."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # On instantiation: the data module is built first, and reads its classes and channels from the data.
        for source, target in DATA_LINKS:
            parser.link_arguments(source, target, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        logger = config.trainer.get("logger")
        for entry in logger if isinstance(logger, list) else [logger]:
            if getattr(entry, "class_path", None) not in MLFLOW_LOGGER_CLASSES:
                continue
            init_args = entry.init_args
            # Fails fast, with the fix, on a store that cannot be written or a server that does not answer.
            init_args.tracking_uri = prepare_tracking_store(
                init_args.get("tracking_uri"), init_args.get("experiment_name") or "lightning_logs", init_args.get("artifact_location")
            )
            # A checkpoint written by a skipln run knows its MLflow run: continue that run, so
            # `test --ckpt_path …` puts BLEU/accuracy beside the training curves.
            ckpt_path = config.get("ckpt_path")
            if self.subcommand == "fit" and ckpt_path == "last":
                # Lightning looks for "last" in this run's checkpoint folder, which is new in every process.
                resumable = self._resolve_last(config, init_args)
                config.ckpt_path, init_args.run_id = str(resumable.checkpoint), resumable.run_id
            elif init_args.get("run_id") is None and ckpt_path and Path(ckpt_path).is_file():
                init_args.run_id = run_id_of_checkpoint(ckpt_path)
        root = config.trainer.get("default_root_dir")
        if self.subcommand == "fit" and root and "://" not in str(root):
            # Checkpoints go there: find out now, not when the first epoch ends.
            check_writable_folder(root, "trainer.default_root_dir")

    def _resolve_last(self, config: Any, init_args: Any) -> Resumable:
        """The unfinished run of this config and its newest checkpoint (see :func:`skipln.resumable_runs.find_last_checkpoint`)."""
        import mlflow
        import yaml

        flat = dict(flatten_config(yaml.safe_load(self._parser(self.subcommand).dump(config, skip_none=False))))
        return find_last_checkpoint(
            mlflow.MlflowClient(tracking_uri=init_args.get("tracking_uri")),
            init_args.get("experiment_name") or "lightning_logs",
            flat,
            config.trainer.get("default_root_dir") or ".",
            run_id=init_args.get("run_id"),
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # Kept to tell an interrupted run how to resume (ResumeState's `resume_command` tag).
        self.argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else sys.argv[1:]
        # `test|predict --ckpt_path X` takes the model and data from X unless the options say otherwise.
        given = with_checkpoint_config(self.argv) if args is None or isinstance(args, (list, tuple)) else self.argv
        args = given if given != self.argv else args
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as error:  # jsonargparse's many-line message, as one line
            subcommand = next((word for word in self.argv if word in SUBCOMMANDS), None)
            help_command = " ".join(filter(None, [parser.prog, subcommand, "--help"]))
            defaults = self.parser_kwargs.get(subcommand, {}).get("default_config_files", []) if subcommand else []
            # Of a config file that is not YAML jsonargparse says "<unicode string>": name the file.
            broken = explain_yaml_error([*defaults, *option_values(self.argv, "--config")]) if "Problems parsing config" in str(error) else None
            raise ConfigError(broken or explain_parser_error(str(error), _accepted_options(parser, subcommand), help_command)) from error
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            # Before LightningCLI reads its hyperparameters and before a run starts: a damaged file, said so in one line.
            check_checkpoint(ckpt_path)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # Before the Trainer exists: it refuses two stateful callbacks of one class.
        callbacks = kwargs.get("callbacks", self._get(self.config_init, "trainer", default={}).get("callbacks"))
        if callbacks is not None:
            kwargs["callbacks"] = keep_last_of_each(callbacks if isinstance(callbacks, list) else [callbacks], SINGLE_CALLBACKS)
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as error:  # Lightning's check of a trainer setting (`max_epochs` -5)
            raise ConfigError(f"trainer: {error}") from error

    def after_instantiate_classes(self) -> None:
        check_optimizer(self.model)
        name_runs(self.trainer, self.model, self.datamodule)
        for callback in self.trainer.callbacks:
            if isinstance(callback, ResumeState):
                callback.command = getattr(self, "argv", None)

    def after_fit(self) -> None:
        print_summary(self.trainer, fit_summary(self.trainer))

    def after_validate(self) -> None:
        print_summary(self.trainer, test_summary(self.trainer, "val"))

    def after_test(self) -> None:
        print_summary(self.trainer, test_summary(self.trainer))

    def after_predict(self) -> None:
        print_summary(self.trainer, predict_summary(self.trainer))

    def fit(self, model: LightningModule, **kwargs: Any) -> None:
        """``trainer.fit``; a fit stopped by SIGTERM, Ctrl+C or a lost DDP process ends its MLflow run KILLED, not FAILED.

        Lightning ends the run FAILED and, on SIGTERM, exits with status 0; the run was stopped, not
        broken, and a caller (a scheduler, the sweep runner) must not take it for finished: the
        process exits with :meth:`ResumeState.exit_code`.
        """
        try:
            self.trainer.fit(model, **kwargs)
        except BaseException:
            resume = next((c for c in self.trainer.callbacks if isinstance(c, ResumeState) and c.interruption), None)
            if resume is None:
                raise
            code = resume.exit_code(self.trainer.global_rank)
            if resume.interruption == TRACKING_OUTAGE:
                # The run stays RUNNING on the unreachable server. Exit now: at a normal exit MLflow's
                # queue would retry its unsent batches for minutes (the journal has them).
                print(f"error: {resume.message}", file=sys.stderr, flush=True)
                sys.stdout.flush()
                os._exit(code)
            for client, run_id in fit_runs(self.trainer):
                client.set_terminated(run_id, "KILLED")
            if resume.interruption == LOST_PROCESS and resume.message:
                print(f"error: {resume.message}", file=sys.stderr)
            raise SystemExit(code) from None


#: Messages other libraries print at start-up that a user of skipln cannot act on.
FOREIGN_NOTICES = (
    # Lightning's advertisement for its cloud logger and model registry, on every run.
    r"💡 Tip: ",
)
FOREIGN_WARNINGS = (
    # Raised inside Lightning's own pytree helper by newer torch (Lightning 2.6 with torch >= 2.10); not our call.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(re.match(pattern, message) for pattern in FOREIGN_NOTICES)


def quiet_foreign_notices() -> None:
    """Silence the start-up messages of :data:`FOREIGN_NOTICES` and :data:`FOREIGN_WARNINGS`; nothing else."""
    lightning_info = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropNotices) for f in lightning_info.filters):
        lightning_info.addFilter(_DropNotices())
    for pattern in FOREIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def check_optimizer(model: LightningModule) -> None:
    """Build the task's optimizer once on a probe parameter: torch checks its arguments (a negative lr) only then.

    Otherwise the mistake shows in ``configure_optimizers``, after the run began, as a traceback.
    """
    optimizer = getattr(model, "optimizer", None)
    if not callable(optimizer):
        return
    try:
        optimizer([torch.nn.Parameter(torch.zeros(1))])
    except ValueError as error:
        # torch's messages name the quantity ("Invalid learning rate: -1.0"), not the argument: name it for the user.
        given = getattr(optimizer, "keywords", {}) or {}
        negative = [k for k, v in given.items() if is_real(v) and v < 0]
        where = f"optimizer.init_args.{negative[0]}" if len(negative) == 1 else "optimizer"
        raise ConfigError(f"model.init_args.{where}: {error}: give a valid value") from error


def keep_last_of_each(callbacks: list[Callback], classes: tuple[type[Callback], ...]) -> list[Callback]:
    """``callbacks`` with only the last instance of each of ``classes``.

    The defaults configure one DivergenceGuard and one ResumeState; the command line can only
    append to a list (``--trainer.callbacks+=``), so a second one given there replaces the
    default instead of running beside it: ``--trainer.callbacks+=skipln.callbacks.DivergenceGuard
    --trainer.callbacks.on_nonfinite=skip``.
    """
    last = {cls: max((i for i, c in enumerate(callbacks) if isinstance(c, cls)), default=-1) for cls in classes}
    return [c for i, c in enumerate(callbacks) if all(not isinstance(c, cls) or i == last[cls] for cls in classes)]


def _accepted_options(parser: LightningArgumentParser, subcommand: str | None) -> list[str]:
    """The options (``--trainer.max_epochs``) and config keys (``trainer.max_epochs``) of a subcommand."""
    parsers = [parser]
    for action in compat.parser_actions(parser):
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict) and subcommand in choices:
            parsers.append(choices[subcommand])
    return [name for each in parsers for action in compat.parser_actions(each) for name in (*action.option_strings, action.dest)]


def cli_main(args: Sequence[str] | None = None, default_config_files: Sequence[str | Path] = ()) -> SkipLNCLI | None:
    """Run the CLI; errors the user can fix are printed as one message, without a traceback."""
    quiet_foreign_notices()
    defaults = [str(p) for p in default_config_files if Path(p).is_file()]
    linked = list(dict.fromkeys(source.removeprefix("data.") for source, _ in DATA_LINKS))  # logged as params data.<name>
    try:
        return SkipLNCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=MLflowConfigCallback,
            save_config_kwargs={"save_to_log_dir": False, "data_values": linked},
            # Parse errors are raised, not printed with the usage: SkipLNCLI.parse_arguments makes them one line.
            parser_kwargs={"exit_on_error": False, **{cmd: {"default_config_files": defaults} for cmd in SUBCOMMANDS}},
            auto_configure_optimizers=False,
            args=list(args) if args is not None else None,
        )
    except Exception as error:
        user_error = find_user_error(error)
        if user_error is None and isinstance(error, ArgumentError):  # raised after parsing (a checkpoint's hparams)
            user_error = ConfigError(explain_parser_error(str(error)))
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr)
        raise SystemExit(user_error.exit_code) from None

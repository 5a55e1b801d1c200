"""What a finished ``fit``, ``test`` or ``predict`` prints last: which run it was, what it reached, what next.

Without it a fit ends on a progress bar, and the MLflow run, the best score and the checkpoints
have to be found by hand (the bar's ``v_num`` shows four characters of the run id).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint

from skipln.tracking import mlflow_loggers

#: The command that runs this project's CLI, as a user types it.
COMMAND = "python main.py"


def fit_summary(trainer: Trainer) -> list[str]:
    """The run, its best monitored score, its checkpoints, and the command that tests it."""
    lines = _run_lines(trainer, "fit")
    best_path, last_path = "", ""
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        if callback.monitor and callback.best_model_score is not None:
            lines.append(f"  best {callback.monitor}: {float(callback.best_model_score):.6g}")
        if callback.best_model_path:
            best_path = best_path or callback.best_model_path
            lines.append(f"  best checkpoint: {callback.best_model_path}")
        if callback.last_model_path:
            last_path = last_path or callback.last_model_path
            lines.append(f"  last checkpoint: {callback.last_model_path}")
    tested = best_path or last_path
    if tested:
        # The checkpoint holds the model's and the data's config, and knows its run: nothing else is needed.
        lines.append(f"  test it: {COMMAND} test --ckpt_path {shlex.quote(str(tested))}")
    return lines


def test_summary(trainer: Trainer, stage: str = "test") -> list[str]:
    """The run the results went into, and the results."""
    metrics = sorted((k, v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{stage}/"))
    return _run_lines(trainer, stage) + [f"  {name}: {float(value):.6g}" for name, value in metrics]


def predict_summary(trainer: Trainer) -> list[str]:
    """The files the prediction writers wrote, and how many lines each has."""
    lines = _run_lines(trainer, "predict")
    for callback in trainer.callbacks:
        path = getattr(callback, "output_path", None)
        if isinstance(callback, BasePredictionWriter) and path is not None and Path(path).is_file():
            with Path(path).open("rb") as file:
                count = sum(1 for _ in file)
            lines.append(f"  wrote {path} ({count:,} lines)")
    return lines


def print_summary(trainer: Trainer, lines: list[str]) -> None:
    """Print on the global-zero process only, after Lightning's own output."""
    if trainer.is_global_zero and lines:
        print("\n".join(lines), flush=True)


def _run_lines(trainer: Trainer, stage: str) -> list[str]:
    loggers = [logger for logger in mlflow_loggers(trainer) if logger.run_id is not None]
    if not loggers:
        return [f"{stage} done (no MLflow logger)"]
    lines = []
    for logger in loggers:
        client = logger.experiment
        try:
            run_name = client.get_run(logger.run_id).info.run_name
            experiment = client.get_experiment(logger.experiment_id).name
        except Exception:  # a summary must not turn a finished run into a failed command
            run_name, experiment = None, logger.experiment_id
        name = f" '{run_name}'" if run_name else ""
        lines.append(f"{stage} done: MLflow run{name} {logger.run_id}, experiment '{experiment}' in {client.tracking_uri}")
    return lines


__all__ = ["fit_summary", "predict_summary", "print_summary", "test_summary"]

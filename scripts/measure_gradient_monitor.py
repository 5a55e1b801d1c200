#!/usr/bin/env python3
"""What GradientMonitor costs: the extra time of a step it measures, and so its overhead at an interval N.

    PYTHONPATH=src python scripts/measure_gradient_monitor.py --pairs 20

For each quickstart config (ResNet-20 on the digits, the 2+2-layer Transformer on the embedded
corpus) one process trains with the monitor and an MLflow logger (a temporary SQLite store), and
the monitor is due on every other step: measured and unmeasured steps alternate, so a change in
the machine's load hits both alike. A measured step pays for the tensor hooks, the parameter
norm and the MLflow write; an unmeasured one only for four hooks that return at once. The
overhead at interval N is ``(measured − unmeasured) / N`` as a fraction of an unmeasured step:
the median over ``pairs`` of the difference between a measured step and the unmeasured step
right after it (neighbours share the machine's load; the first steps are left out as warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import MLFlowLogger
from skipln.gradient_monitor import GradientMonitor

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"resnet": REPO / "configs/quickstart/resnet.yaml", "transformer": REPO / "configs/quickstart/transformer.yaml"}
NEVER = 10**9


class StepTimes(Callback):
    """Makes ``monitor`` due on even steps only, and times every step (forward, backward, optimizer, logging)."""

    def __init__(self, monitor: GradientMonitor, warmup: int = 4) -> None:
        self.monitor, self.warmup = monitor, warmup
        self.times: list[tuple[bool, float]] = []
        self._start, self._due = 0.0, False

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._due = trainer.global_step % 2 == 0
        self.monitor.every_n_steps = 2 if self._due else NEVER
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step > self.warmup:
            self.times.append((self._due, time.perf_counter() - self._start))

    def paired(self) -> tuple[float, float]:
        """Median unmeasured step, and median difference (measured − the unmeasured step after it)."""
        pairs = [(a, b) for (due_a, a), (due_b, b) in zip(self.times, self.times[1:]) if due_a and not due_b]
        return statistics.median(b for _, b in pairs), statistics.median(a - b for a, b in pairs)


def load(config: Path) -> tuple[LightningModule, LightningDataModule]:
    cli = LightningCLI(
        LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
        save_config_callback=None, auto_configure_optimizers=False, args=["--config", str(config), "--trainer.logger=false"],
    )
    return cli.model, cli.datamodule


def paired_times(model: LightningModule, data: LightningDataModule, pairs: int, store: Path) -> tuple[float, float, int]:
    """Median unmeasured step time, the median extra time of a measured step, and the records logged."""
    monitor = GradientMonitor(every_n_steps=2)
    timer = StepTimes(monitor)  # before the monitor: it decides whether the step is due
    logger = MLFlowLogger(experiment_name="overhead", tracking_uri=f"sqlite:///{store}")
    trainer = Trainer(
        max_steps=2 * pairs + timer.warmup + 1, limit_val_batches=0, logger=logger, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", callbacks=[timer, monitor],
    )
    trainer.fit(model, datamodule=data)
    logged = len(mlflow.MlflowClient(f"sqlite:///{store}").get_metric_history(logger.run_id, "grad/param_total"))
    return (*timer.paired(), logged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--intervals", type=int, nargs="+", default=[1, 10, 50, 100])
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in CONFIGS.items():
            model, data = load(config)
            plain, extra, logged = paired_times(model, data, args.pairs, Path(tmp) / f"{name}.db")
            print(f"{name}: median step {plain * 1e3:.1f} ms unmeasured; a measured step {extra * 1e3:+.1f} ms "
                  f"({args.pairs} pairs; {logged} records in MLflow)")
            for n in args.intervals:
                print(f"  every {n:>4} steps: {100 * extra / n / plain:+.2f} %")


if __name__ == "__main__":
    main()

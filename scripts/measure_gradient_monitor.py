#!/usr/bin/env python3
"""What GradientMonitor costs: the extra time of a step it measures, and so its overhead at an interval N.

    PYTHONPATH=src python scripts/measure_gradient_monitor.py --pairs 15

For each quickstart config (ResNet-20 on the digits, the 2+2-layer Transformer on the embedded
corpus) one process trains with the monitor and an MLflow logger (a temporary SQLite store) in
blocks of ``BLOCK`` steps: blocks with one measured step (the first) alternate with blocks with
none, so a change in the machine's load hits both alike, and whatever a measurement leaves for
the next steps (MLflow writes in the background) is counted in its own block. A measured step
pays for the tensor hooks, the parameter norm and the MLflow write; the others only for four
hooks that return at once. The cost of one measurement is the median over ``pairs`` of (block
with − the block without that follows it); the overhead at interval N is that cost over N
plain steps (the first block pair is left out as warm-up).
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
BLOCK = 4


class StepTimes(Callback):
    """Makes ``monitor`` due at the first step of every other block, and times every step."""

    def __init__(self, monitor: GradientMonitor, warmup: int = 2 * BLOCK) -> None:
        self.monitor, self.warmup = monitor, warmup
        self.times: list[tuple[bool, float]] = []
        self._start, self._due, self._step = 0.0, False, 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._step = trainer.global_step  # on_train_batch_end sees it already advanced
        self._due = self._step % (2 * BLOCK) == 0
        self.monitor.every_n_steps = 2 * BLOCK if self._due else NEVER
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._step >= self.warmup:
            self.times.append((self._due, time.perf_counter() - self._start))

    def paired(self) -> tuple[float, float]:
        """Median plain step, and the median extra time of a block with a measurement over the block after it."""
        blocks = [sum(t for _, t in self.times[i : i + BLOCK]) for i in range(0, len(self.times) - BLOCK + 1, BLOCK)]
        differences = [blocks[i] - blocks[i + 1] for i in range(0, len(blocks) - 1, 2)]
        plain = [t for i in range(BLOCK, len(self.times), 2 * BLOCK) for _, t in self.times[i : i + BLOCK]]
        return statistics.median(plain), statistics.median(differences)


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
        max_steps=2 * BLOCK * pairs + timer.warmup, limit_val_batches=0, logger=logger, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", callbacks=[timer, monitor],
    )
    trainer.fit(model, datamodule=data)
    logged = len(mlflow.MlflowClient(f"sqlite:///{store}").get_metric_history(logger.run_id, "grad/param_total"))
    return (*timer.paired(), logged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20, help="pairs of blocks (with and without a measurement)")
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

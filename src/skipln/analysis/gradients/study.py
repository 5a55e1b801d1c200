"""The study's loop: every model × depth × strategy, at initialisation over seeds and over training steps.

:func:`run_study` collects the readings as rows (:class:`Results`); a strategy a model cannot
hold is recorded as skipped, with the model's reason.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from skipln.analysis.gradients.cells import Cell, study_cells
from skipln.analysis.gradients.config import StudyConfig
from skipln.analysis.gradients.measure import Reading, combine_norms, read_gradients
from skipln.analysis.gradients.probes import Probe, make_probe
from skipln.errors import ConfigError
from skipln.skip import SkipStrategy, needs_profiling, profile


@dataclass
class Results:
    """What the study measured, as rows of its tables."""

    layers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    readings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def add(self, key: dict[str, Any], reading: Reading, *, per_layer: bool) -> None:
        self.readings.append(
            {
                **key,
                "loss": reading.loss,
                "input_first": reading.inputs[0],
                "input_last": reading.inputs[-1],
                "param_first": reading.params[0],
                "param_last": reading.params[-1],
                "param_total": combine_norms(reading.params),
            }
        )
        if per_layer:
            self.layers += [
                {
                    **key,
                    "layer": layer,
                    "input_grad_norm": norm,
                    "param_grad_norm": reading.params[layer] if layer < len(reading.params) else math.nan,
                }
                for layer, norm in enumerate(reading.inputs)
            ]


def prepare(probe: Probe, skip: SkipStrategy, depth: int, dtype: torch.dtype, seed: int) -> tuple[nn.Module, Iterator[Any]]:
    """The network of ``seed`` in ``dtype``, in training mode, and its stream of batches.

    A strategy that needs a profiling pass (Admin) gets it on the first batch, as a training
    task does before its first update.
    """
    torch.manual_seed(seed)
    net = probe.build(skip, depth).to(dtype)
    net.train()  # the gradients training sees: BN with batch statistics
    if needs_profiling(net):
        first = next(probe.batches(seed))
        profile(net, lambda: probe.loss(net, first))
    return net, probe.batches(seed)


def measure_init(probe: Probe, skip: SkipStrategy, depth: int, seed: int, dtypes: Sequence[torch.dtype]) -> tuple[Reading, torch.dtype]:
    """The gradients at initialisation (the network and the batch of ``seed``), and the precision they were read in.

    Each of ``dtypes`` is tried in order until one gives a finite reading: float32 where it
    suffices, float64 where float32 overflows. A reading that no precision can make finite is
    returned as the last one gave it.
    """
    for dtype in dtypes:
        net, batches = prepare(probe, skip, depth, dtype, seed)
        layers, end = probe.stack(net)
        batch = next(batches)
        reading = read_gradients(net, layers, end, lambda: probe.loss(net, batch))
        if reading.finite:
            break
    return reading, dtype


def measure_training(probe: Probe, skip: SkipStrategy, depth: int, seed: int, dtype: torch.dtype, steps: int) -> Iterator[Reading]:
    """The gradients of ``steps`` training steps, each read before its update.

    Stops after the first reading that is not finite: the update would fill the parameters
    with inf/nan, so training has diverged there.
    """
    net, batches = prepare(probe, skip, depth, dtype, seed)
    layers, end = probe.stack(net)
    optimizer = probe.optimizer(net)
    for _ in range(steps):
        batch = next(batches)
        reading = read_gradients(net, layers, end, lambda: probe.loss(net, batch))
        yield reading
        if not reading.finite:
            return
        optimizer.step()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def measure_cell(probe: Probe, cell: Cell, depth: int, config: StudyConfig) -> Results:
    """Every reading of one strategy at one depth: each seed at initialisation, then the training steps."""
    results = Results()
    base = {"model": probe.name, "family": cell.family, "strategy": cell.tag, "lambda": cell.lam, "depth": depth}
    for seed in config.seeds:
        reading, dtype = measure_init(probe, cell.skip, depth, seed, config.init_dtypes)
        key = {**base, "phase": "init", "step": 0, "seed": seed, "dtype": _dtype_name(dtype)}
        results.add(key, reading, per_layer=True)
    readings = measure_training(probe, cell.skip, depth, config.train_seed, config.train_dtype, config.steps)
    for step, reading in enumerate(readings):
        key = {**base, "phase": "train", "step": step, "seed": config.train_seed, "dtype": _dtype_name(config.train_dtype)}
        results.add(key, reading, per_layer=config.record_step(step) or not reading.finite)
    return results


def run_study(config: StudyConfig, log: Callable[[str], None] = print) -> Results:
    """Measure every model, depth and strategy of ``config``."""
    results = Results()
    cells = study_cells(config)
    torch.set_num_threads(config.threads)
    for name, settings in config.models.items():
        probe = make_probe(name, settings)
        not_applicable: set[str] = set()
        for depth in config.depths:
            for cell in cells:
                if cell.tag in not_applicable:
                    continue
                start = time.perf_counter()
                try:
                    measured = measure_cell(probe, cell, depth, config)
                except ConfigError as error:  # the model cannot hold this strategy
                    not_applicable.add(cell.tag)
                    results.skipped.append(
                        {"model": name, "family": cell.family, "strategy": cell.tag, "lambda": cell.lam, "reason": str(error)}
                    )
                    log(f"[{name} L={depth}] {cell.tag}: not applicable: {error}")
                    continue
                results.layers += measured.layers
                results.readings += measured.readings
                log(f"[{name} L={depth}] {cell.tag}: {time.perf_counter() - start:.1f} s")
    return results

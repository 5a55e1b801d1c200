"""Timing: a workload is one repeatable unit of work; two are timed interleaved and compared by their medians.

Interleaving (ours, reference, reference, ours, ...) exposes both to the same background load
and the same drift of the machine (thermal state, a neighbour's job starting), so their ratio
is fair even on a shared machine where the absolute figures are not.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


class Skipped(Exception):
    """A workload that cannot run here (a missing optional package); the message says how to enable it."""


@dataclass
class Workload:
    """One repeatable unit of work and how much it does.

    Attributes:
        name: the workload's name in :mod:`benchmarks.workloads`.
        run: does the work once (e.g. one training step: forward, backward, optimizer step).
        units: work done by one ``run`` in ``unit`` (target tokens, images, sentences, FLOPs).
        unit: what ``units`` counts, e.g. ``"tok"``.
        device: where it runs; CUDA work is synchronised before the clock is read.
        info: sizes and settings worth recording next to the figure.
    """

    name: str
    run: Callable[[], Any]
    units: float
    unit: str
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timing:
    """The timed repetitions of one workload."""

    name: str
    unit: str
    units: float
    seconds: list[float]

    @property
    def median(self) -> float:
        """Median seconds of one repetition."""
        return statistics.median(self.seconds)

    @property
    def throughput(self) -> float:
        """``units`` per second at the median time."""
        return self.units / self.median

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.name,
            "unit": self.unit,
            "units_per_run": self.units,
            "median_s": self.median,
            "throughput_per_s": self.throughput,
            "seconds": self.seconds,
        }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_once(workload: Workload) -> float:
    """Seconds of one ``run`` of ``workload``."""
    _sync(workload.device)
    start = time.perf_counter()
    workload.run()
    _sync(workload.device)
    return time.perf_counter() - start


def interleaved(ours: Workload, reference: Workload, *, warmup: int, repeats: int) -> tuple[Timing, Timing]:
    """Time ``ours`` and ``reference`` alternately after ``warmup`` untimed runs of each.

    The order flips every round (A B, B A, A B, ...) so that neither always runs right after
    the other (caches, allocator state) or always first.
    """
    if repeats < 1:
        raise ValueError(f"interleaved: repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        ours.run()
        reference.run()
    times: dict[str, list[float]] = {"ours": [], "reference": []}
    for round_ in range(repeats):
        pair = [("ours", ours), ("reference", reference)]
        for key, workload in pair if round_ % 2 == 0 else reversed(pair):
            times[key].append(time_once(workload))
    return (
        Timing(ours.name, ours.unit, ours.units, times["ours"]),
        Timing(reference.name, reference.unit, reference.units, times["reference"]),
    )


def matmul_workload(size: int, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Workload:
    """A ``size × size`` by ``size × size`` matmul: the machine's attainable peak, ``2·size³`` FLOPs a run."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    return Workload(
        name="matmul",
        run=lambda: torch.mm(a, b, out=out),
        units=2.0 * size**3,
        unit="FLOP",
        device=device,
        info={"size": size, "dtype": str(dtype).removeprefix("torch.")},
    )


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What the figures depend on: software versions, threads, the CPU, the load, the GPU if any."""
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg": list(os.getloadavg()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if torch.cuda.is_available():
        # Which attention kernels scaled_dot_product_attention may pick (flash needs no arbitrary mask).
        info["sdpa_kernels_enabled"] = {
            "flash": torch.backends.cuda.flash_sdp_enabled(),
            "memory_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "math": torch.backends.cuda.math_sdp_enabled(),
        }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    return info


__all__ = ["Skipped", "Timing", "Workload", "cpu_model", "interleaved", "machine_info", "matmul_workload", "time_once"]

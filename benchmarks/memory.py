"""Peak resident memory of one workload, measured alone in a fresh Python process.

The process imports the libraries that the workload's kind of row needs on either side
(:func:`preload`: ``transformers`` for beam search, Lightning for the end-to-end rows, ...), reads
its resident set size (``VmRSS``), builds the
workload and runs it a few times, then reads its high-water mark (``VmHWM``, the peak RSS
since the process started). The figure reported is the peak's increase over the
after-import baseline: the model, its gradients and optimizer state, the data and the
activations at their largest. A fresh process per workload is what makes it honest: in one
long process the allocator keeps freed memory, so a later workload could reuse an earlier
one's pages and look smaller than it is. (``tracemalloc`` does not see torch's allocations;
``resource.getrusage`` is the same high-water mark, process-wide and monotonic.)

On a GPU the figure is CUDA's: ``torch.cuda.max_memory_allocated`` over what was allocated
before the workload was built (the host's resident set is reported beside it).

Run as ``python -m benchmarks.memory --size small --workload transformer/post_ln``: prints
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (peak memory needs Linux)")


_END_TO_END = ("lightning.pytorch", "skipln.tasks.translation", "skipln.data.translation", "benchmarks.endtoend")
#: Imported before the baseline is read, by both sides of a row alike (by the workload name's first
#: part): a library's import is not the workload's memory.
PRELOAD: dict[str, tuple[str, ...]] = {
    "beam": ("transformers",),
    "resnet": ("torchvision",),
    "fit": _END_TO_END,
    "corpus": _END_TO_END,
    "data": _END_TO_END,
    "tokenize": _END_TO_END,
}


def preload(name: str) -> list[str]:
    """Import what :data:`PRELOAD` lists for workload ``name`` (those installed); returns the modules imported."""
    import importlib

    done = []
    for name in PRELOAD.get(name.split("/")[0], ()):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        done.append(name)
    return done


def measure_here(size: str, name: str, runs: int, threads: int, settings: Settings | None = None) -> dict[str, Any]:
    """Build and run workload ``name`` in this process; the peak memory over the baseline, in MiB."""
    import torch

    from benchmarks.settings import Settings
    from benchmarks.sizes import get_sizes
    from benchmarks.workloads import build

    settings = settings or Settings()
    on_gpu = settings.device_type == "cuda"
    torch.set_num_threads(threads)
    preload(name)
    baseline = _status_kib("VmRSS")
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(settings.device)
        gpu_baseline = torch.cuda.memory_allocated(settings.device)
    workload = build(name, get_sizes(size), settings)
    for _ in range(runs):
        workload.run()
    peak = _status_kib("VmHWM")
    host = {"process_peak_mib": peak / 1024, "baseline_mib": baseline / 1024}
    if on_gpu:
        gpu_peak = torch.cuda.max_memory_allocated(settings.device)
        return {"workload": name, "peak_mib": (gpu_peak - gpu_baseline) / 2**20, "memory": "cuda", **host}
    return {"workload": name, "peak_mib": (peak - baseline) / 1024, "memory": "host", **host}


def measure(
    size: str, name: str, *, runs: int = 3, threads: int = 1, settings: Settings | None = None, timeout: float = 600.0
) -> dict[str, Any]:
    """Measure workload ``name`` in a fresh subprocess; ``{"skipped": why}`` when it cannot run here."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "benchmarks.memory", "--size", size, "--workload", name, "--runs", str(runs), "--threads", str(threads)]
    if settings is not None:
        command += ["--device", settings.device, "--precision", settings.precision] + (["--compile"] if settings.compile else [])
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"benchmarks.memory failed for {name} (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    from benchmarks.harness import Skipped
    from benchmarks.settings import Settings

    try:
        settings = Settings(args.device, args.precision, args.compile)
        result = measure_here(args.size, args.workload, args.runs, args.threads, settings)
    except Skipped as why:
        result = {"workload": args.workload, "skipped": str(why)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

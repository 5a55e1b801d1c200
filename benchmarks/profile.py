"""Where a workload's time goes: ``python -m benchmarks.profile --size small --workload resnet/rskip_ln2/contiguous``.

Builds the workload as the table does, runs it ``--warmup`` times, then ``--runs`` times under
``torch.profiler`` and prints (or writes to ``--out``) the operators by self time — or, with
``--python``, under ``cProfile``: the Python calls by cumulative time (a framework's own work) —
with the command and the machine above them. A goal reported as missed names the profile that explains it.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.harness import machine_info
from benchmarks.settings import PRECISIONS, Settings
from benchmarks.sizes import PRESETS, get_sizes
from benchmarks.workloads import build


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", choices=list(PRESETS))
    parser.add_argument("--workload", required=True, help="a workload name, e.g. transformer/post_ln (see benchmarks.workloads)")
    parser.add_argument("--runs", type=int, default=3, help="profiled runs")
    parser.add_argument("--warmup", type=int, default=2, help="unprofiled runs first")
    parser.add_argument("--rows", type=int, default=25, help="operators shown")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32", choices=list(PRECISIONS))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--python", action="store_true",
                        help="profile Python calls (cProfile, by cumulative time) instead of torch operators: where a "
                             "framework's own time goes, e.g. --workload fit/lightning")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="write the table to this file instead of printing it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Profile one workload; returns the text written."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings(args.device, args.precision, args.compile)
    workload = build(args.workload, get_sizes(args.size), settings)
    for _ in range(args.warmup):
        workload.run()
    table = _python_profile(workload.run, args.runs, args.rows) if args.python else _torch_profile(workload.run, args, settings)
    machine = machine_info()
    command = "python -m benchmarks.profile " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    text = (
        f"{command}\n{settings.describe()}; {args.runs} runs of {args.workload} ({args.size} sizes)\n"
        f"machine: {machine['cpu']}, {machine['torch_threads']} thread(s), torch {machine['torch']}, GPU {machine['cuda'] or 'none'}, "
        f"load average {os.getloadavg()[0]:.2f}\n\n"
        + table
    )
    if args.out is None:
        print(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return text


def _torch_profile(run: Callable[[], object], args: argparse.Namespace, settings: Settings) -> str:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if settings.device_type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(args.runs):
            run()
    sort = "self_cuda_time_total" if settings.device_type == "cuda" else "self_cpu_time_total"
    return str(profiler.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))


def _python_profile(run: Callable[[], object], runs: int, rows: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        run()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("cumulative").print_stats(rows)
    return text.getvalue()


if __name__ == "__main__":
    main()

"""Run the benchmarks and write the table: ``python -m benchmarks.run --size small --out results/benchmarks/``.

Every row times skipln's figure and its reference's interleaved in this one process, then
(unless ``--no-memory``) measures each workload's peak memory alone in a fresh process.
``--device cuda --precision bf16-mixed --compile`` run both sides of every row on a GPU, in
bf16 autocast, compiled; the files are then named ``<size>-cuda-bf16-compiled.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import machine_info
from benchmarks.settings import PRECISIONS, Settings
from benchmarks.sizes import PRESETS, get_sizes
from benchmarks.suite import GROUPS, add_memory, row_specs, run_row
from benchmarks.table import write


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", choices=list(PRESETS), help="size preset (tiny: seconds, for tests)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"), help="folder for <size>.json and <size>.md")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: fair on a shared machine)")
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS), help="which rows to run")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per row (default: the preset's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--shared", action="store_true", help="note in the table that the machine was shared")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both sides of every row run there)")
    parser.add_argument("--precision", default="32", choices=list(PRECISIONS), help="32 or bf16-mixed (torch.autocast)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the trained models of both sides")
    parser.add_argument("--tag", default=None, help="added to the files' names (e.g. a run of some groups: small-resnet.md)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen rows and write the table; returns the report written to JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    sizes = get_sizes(args.size)
    settings = Settings(args.device, args.precision, args.compile)
    if args.repeats is not None:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    started = _now()
    machine = machine_info()
    rows = [run_row(spec, sizes, settings) for spec in row_specs(sizes, args.groups, settings)]
    if not args.no_memory:
        add_memory(rows, args.size, args.threads, settings)
    machine["loadavg_start"] = machine.pop("loadavg")
    machine["loadavg_end"] = list(os.getloadavg())
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    report = {
        "command": command.strip(),
        "size": args.size,
        "name": args.size + settings.suffix + (f"-{args.threads}threads" if args.threads != 1 else "") + (f"-{args.tag}" if args.tag else ""),
        "settings": dataclasses.asdict(settings),
        "sizes": vars(sizes),
        "started": started,
        "finished": _now(),
        "shared": args.shared,
        "warmup": sizes.warmup,
        "repeats": sizes.repeats,
        "machine": machine,
        "rows": rows,
    }
    json_path, md_path = write(report, args.out)
    logging.info("wrote %s and %s", json_path, md_path)
    return report


if __name__ == "__main__":
    main()

"""The whole GPU table in one command: ``python -m benchmarks.gpu --out results/benchmarks``.

Runs every row of :mod:`benchmarks.run` on the GPU four times — float32, bf16-mixed, compiled
float32, compiled bf16-mixed — each with its peak-memory measurements (CUDA's peak allocation),
at the ``wmt_base`` sizes (Transformer base, WMT14 En-De) by default. Each setting writes its own
``<size>-cuda[-bf16][-compiled].{json,md}``; this command then writes ``<size>-cuda-summary.md``,
one column per setting. The FLOP row's goal on a GPU: training at the ``wmt_base`` size reaches
≥ 45% of the GPU's matmul peak, measured in the same run in the same dtype (bf16 in the bf16
columns). Attention runs through ``scaled_dot_product_attention``, which picks the flash or
memory-efficient kernel on a GPU wherever the mask and dropout allow it (the JSON records which
SDPA kernels were enabled).

Without a CUDA GPU it stops at once with a one-line message (exit status 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks import run
from benchmarks.sizes import PRESETS
from benchmarks.table import summary

#: (precision, compile) of each column, in order.
SETTINGS: tuple[tuple[str, bool], ...] = (("32", False), ("bf16-mixed", False), ("32", True), ("bf16-mixed", True))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="wmt_base", choices=list(PRESETS), help="size preset (default: wmt_base)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"), help="folder of the tables")
    parser.add_argument("--device", default="cuda", help="the CUDA device (cuda, cuda:1, ...)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per row (default: the preset's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--groups", nargs="+", default=None, help="which rows to run (default: all)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every setting on the GPU and write the summary; returns the reports."""
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "benchmarks.gpu: this machine has no CUDA GPU (torch.cuda.is_available() is False); "
            "run it where one is, or use python -m benchmarks.run for the CPU table",
            file=sys.stderr,
        )
        raise SystemExit(2)
    common = ["--size", args.size, "--out", str(args.out), "--device", args.device, "--threads", str(torch.get_num_threads())]
    common += ["--repeats", str(args.repeats)] if args.repeats is not None else []
    common += ["--no-memory"] if args.no_memory else []
    common += ["--groups", *args.groups] if args.groups else []
    reports = []
    for precision, compiled in SETTINGS:
        reports.append(run.main([*common, "--precision", precision, *(["--compile"] if compiled else [])]))
    path = args.out / f"{args.size}-cuda-summary.md"
    path.write_text(summary(reports), encoding="utf-8")
    print(f"wrote {path}")
    return reports


if __name__ == "__main__":
    main()

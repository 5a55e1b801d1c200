"""The command ``python -m skipln.analysis.gradients``: measure (or ``--replot``), write tables and figures, log to MLflow."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from skipln.analysis.gradients.config import DEFAULT_CONFIG, StudyConfig, load_config
from skipln.analysis.gradients.figures import plot_depth, plot_layers, plot_training
from skipln.analysis.gradients.probes import make_probe
from skipln.analysis.gradients.study import run_study
from skipln.analysis.gradients.tables import Tables, slopes, summarise, summary_markdown, write_csv
from skipln.analysis.gradients.tracking import log_run
from skipln.errors import ConfigError, SkipLNError


def report(
    tables: Tables, config: StudyConfig, out: Path, figures: Path
) -> tuple[list[Path], str, pd.DataFrame]:
    """Write the derived tables and the figures; return every file written, the markdown summary and the slopes."""
    blocks = {name: make_probe(name, settings).blocks_per_layer for name, settings in config.models.items()}
    tables = tables.select(config.models)
    if tables.readings.empty:
        raise ConfigError(f"no measurements of the models {', '.join(config.models)} to report (check --models and --out)")
    summary = summarise(tables.readings)
    slope_table = slopes(summary, blocks)
    files = tables.write(out)
    for name, frame in (("summary.csv", summary), ("slopes.csv", slope_table)):
        files.append(write_csv(frame, out / name))
    measured = [m for m in config.models if m in set(summary.model)]
    for model in measured:
        depths = [d for d in config.profile_depths if d in set(summary[summary.model == model].depth)]
        files.append(plot_layers(tables.layers, model, depths, blocks[model], figures / f"gradients_{model}_layers.png"))
    files.append(plot_depth(summary, blocks, figures / "gradients_depth.png"))
    files.append(plot_training(tables.readings, config.training_depth, figures / "gradients_training.png"))
    return files, summary_markdown(summary, slope_table), slope_table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m skipln.analysis.gradients",
        description=(
            "Measure ‖∂loss/∂x_l‖ and the parameter gradient of every layer against depth, for every skip strategy "
            "and λ, in a Transformer encoder and ResNets (Liu et al. 2020's central claim). Settings: --config."
        ),
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the study's YAML (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="apply the config's `quick:` overrides: a tiny study in seconds")
    parser.add_argument("--out", type=Path, default=Path("results/gradients"), help="folder of the CSV tables (default: %(default)s)")
    parser.add_argument("--figures", type=Path, default=None, help="folder of the PNG figures (default: --out)")
    parser.add_argument("--models", nargs="+", default=None, help="study only these models of the config")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the config's mlflow.tracking_uri)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: the config's mlflow.experiment)")
    parser.add_argument("--replot", action="store_true", help="do not measure: rebuild summaries and figures from the CSVs in --out")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = parse_args(argv)
    try:
        config = load_config(args.config, quick=args.quick, models=args.models)
        figures = args.figures or args.out
        start = time.perf_counter()
        if args.replot:
            tables = Tables.read(args.out)
        else:
            tables = Tables.from_results(run_study(config, log=lambda line: print(line, file=sys.stderr, flush=True)))
        files, markdown, slope_table = report(tables, config, args.out, figures)
        run_id = log_run(
            config,
            files,
            markdown,
            slope_table,
            run_name="gradients" + ("-quick" if args.quick else ""),
            tags={"quick": str(args.quick).lower(), "replot": str(args.replot).lower()},
            tracking_uri=args.tracking_uri or config.tracking_uri,
            experiment=args.experiment or config.experiment,
        )
    except SkipLNError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(markdown)
    print(f"wrote {len(files)} files under {args.out} and {figures}; MLflow run {run_id} "
          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


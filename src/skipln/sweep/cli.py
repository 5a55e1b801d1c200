"""``python -m skipln.sweep run <grid>``: the command line of the sweep.

    python -m skipln.sweep run sweeps/cifar10_paper.yaml --dry-run
    python -m skipln.sweep run sweeps/cifar10_paper.yaml --gpus-per-trial 1 --config=configs/trainer/gpu_bf16.yaml
    python -m skipln.sweep run sweeps/quickstart_resnet.yaml --cpus-per-trial 1        # two at once on 2 cores
    python -m skipln.sweep run sweeps/cifar10_paper.yaml --address auto               # on a running Ray cluster
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skipln.sweep.grid import SWEEP_NAME, SweepError, load_grid, overrides
from skipln.sweep.launch import Launcher
from skipln.sweep.records import Action
from skipln.sweep.runner import Sweep, ray_session, summary
from skipln.sweep.store import config_value, defaults_file, read_store, store_exists
from skipln.sweep.trials import ResultRun


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m skipln.sweep",
        description="Run a grid of configs × seeds on Ray Tune, one MLflow run each; run again to resume.",
        allow_abbrev=False,
    )
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run (or resume) the sweep of a grid file",
        description="Run every (cell, seed) of a grid file that is not done yet, as many at once as the resources allow. "
        "Arguments the sweep does not know (--key=value) are passed to every run, e.g. --trainer.max_epochs=2 or "
        "--config=configs/trainer/gpu_bf16.yaml.",
        allow_abbrev=False,
    )
    run.add_argument("grid", type=Path, help="the grid file, e.g. sweeps/quickstart_resnet.yaml")
    run.add_argument("--dry-run", action="store_true", help="show what would run and how, change nothing")
    run.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="N", help="CPU cores each run gets (default 1; also its torch threads)")
    run.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="N", help="GPUs each run gets; fractions share a GPU (default 0)")
    run.add_argument("--max-retries", type=int, default=2, metavar="N", help="how often a run whose process died is tried again (default 2)")
    run.add_argument("--address", help="join this Ray cluster (e.g. auto, or ray://head:10001) instead of starting Ray here")
    run.add_argument("--num-cpus", type=int, help="local Ray only: the cores Ray may use (default: all)")
    run.add_argument("--num-gpus", type=int, help="local Ray only: the GPUs Ray may use (default: all)")
    run.add_argument("--storage", type=Path, help="where Ray Tune keeps its experiment state (default: <default_root_dir>/ray); shared storage on a cluster")
    run.add_argument("--max-runs", type=int, metavar="N", help="run at most N runs that need work, then stop")
    run.add_argument("--name", help="run the grid under another sweep name (e.g. a smoke test of a big grid)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: configs/defaults.yaml's)")
    run.add_argument("--experiment", help="MLflow experiment (default: configs/defaults.yaml's)")
    run.add_argument("--main", type=Path, default=Path("main.py"), help="the CLI entry point (default: ./main.py)")
    run.add_argument("--accept-changed", action="store_true", help="keep runs made with other arguments instead of stopping")
    run.add_argument("--retry-diverged", action="store_true", help="run again the runs that diverged (kept as results otherwise)")
    run.add_argument("--quiet", action="store_true", help="no Ray Tune progress table (the runs' output is kept as their artifacts)")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Returns 0 when every run is tested (or diverged), 1 when some failed, 2 for bad input."""
    args, extra = parser().parse_known_args(argv)
    try:
        return _run(args, overrides(extra, Path.cwd()))
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return 130


def _check(args: argparse.Namespace, root: Path) -> Path:
    main_path = args.main if args.main.is_absolute() else root / args.main
    if not main_path.is_file():
        raise SweepError(f"{main_path} does not exist: run the sweep from the repository root, or pass --main path/to/main.py")
    if args.max_runs is not None and args.max_runs < 0:
        raise SweepError(f"--max-runs must be >= 0, got {args.max_runs}")
    if args.cpus_per_trial < 0 or args.gpus_per_trial < 0 or args.cpus_per_trial + args.gpus_per_trial == 0:
        raise SweepError(f"--cpus-per-trial and --gpus-per-trial must be >= 0, not both 0; got {args.cpus_per_trial} and {args.gpus_per_trial}")
    if args.gpus_per_trial > 1 and args.gpus_per_trial != int(args.gpus_per_trial):
        raise SweepError(f"--gpus-per-trial above 1 must be a whole number, got {args.gpus_per_trial}")
    if args.max_retries < 0:
        raise SweepError(f"--max-retries must be >= 0, got {args.max_retries}")
    if args.name and not SWEEP_NAME.match(args.name):
        raise SweepError(f"--name must be letters, digits, '_', '.' or '-', got {args.name!r}")
    return main_path


def _run(args: argparse.Namespace, extra: tuple[str, ...]) -> int:
    root = Path.cwd()
    main_path = _check(args, root)
    grid = load_grid(args.grid, root=root)
    grid = dataclasses.replace(grid, name=args.name) if args.name else grid
    defaults = defaults_file(main_path)
    store = read_store([str(defaults), *grid.base, *extra], root, args.tracking_uri, args.experiment)
    root_dir = Path(str(config_value([str(defaults), *grid.base, *extra], "trainer.default_root_dir", root) or "."))

    import mlflow  # slow to import: only once the command line is known to be good

    client = mlflow.MlflowClient(store.tracking_uri)
    experiment = client.get_experiment_by_name(store.experiment) if store_exists(store) else None
    if experiment is None and args.dry_run:
        experiment_id = "<new experiment>"
    else:
        experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(store.experiment)
    threads = max(1, int(args.cpus_per_trial)) if args.cpus_per_trial else None
    launcher = Launcher(sys.executable, main_path, root, store, experiment_id, defaults, threads)
    sweep = Sweep(
        grid, launcher, client, extra,
        resources={"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}, max_retries=args.max_retries,
        storage=args.storage or root / root_dir / "ray",
        accept_changed=args.accept_changed, retry_diverged=args.retry_diverged, verbose=0 if args.quiet else 1,
    )  # fmt: skip
    print(f"sweep {grid.name}: {len(grid.cells())} cells × {len(grid.seeds)} seeds; store {store.tracking_uri}, experiment {store.experiment}")
    if args.dry_run:
        print(_dry_run(sweep, experiment is not None, args.max_runs))
        return 0

    from skipln.sweep.search import SearchDiverged, search_cell

    with ray_session(args.address, args.num_cpus, args.num_gpus, store.is_sqlite):
        tuned: dict[str, dict[str, Any]] = {}
        unsearched: dict[str, str] = {}
        diverged: dict[str, str] = {}
        for cell in grid.cells() if grid.search_axes else ():
            try:
                tuned[cell.key] = search_cell(sweep, cell)
            except SearchDiverged as error:  # a result, as a diverged run is: not an error of the sweep
                diverged[cell.key] = str(error)
            except SweepError as error:  # e.g. a strategy that refuses this network: only its cell stops
                unsearched[cell.key] = str(error)
                print(f"error: {error}; the other cells go on", file=sys.stderr)
        planned = [item for item in sweep.plan(tuned) if item.cell.key not in unsearched and item.cell.key not in diverged]
        todo = [item for item in planned if item.action is not Action.SKIP][: args.max_runs]
        for item in todo:
            if not item.run_id:
                sweep.create_run(item, tuned.get(item.cell.key))
        errors = sweep.run_results(todo) if todo else {}
    print("\n" + summary(sweep, planned, errors))
    for key, message in diverged.items():
        print(f"not run: {key}: {message}")
    for key, message in unsearched.items():
        print(f"not run: {key}, its search failed: {message}")
    return 1 if errors or unsearched else 0


def _dry_run(sweep: Sweep, store_has_runs: bool, max_runs: int | None) -> str:
    from skipln.sweep.search import search_diverged, search_run, searched_values

    grid, lines = sweep.grid, []
    tuned, diverged = {}, set()
    for cell in grid.cells() if grid.search_axes else ():
        run = search_run(sweep, cell) if store_has_runs else None
        values = searched_values(run)
        if search_diverged(run):
            diverged.add(cell.key)
            lines.append(f"searched {cell.key}: every trial diverged; its seeds are not run")
        elif values is None:
            assert grid.search is not None
            lines.append(f"would search {cell.key}: {grid.search.trials} trials, {grid.search.mode} {grid.search.metric}, over "
                         + ", ".join(map(str, grid.search_axes)))  # fmt: skip
        else:
            tuned[cell.key] = values
            lines.append(f"searched {cell.key}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    planned = sweep.plan(tuned) if store_has_runs else [ResultRun(c, s, sweep.cell_items(c)) for c, s in grid.runs()]
    planned = [item for item in planned if item.cell.key not in diverged]
    todo = [item for item in planned if item.action is not Action.SKIP][:max_runs]
    lines.append(f"would run {len(todo)} of {len(planned)} runs:")
    for item in todo:
        run_id = item.run_id or "<new run>"
        searched = " (at the searched values)" if grid.search_axes and item.cell.key not in tuned else ""
        lines.append(f"  {item.cell.key}, seed {item.seed} ({item.action.value}){searched}:")
        if item.action.fits:
            resume = sweep.launcher.checkpoint_dir(item.items, run_id) / "last.ckpt" if item.action is Action.RESUME else None
            lines.append("    " + shlex.join(sweep.launcher.command("fit", item.items, item.seed, run_id, resume)))
        lines.append("    " + shlex.join(sweep.launcher.command("test", item.items, item.seed, run_id, Path("<best or last checkpoint>"))))
    return "\n".join(lines)

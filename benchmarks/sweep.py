"""Sweep scheduling: a small grid on local Ray (two one-thread runs at once) against the same runs one after another.

    python -m benchmarks.sweep [--epochs 2] [--out results/benchmarks]

Both sides do the same work: 8 runs (the quickstart ResNet-20 on the digits × 4 strategies × 2
seeds, ``--epochs`` each), every run a ``main.py fit`` then a ``main.py test`` child process with
one torch thread, logging into its own MLflow run in a fresh store.

- **sequential**: the runs one after another in this process, with no Ray — the order the
  sweep ran in before it moved onto Ray Tune (``skipln.sweep.trials.execute`` per run);
- **ray, 2 at once**: ``python -m skipln.sweep run`` with ``--cpus-per-trial 1`` on a local
  Ray with 2 CPUs (start-up included);
- **ray, 1 at a time**: the same with ``--cpus-per-trial 2``, to price Ray itself: its per-trial
  overhead is ``(ray 1-at-a-time − Ray start-up − sequential) / runs``;
- **Ray start-up**: ``ray.init`` of a local Ray and its shutdown, alone.

The ratio sequential / ray-2-at-once credits running two runs side by side on two cores; the
goal is ≥ 1.7× on a 2-core machine (a perfect 2× less Ray's costs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import machine_info

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("skip", "post_ln", "xskip_ln2", "rskip_ln2")
SEEDS = 2


def grid_file(folder: Path, name: str, epochs: int) -> Path:
    skips = "".join(f"\n    - configs/skip/{s}.yaml" for s in STRATEGIES)
    text = (
        f"name: {name}\nbase: [configs/quickstart/resnet.yaml, --trainer.max_epochs={epochs}, "
        f"--trainer.enable_progress_bar=false, --trainer.enable_model_summary=false]\n"
        f"axes:\n  skip:{skips}\nseeds: {SEEDS}\n"
    )
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def store_args(folder: Path) -> list[str]:
    return [f"--tracking-uri=sqlite:///{folder / 'mlflow.db'}", f"--trainer.default_root_dir={folder / 'mlruns'}"]


def ray_sweep(folder: Path, name: str, epochs: int, cpus_per_trial: int) -> float:
    """Wall seconds of ``python -m skipln.sweep run`` on a fresh local Ray with 2 CPUs."""
    command = [sys.executable, "-m", "skipln.sweep", "run", str(grid_file(folder, name, epochs)), "--quiet",
               "--num-cpus=2", f"--cpus-per-trial={cpus_per_trial}", *store_args(folder)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - start


def sequential(folder: Path, name: str, epochs: int) -> float:
    """Wall seconds of the same runs one after another, each fit then test, without Ray."""
    import mlflow

    from skipln.sweep.grid import load_grid
    from skipln.sweep.launch import Launcher
    from skipln.sweep.store import Store, defaults_file
    from skipln.sweep.trials import ResultRun, execute

    grid = load_grid(grid_file(folder, name, epochs), root=REPO)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("skipln")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("skipln")
    main = REPO / "main.py"
    launcher = Launcher(sys.executable, main, REPO, Store(uri, "skipln"), experiment_id, defaults_file(main), threads=1)
    extra = (f"--trainer.default_root_dir={folder / 'mlruns'}",)
    start = time.perf_counter()
    for cell, seed in grid.runs():
        items = grid.items(cell) + extra
        run = client.create_run(experiment_id, run_name=f"{cell.name}-s{seed}", tags={"sweep": name})
        execute(launcher, client, ResultRun(cell, seed, items, run.info.run_id))
    return time.perf_counter() - start


def ray_startup() -> float:
    """Seconds to start a local Ray with 2 CPUs, run one trivial task, and shut it down."""
    code = (
        "import time, logging, ray; t = time.perf_counter(); "
        "ray.init(address='local', num_cpus=2, include_dashboard=False, logging_level=logging.WARNING); "
        "ray.get(ray.remote(lambda: 1).remote()); ray.shutdown(); print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"), help="folder for sweep.json and sweep.md")
    args = parser.parse_args(argv)
    runs = len(STRATEGIES) * SEEDS
    with tempfile.TemporaryDirectory(prefix="skipln-sweep-bench-") as tmp:
        folders = {key: Path(tmp) / key for key in ("sequential", "ray2", "ray1")}
        for folder in folders.values():
            folder.mkdir()
        startup = ray_startup()
        seconds = {
            "sequential": sequential(folders["sequential"], "bench_sequential", args.epochs),
            "ray2": ray_sweep(folders["ray2"], "bench_ray2", args.epochs, cpus_per_trial=1),
            "ray1": ray_sweep(folders["ray1"], "bench_ray1", args.epochs, cpus_per_trial=2),
        }
    report = {
        "runs": runs, "epochs": args.epochs, "seconds": seconds, "ray_startup_seconds": startup,
        "speedup_two_at_once": seconds["sequential"] / seconds["ray2"],
        "ray_overhead_per_trial_seconds": (seconds["ray1"] - startup - seconds["sequential"]) / runs,
        "machine": machine_info(),
    }  # fmt: skip
    lines = [
        f"# Sweep scheduling: {runs} runs (quickstart ResNet-20 × {len(STRATEGIES)} strategies × {SEEDS} seeds, {args.epochs} epochs each)",
        "",
        f"CPU: {report['machine']['cpu']}, {report['machine']['cpu_count']} cores; load average at the end "
        f"{', '.join(f'{x:.2f}' for x in report['machine']['loadavg'])}.",
        "",
        "| what | wall s |",
        "| --- | --- |",
        f"| one after another, no Ray | {seconds['sequential']:.1f} |",
        f"| Ray Tune, 2 one-thread runs at once (start-up included) | {seconds['ray2']:.1f} |",
        f"| Ray Tune, 1 run at a time | {seconds['ray1']:.1f} |",
        f"| local Ray start-up and shutdown alone | {startup:.1f} |",
        "",
        f"**Speed-up, two at once vs one after another: {report['speedup_two_at_once']:.2f}×** (goal ≥ 1.7×). "
        f"Ray's overhead per trial: {report['ray_overhead_per_trial_seconds']:.1f} s.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()

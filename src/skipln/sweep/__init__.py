"""Sweeps: every cell of a grid of configs × every seed, one MLflow run each, scheduled by Ray Tune.

    python -m skipln.sweep run sweeps/quickstart_resnet.yaml [--cpus-per-trial 1] [--trainer.max_epochs=2 …]

- :mod:`~skipln.sweep.grid`: grid files (list axes, search-space axes, seeds);
- :mod:`~skipln.sweep.store`: which MLflow store and experiment the runs go to;
- :mod:`~skipln.sweep.records`: the tags on a sweep's runs and what to do with each run;
- :mod:`~skipln.sweep.launch`: one stage of one run as a ``main.py`` child process;
- :mod:`~skipln.sweep.trials`: the Ray Tune trainables (a result run; a search trial);
- :mod:`~skipln.sweep.search`: per-cell search with Optuna and ASHA;
- :mod:`~skipln.sweep.runner` and :mod:`~skipln.sweep.cli`: the driver and its command line.

Ray is imported only when a sweep runs, so reports and notebooks read runs without it.
"""

from skipln.sweep.grid import SWEEP_NAME, SweepError, load_grid
from skipln.sweep.store import Store, defaults_file, read_store, store_exists

__all__ = ["SWEEP_NAME", "Store", "SweepError", "defaults_file", "load_grid", "read_store", "store_exists"]

"""Running one stage of one run: ``python main.py fit|test …`` as a child process logging into the run.

Each stage runs as its own process, exactly the command a user would type (``--dry-run`` prints
it), so a crash, a DDP launch or a signal handler in the run never touches the sweep itself.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from skipln.sweep.store import Store, config_value

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: Where a stage's console output is kept with the run.
LOG_ARTIFACT_DIR = "sweep"


@dataclass(frozen=True)
class Launcher:
    """How to start ``main.py`` for a run; picklable, so it travels to Ray's workers."""

    python: str
    main: Path
    root: Path
    store: Store
    experiment_id: str
    defaults: Path
    #: Intra-op threads of each run (``OMP_NUM_THREADS``); None leaves the environment's.
    threads: int | None = None
    poll_seconds: float = 2.0

    def checkpoint_dir(self, items: Sequence[str], run_id: str) -> Path:
        """Where the CLI's ModelCheckpoint writes: ``<default_root_dir>/<experiment id>/<run id>/checkpoints``."""
        root_dir = config_value([str(self.defaults), *items], "trainer.default_root_dir", self.root) or "."
        return self.root / str(root_dir) / self.experiment_id / run_id / "checkpoints"

    def command(self, stage: str, items: Sequence[str], seed: int, run_id: str, ckpt_path: Path | None = None) -> list[str]:
        """``python main.py <stage> --config … --seed_everything=<seed> --trainer.logger… [--ckpt_path=…]``."""
        args: list[str] = []
        for item in items:
            args += [item] if item.startswith("--") else ["--config", item]
        logger = "--trainer.logger.init_args."
        args += [
            f"--seed_everything={seed}",
            f"{logger}tracking_uri={self.store.tracking_uri}",
            f"{logger}experiment_name={self.store.experiment}",
            f"{logger}run_id={run_id}",
        ]
        if ckpt_path is not None:
            args.append(f"--ckpt_path={ckpt_path}")
        return [self.python, str(self.main), stage, *args]

    def run_stage(
        self,
        client: MlflowClient,
        run_id: str,
        stage: str,
        command: Sequence[str],
        attempt: int,
        watch: tuple[str, Callable[[int, float], None]] | None = None,
    ) -> int:
        """Run one child into the run and return its exit status; its output becomes the run's artifact.

        ``watch = (metric, callback)``: while the child runs, every new value of ``metric`` that
        reaches the run is passed to ``callback(step, value)`` (how a search sees a trial's progress).
        """
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = str(self.threads)
        seen: set[int] = set()

        def poll() -> None:
            if watch is None:
                return
            metric, callback = watch
            for entry in sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step):
                if entry.step not in seen:
                    seen.add(entry.step)
                    callback(entry.step, entry.value)

        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / (f"{stage}.log" if attempt == 1 else f"{stage}-{attempt}.log")
            with log.open("wb") as sink, subprocess.Popen(list(command), stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=self.root) as child:
                while True:
                    try:  # returns as soon as the child exits, so no stage waits out a polling interval
                        child.wait(timeout=self.poll_seconds)
                        break
                    except subprocess.TimeoutExpired:
                        poll()
            poll()
            client.log_artifact(run_id, str(log), artifact_path=LOG_ARTIFACT_DIR)
        _close(client, run_id, child.returncode)
        return child.returncode


def _close(client: MlflowClient, run_id: str, code: int) -> None:
    """End a run its child left RUNNING (killed before its logger could), or ended wrongly."""
    status = "FINISHED" if code == 0 else "FAILED"
    current = client.get_run(run_id).info.status
    # A child killed before its logger could end the run leaves it RUNNING; one that failed after the
    # logger ended it (e.g. in teardown) leaves it FINISHED.
    if current == "RUNNING" or (status != "FINISHED" and current == "FINISHED"):
        client.set_terminated(run_id, status)


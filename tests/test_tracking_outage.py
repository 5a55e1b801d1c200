"""A tracking server that goes away for a while during a fit: training goes on and no metric is lost or logged twice.

A real ``mlflow server`` on loopback, over a SQLite store in the test's folder. The fit logs to it
with ``configs/tracking/server.yaml`` (MLflow's async logging); at its fourth step the server is
killed, and started again on the same store 15 seconds later. The run's metric history is then
compared with that of the same fit logged while the server stayed up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import CONFIGS
from test_resume import TINY, fit_in_subprocess

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 15.0
#: 8 epochs of 5 steps, each at least 0.5 s: the fit outlasts the outage and its restart.
LONGER = {**TINY, "trainer": {**TINY["trainer"], "max_epochs": 8}}


class MlflowServer:
    """``mlflow server`` on a free loopback port, over ``folder``'s store; it can be killed and started again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.folder / 'store.db'}", "--default-artifact-root", str(self.folder / "artifacts"),
        ]  # fmt: skip
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not start: {(self.folder / 'server.log').read_text()[-2000:]}")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)  # the server and its workers, at once, as a crash would
        self.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> MlflowServer:
    folder = tmp_path / "server"
    folder.mkdir()
    server = MlflowServer(folder)
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


def histories(uri: str) -> list[dict[str, list[tuple[int, float, int]]]]:
    """Every run's metric histories, oldest run first: (step, value, timestamp) in logging order."""
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("skipln").experiment_id], order_by=["attributes.start_time ASC"])
    assert all(run.info.status == "FINISHED" for run in runs), [run.info.status for run in runs]
    return [
        {key: sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics}
        for run in runs
    ]


def test_metrics_logged_while_the_server_is_down_reach_the_run_once_and_training_goes_on(workdir: Path, server: MlflowServer) -> None:
    config = workdir / "tiny.yaml"
    config.write_text(yaml.safe_dump(LONGER))
    to_server = [f"--config={CONFIGS / 'tracking' / 'server.yaml'}", f"--trainer.logger.init_args.tracking_uri={server.uri}"]
    reference = fit_in_subprocess(workdir, config, *to_server)
    assert reference.returncode == 0, reference.stderr[-3000:]

    mark = workdir / "outage"
    outage: list[float] = []

    def take_the_server_away() -> None:
        while not mark.exists():
            time.sleep(0.05)
        server.kill()
        outage.append(time.time())
        time.sleep(OUTAGE_SECONDS)
        server.start()
        outage.append(time.time())

    thread = threading.Thread(target=take_the_server_away)
    thread.start()
    paced = ["--trainer.callbacks+=skipln_test_support.PacedSteps", f"--trainer.callbacks.mark={mark}", "--trainer.callbacks.mark_at=3"]
    during = fit_in_subprocess(workdir, config, *to_server, *paced)
    thread.join()
    assert during.returncode == 0, during.stderr[-3000:]

    ref, out = histories(server.uri)
    # The same metrics at the same steps with the same values, each once.
    assert {k: [(s, v) for s, v, _ in h] for k, h in out.items()} == {k: [(s, v) for s, v, _ in h] for k, h in ref.items()}
    # Training went on while the server was down: points logged then (their time is when they were logged) arrived later.
    down, up = outage[0] * 1000, outage[1] * 1000
    steps_during_outage = {s for h in out.values() for s, _, t in h if down < t < up}
    assert len(steps_during_outage) >= 5, f"steps logged during the outage: {sorted(steps_during_outage)}"

"""A tracking server that goes away during a fit: training goes on or stops cleanly, and no metric is lost or logged twice.

A real ``mlflow server`` on loopback, over a SQLite store in the test's folder. The fit logs to it
with ``configs/tracking/server.yaml``; at its fourth step the server is killed. Either it is
started again on the same store 15 seconds later, or it stays away past ``max_outage_seconds``
and the fit stops, to be resumed once the server is back. The run's metric history is then
compared with that of the same fit logged while the server stayed up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.entities import Metric

from conftest import CONFIGS, REPO
from reliability_support import subprocess_env
from skipln.errors import ConfigError
from skipln.tracking_server import JOURNAL_NAME, TRACKING_OUTAGE_EXIT_CODE, ServerMLFlowLogger, send_missing
from test_resume import TINY, fit_in_subprocess, last_checkpoint

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
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    folder = tmp_path / "server"
    folder.mkdir()
    server = MlflowServer(folder)
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


def runs(uri: str) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name("skipln").experiment_id], order_by=["attributes.start_time ASC"])


def histories(uri: str) -> list[dict[str, list[tuple[int, float, int]]]]:
    """Every run's metric histories, oldest run first: (step, value, timestamp) in logging order."""
    client = mlflow.MlflowClient(uri)
    runs_ = runs(uri)
    assert all(run.info.status == "FINISHED" for run in runs_), [run.info.status for run in runs_]
    return [
        {key: sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics}
        for run in runs_
    ]


def fit_to(server: MlflowServer, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The fit of :data:`LONGER`, logged to ``server`` with ``configs/tracking/server.yaml``."""
    config = workdir / "tiny.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump(LONGER))
    to_server = [f"--config={CONFIGS / 'tracking' / 'server.yaml'}", f"--trainer.logger.init_args.tracking_uri={server.uri}"]
    return fit_in_subprocess(workdir, config, *to_server, *args)


def when_marked(mark: Path, then: Callable[[], None]) -> threading.Thread:
    """A thread that waits for ``mark`` to appear (the fit's PacedSteps touches it), then calls ``then``."""

    def wait_then() -> None:
        deadline = time.monotonic() + 300  # the fit's own timeout: a fit that never marks fails its assertions, not a hang
        while not mark.exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        then()

    thread = threading.Thread(target=wait_then)
    thread.start()
    return thread


@pytest.mark.slow
def test_metrics_logged_while_the_server_is_down_reach_the_run_once_and_training_goes_on(workdir: Path, server: MlflowServer) -> None:
    reference = fit_to(server, workdir)
    assert reference.returncode == 0, reference.stderr[-3000:]

    mark = workdir / "outage"
    outage: list[float] = []

    def take_the_server_away() -> None:
        server.kill()
        outage.append(time.time())
        time.sleep(OUTAGE_SECONDS)
        server.start()
        outage.append(time.time())

    thread = when_marked(mark, take_the_server_away)
    during = fit_to(server, workdir, *paced(mark))
    thread.join()
    assert during.returncode == 0, during.stderr[-3000:]

    ref, out = histories(server.uri)
    # The same metrics at the same steps with the same values, each once.
    assert {k: [(s, v) for s, v, _ in h] for k, h in out.items()} == {k: [(s, v) for s, v, _ in h] for k, h in ref.items()}
    # Training went on while the server was down: points logged then (their time is when they were logged) arrived later.
    down, up = outage[0] * 1000, outage[1] * 1000
    steps_during_outage = {s for h in out.values() for s, _, t in h if down < t < up}
    assert len(steps_during_outage) >= 5, f"steps logged during the outage: {sorted(steps_during_outage)}"


def paced(mark: Path) -> list[str]:
    """Steps of at least 0.5 s; ``mark`` appears when step 3 starts."""
    return ["--trainer.callbacks+=skipln_test_support.PacedSteps", f"--trainer.callbacks.mark={mark}", "--trainer.callbacks.mark_at=3"]


@pytest.mark.slow
def test_a_server_away_too_long_stops_the_fit_with_a_checkpoint_and_the_resume_sends_what_it_missed(
    workdir: Path, server: MlflowServer
) -> None:
    reference = fit_to(server, workdir)
    assert reference.returncode == 0, reference.stderr[-3000:]

    mark = workdir / "outage"
    watch = ["--trainer.logger.init_args.max_outage_seconds=3", "--trainer.logger.init_args.probe_seconds=0.5"]
    # MLflow gives each batch up at once, as it would after its retries in a long outage: only the journal keeps them.
    give_up = {**subprocess_env(REPO / "tests"), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    killer = when_marked(mark, server.kill)
    stopped = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "fit", f"--config={workdir / 'tiny.yaml'}", f"--config={CONFIGS / 'tracking' / 'server.yaml'}",
         f"--trainer.logger.init_args.tracking_uri={server.uri}", *watch, *paced(mark)],
        cwd=workdir, env=give_up, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    killer.join()
    assert stopped.returncode == TRACKING_OUTAGE_EXIT_CODE, stopped.stderr[-3000:]
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"the MLflow tracking server at {server.uri} has not answered for" in errors[0], stopped.stderr[-3000:]
    assert "Once the server is back, resume with:" in errors[0] and "--ckpt_path last" in errors[0]
    assert "Traceback" not in stopped.stderr

    server.start()
    interrupted = runs(server.uri)[1]
    assert interrupted.info.status == "RUNNING"  # it could not be told otherwise; `--ckpt_path last` takes it
    checkpoint = last_checkpoint(workdir, interrupted)
    assert 3 < checkpoint["global_step"] < 40  # stopped mid-fit, at the step it saved
    journal = workdir / "mlruns" / interrupted.info.experiment_id / interrupted.info.run_id / "checkpoints" / JOURNAL_NAME
    assert journal.is_file()

    resumed = fit_to(server, workdir, *watch, *paced(mark), "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    ref, out = histories(server.uri)
    assert runs(server.uri)[1].info.run_id == interrupted.info.run_id
    assert {k: [(s, v) for s, v, _ in h] for k, h in out.items()} == {k: [(s, v) for s, v, _ in h] for k, h in ref.items()}


# -- the journal, without a server ------------------------------------------------------------


def journal_of(path: Path, entries: list[tuple[str, float, int, int]]) -> Path:
    path.write_text("".join(json.dumps({"key": k, "value": v, "step": s, "timestamp": t}) + "\n" for k, v, s, t in entries))
    return path


def test_the_resume_sends_only_the_journaled_metrics_the_run_lacks_each_once(tmp_path: Path) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'store.db'}")
    run_id = client.create_run(client.create_experiment("outage")).info.run_id
    client.log_batch(run_id, metrics=[Metric("loss", 1.0, 100, 0), Metric("loss", 0.9, 200, 1)])  # reached the server
    journal = journal_of(tmp_path / JOURNAL_NAME, [
        ("loss", 1.0, 0, 100), ("loss", 0.9, 1, 200), ("loss", 0.8, 2, 300), ("acc", 0.5, 2, 300),  # 2 lost in the outage
        ("loss", 0.8, 2, 300),  # journaled twice (a replayed step): sent once
    ])  # fmt: skip

    assert send_missing(client, run_id, journal) == 2
    assert send_missing(client, run_id, journal) == 0  # a second resume sends nothing again
    loss = sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, "loss"))
    assert loss == [(0, 1.0, 100), (1, 0.9, 200), (2, 0.8, 300)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "acc")] == [(2, 0.5)]


def test_a_journal_line_cut_by_a_kill_is_skipped(tmp_path: Path) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'store.db'}")
    run_id = client.create_run(client.create_experiment("outage")).info.run_id
    journal = journal_of(tmp_path / JOURNAL_NAME, [("loss", 1.0, 0, 100)])
    with journal.open("a") as cut:
        cut.write('{"key": "loss", "val')
    assert send_missing(client, run_id, journal) == 1


@pytest.mark.parametrize("setting", [{"max_outage_seconds": 0}, {"max_outage_seconds": -5}, {"probe_seconds": 0}])
def test_a_watch_without_a_positive_time_is_refused_with_the_setting_named(setting: dict[str, float]) -> None:
    (name,) = setting
    with pytest.raises(ConfigError, match=f"'{name}' must be > 0"):
        ServerMLFlowLogger(tracking_uri="http://127.0.0.1:1", **setting)

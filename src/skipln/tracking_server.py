"""Logging to an MLflow tracking server that may go away: a local journal of every metric, and a watch on the server.

:class:`ServerMLFlowLogger` is Lightning's ``MLFlowLogger`` (use it with ``synchronous: false``, so
training does not wait for the server) that also appends every metric it logs to
``metrics-journal.jsonl`` beside the run's checkpoints — MLflow's queue retries a batch for a
few minutes, then drops it; :func:`send_missing` sends what the server lacks when the run
resumes — and whose watch thread lets :class:`skipln.resume.ResumeState` stop the fit, with a
checkpoint, once the server has not answered for ``max_outage_seconds``. The run then stays
RUNNING on the server, which is how ``--ckpt_path last`` finds it (docs/reliability.md §4).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from skipln.errors import ConfigError
from skipln.run_vocabulary import SERVER_URI_PREFIXES
from skipln.tracking import ping_server

#: The journal's file name, in the run's checkpoint folder.
JOURNAL_NAME = "metrics-journal.jsonl"
#: The characters MLflow allows in a metric name (Lightning's MLFlowLogger drops the others).
_MLFLOW_METRIC_NAME = re.compile(r"[^a-zA-Z0-9_/. -]+")
#: ``sysexits.h``'s EX_TEMPFAIL: the fit stopped because the tracking server was away; try again later.
TRACKING_OUTAGE_EXIT_CODE = 75


class ServerMLFlowLogger(MLFlowLogger):
    """``MLFlowLogger`` for a tracking server: journals every metric and watches the server.

    Args:
        tracking_uri, synchronous, prefix, **kwargs: ``MLFlowLogger``'s.
        max_outage_seconds: stop the fit (with a checkpoint, resumable) once the server has not
            answered for this long; ``null``: never (MLflow's retries alone, about 4 minutes a batch).
        probe_seconds: how often the watch asks the server's ``/health``.
    """

    def __init__(
        self,
        tracking_uri: str | None = os.getenv("MLFLOW_TRACKING_URI"),
        synchronous: bool | None = False,
        prefix: str = "",
        max_outage_seconds: float | None = 600.0,
        probe_seconds: float = 5.0,
        **kwargs: Any,
    ) -> None:
        if max_outage_seconds is not None and not max_outage_seconds > 0:
            raise ConfigError(f"ServerMLFlowLogger: 'max_outage_seconds' must be > 0 or null, got {max_outage_seconds!r}")
        if not probe_seconds > 0:
            raise ConfigError(f"ServerMLFlowLogger: 'probe_seconds' must be > 0, got {probe_seconds!r}")
        super().__init__(tracking_uri=tracking_uri, synchronous=synchronous, prefix=prefix, **kwargs)
        self.tracking_uri = tracking_uri or ""
        self.synchronous = synchronous
        self.max_outage_seconds = max_outage_seconds
        self.probe_seconds = probe_seconds
        self._metric_prefix = prefix
        #: The journal file, once :meth:`keep_journal` named its folder.
        self.journal: Path | None = None
        self._unwritten: list[dict[str, Any]] = []  # logged before the journal's folder is known
        self._down_since: float | None = None
        self._watch: threading.Thread | None = None
        self._stop_watch = threading.Event()

    # -- the journal ----------------------------------------------------------------------

    def keep_journal(self, folder: str | Path) -> Path:
        """Journal into ``folder`` (the run's checkpoint folder) from now on, with what was logged so far."""
        path = Path(folder) / JOURNAL_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        self.journal = path
        self._write(self._unwritten)
        self._unwritten = []
        return path

    def _write(self, entries: list[dict[str, Any]]) -> None:
        if self.journal is None:
            self._unwritten.extend(entries)
            return
        if entries:
            with self.journal.open("a", encoding="utf-8") as journal:
                journal.writelines(json.dumps(entry) + "\n" for entry in entries)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        # Lightning's MLFlowLogger.log_metrics makes the same Metric objects (prefix, allowed
        # characters, one time for the call); made here so the journal holds exactly what was sent.
        timestamp = int(time.time() * 1000)
        sent: list[Metric] = []
        for key, value in metrics.items():
            if isinstance(value, str):
                continue
            name = f"{self._metric_prefix}{self.LOGGER_JOIN_CHAR}{key}" if self._metric_prefix else key
            name = _MLFLOW_METRIC_NAME.sub("", name)
            sent.append(Metric(key=name, value=float(value), timestamp=timestamp, step=step or 0))
        self._write([{"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp} for m in sent])
        self._start_watch()
        # synchronous None: MLflow's default (MLFLOW_ENABLE_ASYNC_LOGGING), as MLFlowLogger passes it.
        self.experiment.log_batch(run_id=self.run_id, metrics=sent, synchronous=self.synchronous)

    # -- the watch ------------------------------------------------------------------------

    def _start_watch(self) -> None:
        if self._watch is not None or not self.tracking_uri.startswith(SERVER_URI_PREFIXES):
            return
        self._watch = threading.Thread(target=self._probe_until_stopped, name="tracking-server-watch", daemon=True)
        self._watch.start()

    def _probe_until_stopped(self) -> None:
        import requests  # a dependency of mlflow

        while not self._stop_watch.is_set():
            asked = time.monotonic()
            try:
                ping_server(self.tracking_uri, self.probe_seconds)
                self._down_since = None
            except requests.RequestException:
                if self._down_since is None:
                    self._down_since = asked
            self._stop_watch.wait(max(0.0, self.probe_seconds - (time.monotonic() - asked)))

    def unreachable_seconds(self) -> float:
        """For how long the server has not answered (0 while it answers, or when nobody watches)."""
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    def outage_too_long(self) -> bool:
        return self.max_outage_seconds is not None and self.unreachable_seconds() >= self.max_outage_seconds

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        self._stop_watch.set()
        if self.outage_too_long():
            # Away past the limit (the fit stopped for it): closing the run would wait out MLflow's
            # retries and then fail. Leave it RUNNING, which is how `--ckpt_path last` finds it.
            return
        # A server that is only briefly away is waited for (MLflow retries), so the run is closed
        # and the queued metrics reach it.
        super().finalize(status)


def send_missing(client: Any, run_id: str, journal: Path) -> int:
    """Log every metric of ``journal`` that run ``run_id`` lacks, with its own step and time; how many were sent.

    A metric counts as there when the run has the same key, step, time and value: one that
    reached the server before an outage is not sent again, one MLflow's queue dropped is.
    """
    from mlflow.entities import Metric

    wanted = list(_read(journal))
    have: set[tuple[str, int, int, float]] = set()
    for key in {entry["key"] for entry in wanted}:
        have.update((key, m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key))
    missing = []
    for entry in wanted:
        ident = (entry["key"], entry["step"], entry["timestamp"], entry["value"])
        if ident not in have:
            have.add(ident)  # sent once, even if journaled twice
            missing.append(Metric(key=entry["key"], value=entry["value"], timestamp=entry["timestamp"], step=entry["step"]))
    client.log_batch(run_id, metrics=missing, synchronous=True)  # split into batches of 1000 by MLflow's client
    return len(missing)


def _read(journal: Path) -> Iterable[dict[str, Any]]:
    if not journal.is_file():
        return
    with journal.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a process killed while writing it


__all__ = ["JOURNAL_NAME", "TRACKING_OUTAGE_EXIT_CODE", "ServerMLFlowLogger", "send_missing"]

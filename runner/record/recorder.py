"""The one writer of experiment rows, and the live writer of their curves.

`ExperimentRecorder` owns every write to an experiment's row over one connection: a blocked
candidate, the start of a run, its end (measurements and findings), the loop's judgement and a
close by interruption. The check, the trial and the loop all write through the one the command
opened, so an experiment's row has one author. `LiveRecorder` writes what streams in while a phase
runs (metric points, resource samples) to their own tables, from its own thread and connection, so
a slow disk never stalls the output of a container.
"""

import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from autoresearch.runner.check.findings import Finding
from autoresearch.runner.phases.metrics import ProgressPoint
from autoresearch.runner.record import store
from autoresearch.runner.record.status import Status
from autoresearch.runner.sandbox.monitor import Sample

MAX_METRIC_POINTS = 100_000  # per experiment: a flood of progress lines cannot fill the store
FLUSH_INTERVAL_S = 0.25


class ExperimentRecorder:
    """Creates and updates experiment rows; the only code that does (tests/test_recorder.py checks)."""

    def __init__(self, conn: sqlite3.Connection | None = None, store_path: Path | None = None):
        """Over conn, or over a writer connection to store_path opened at the first write (so a command that
        fails before it records anything leaves no store behind)."""
        self._conn, self.store_path = conn, store_path

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.store_path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = store.open_store(self.store_path)
        return self._conn

    def close(self) -> None:
        """Close the connection this recorder opened (one it was given is its owner's to close)."""
        if self._conn is not None and self.store_path is not None:
            self._conn.close()
            self._conn = None

    def blocked(self, reason: str, findings: list[Finding], status: str = Status.BLOCKED, **row: Any) -> int:
        """A candidate refused before it ran: blocked by the static rules, or (status violation) handed back by an
        agent that broke its confinement. Recorded, ended, never run."""
        exp_id = store.create_experiment(self.conn, status=status, ended_at=time.time(), exit_reason=reason, **row)
        store.add_findings(self.conn, exp_id, findings)
        return exp_id

    def started(self, findings: list[Finding], **row: Any) -> int:
        """A candidate about to run, with its static findings."""
        exp_id = store.create_experiment(self.conn, status=Status.RUNNING, **row)
        store.add_findings(self.conn, exp_id, findings)
        return exp_id

    def update(self, exp_id: int, **fields: Any) -> None:
        """More of a running experiment's row (its log path)."""
        store.update_experiment(self.conn, exp_id, **fields)

    def ended(self, exp_id: int, status: str, findings: list[Finding], **measured: Any) -> None:
        """The trial's end: its status (before the loop's judgement), measurements and dynamic findings."""
        store.add_findings(self.conn, exp_id, findings)
        store.update_experiment(self.conn, exp_id, status=status, ended_at=time.time(), **measured)

    def judged(self, exp_id: int, status: str, **fields: Any) -> None:
        """The loop's verdict on a trial: keep or discard (or the failure it already was), test score, timings."""
        store.update_experiment(self.conn, exp_id, status=status, **fields)

    def interrupted(self, exp_id: int, reason: str) -> None:
        """Closed because the runner or the sandbox went away (reason starts with status.INTERRUPTED)."""
        store.update_experiment(self.conn, exp_id, status=Status.KILLED, ended_at=time.time(), exit_reason=reason)


def open_recorder(store_path: Path) -> ExperimentRecorder:
    """A recorder with its own writer connection to the store at store_path, opened when first needed."""
    return ExperimentRecorder(store_path=store_path)


class LiveRecorder:
    """Writes metric points and resource samples to the store from its own thread, every 0.25 s."""

    def __init__(self, store_path: Path, experiment_id: int):
        self.store_path, self.experiment_id = store_path, experiment_id
        self.queue: queue.Queue = queue.Queue()
        self.points = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="recorder", daemon=True)
        self._thread.start()

    def point(self, point: ProgressPoint) -> None:
        if self.points < MAX_METRIC_POINTS:
            self.points += 1
            self.queue.put(("point", point))

    def sample(self, sample: Sample) -> None:
        self.queue.put(("sample", sample))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        conn = store.open_store(self.store_path)
        try:
            while not self._stop.is_set():
                self._stop.wait(FLUSH_INTERVAL_S)
                self._flush(conn)
            self._flush(conn)
        finally:
            conn.close()

    def _flush(self, conn: sqlite3.Connection) -> None:
        points, samples = [], []
        while not self.queue.empty():
            kind, item = self.queue.get_nowait()
            (points if kind == "point" else samples).append(item)
        if points:
            store.add_metric_points(conn, self.experiment_id, points)
        if samples:
            store.add_gpu_samples(conn, self.experiment_id, samples)

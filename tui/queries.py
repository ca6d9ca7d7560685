"""The TUI's own read queries, beside runner/record/store.py's: incremental and bounded, for a live view.

Each is one indexed SELECT on a read-only connection; rows decode to the store's own dataclasses.
"""

import sqlite3
from dataclasses import dataclass
from typing import Any

from autoresearch.runner.record import store

EXPERIMENT_SQL = f"SELECT {', '.join(store.EXPERIMENT_COLUMNS)} FROM experiments"
GPU_SQL = f"SELECT {', '.join(store.GPU_COLUMNS)} FROM gpu_samples"
RUN_SQL = f"SELECT {', '.join(store.RUN_COLUMNS)} FROM runs"
TURN_COLUMNS = ("id", "model", "input_tokens", "output_tokens", "cost_usd", "latency_s", "response_json", "error",
                "recorded_at")


@dataclass(frozen=True)
class AgentTurn:
    """One logged model call of an experiment's proposal (the fields the drill-down shows)."""

    id: int
    model: str
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    latency_s: float | None
    response_json: dict | None
    error: str | None
    recorded_at: float


def _decoded(row_type: type, row: sqlite3.Row) -> Any:
    return row_type(**{key: store.decode(key, row[key]) for key in row.keys()})  # noqa: SIM118 (Row is no dict)


def latest_run(conn: sqlite3.Connection) -> store.Run | None:
    row = conn.execute(f"{RUN_SQL} ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else _decoded(store.Run, row)


def experiments_from(conn: sqlite3.Connection, run_id: int, first_id: int) -> list[store.Experiment]:
    """The run's experiments with id >= first_id, oldest first."""
    rows = conn.execute(f"{EXPERIMENT_SQL} WHERE run_id = ? AND id >= ? ORDER BY id", (run_id, first_id))
    return [_decoded(store.Experiment, row) for row in rows]


def experiment_count(conn: sqlite3.Connection, run_id: int) -> int:
    return conn.execute("SELECT COUNT(*) FROM experiments WHERE run_id = ?", (run_id,)).fetchone()[0]


def point_count(conn: sqlite3.Connection, experiment_id: int) -> int:
    return conn.execute("SELECT COUNT(*) FROM metric_points WHERE experiment_id = ?", (experiment_id,)).fetchone()[0]


def last_points(conn: sqlite3.Connection, experiment_id: int, limit: int) -> list[store.MetricPoint]:
    """The experiment's newest `limit` metric points, in step order."""
    rows = conn.execute(f"SELECT {', '.join(store.METRIC_COLUMNS)} FROM metric_points WHERE experiment_id = ? "
                        "ORDER BY step DESC LIMIT ?", (experiment_id, limit)).fetchall()
    return [_decoded(store.MetricPoint, row) for row in reversed(rows)]


def gpu_samples_after(conn: sqlite3.Connection, after_id: int, limit: int) -> list[store.GpuSample]:
    """Up to the latest `limit` samples with id > after_id, oldest first."""
    rows = conn.execute(f"{GPU_SQL} WHERE id > ? ORDER BY id DESC LIMIT ?", (after_id, limit)).fetchall()
    return [_decoded(store.GpuSample, row) for row in reversed(rows)]


def agent_turns(conn: sqlite3.Connection, experiment_id: int) -> list[AgentTurn]:
    """The model calls logged for an experiment's proposal, in order."""
    rows = conn.execute(f"SELECT {', '.join(TURN_COLUMNS)} FROM agent_turns WHERE experiment_id = ? ORDER BY id",
                        (experiment_id,))
    return [_decoded(AgentTurn, row) for row in rows]


def latest_model(conn: sqlite3.Connection, run_id: int) -> str | None:
    """The model of the run's latest agent call, if it made any."""
    row = conn.execute("SELECT model FROM agent_turns WHERE run_id = ? ORDER BY id DESC LIMIT 1", (run_id,)).fetchone()
    return None if row is None else row[0]


def run_findings(conn: sqlite3.Connection, run_id: int) -> list[tuple[int, store.StoredFinding]]:
    """Every finding of the run's experiments, in the order recorded, with its experiment's seq."""
    seqs = dict(conn.execute("SELECT id, seq FROM experiments WHERE run_id = ?", (run_id,)).fetchall())
    return [(seqs[f.experiment_id], f) for f in store.list_findings(conn) if f.experiment_id in seqs]

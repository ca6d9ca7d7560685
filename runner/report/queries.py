"""The report's reads that store.py has no function for: the agent's words per experiment, samples per hour.

Both are single SELECTs on a read-only connection; what an agent wrote is data (runner/record/untrusted.py).
"""

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from autoresearch.runner.errors import UserError
from autoresearch.runner.record import store
from autoresearch.runner.record.untrusted import as_data

REASONING_CHARS = 300  # the agent's one line, as the report shows it
BATCH = 500  # experiment ids per SELECT (far below SQLite's limit on parameters)


@dataclass(frozen=True)
class HourUse:
    """The device samples of some hours of a run: a GPU's (nvml) or the experiments' CPU use (psutil)."""

    hour: int  # the first of them; 0: the run's first hour
    hours: int  # how many
    kind: str  # nvml or psutil
    util_percent: float | None  # the mean (psutil: 100 is one core)
    samples: int
    devices: int


def run_experiments(conn: sqlite3.Connection, run: store.Run) -> list[store.Experiment]:
    """The run's experiments, oldest first; a clear error when it has none (nothing to report or draw)."""
    experiments = store.list_experiments(conn, run.id)
    if not experiments:
        raise UserError(f"run {run.tag} has no experiment yet: nothing to report")
    return experiments


def reasoning(conn: sqlite3.Connection, experiment_ids: Iterable[int]) -> dict[int, str]:
    """For each experiment whose proposal logged a turn with text: the first line of the text of its last such
    turn (as data), by experiment id."""
    found: dict[int, str] = {}
    ids = list(experiment_ids)
    for start in range(0, len(ids), BATCH):
        chunk = ids[start:start + BATCH]
        rows = conn.execute(f"SELECT experiment_id, response_json FROM agent_turns WHERE experiment_id IN "
                            f"({', '.join('?' * len(chunk))}) ORDER BY id", chunk)
        for experiment_id, raw in rows:
            line = first_line(reply_text(store.decode("response_json", raw)))
            if line:
                found[experiment_id] = as_data(line, REASONING_CHARS)
    return found


def reply_text(response: object) -> str:
    """The text a model wrote in one logged reply: Anthropic's content blocks, or OpenAI's Chat Completions
    message or Responses output; "" for anything else (a CLI agent's gateway logs usage only)."""
    if not isinstance(response, dict):
        return ""
    parts: list[object] = []
    for block in _list(response.get("content")):
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text"))
    for choice in _list(response.get("choices")):
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            parts.append(message.get("content"))
    for item in _list(response.get("output")):
        for block in _list(item.get("content") if isinstance(item, dict) else None):
            if isinstance(block, dict) and block.get("type") == "output_text":
                parts.append(block.get("text"))
    return "\n".join(part for part in parts if isinstance(part, str))


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def hourly_use(conn: sqlite3.Connection, run: store.Run, until: float, hours: int = 1) -> list[HourUse]:
    """The run's samples per `hours` hours since it started: those of its experiments, and those taken between
    experiments while it ran (until: when it ended or last beat)."""
    rows = conn.execute(
        "SELECT CAST((s.recorded_at - :start) / :span AS INTEGER) AS part, s.kind, AVG(s.util_percent), COUNT(*), "
        "COUNT(DISTINCT s.device) FROM gpu_samples AS s LEFT JOIN experiments AS e ON e.id = s.experiment_id "
        "WHERE (e.run_id = :run) OR (s.experiment_id IS NULL AND s.recorded_at BETWEEN :start AND :until) "
        "GROUP BY part, s.kind ORDER BY part, s.kind",
        {"start": run.started_at, "span": 3600 * hours, "run": run.id, "until": until}).fetchall()
    return [HourUse(int(part) * hours, hours, kind, util, samples, devices)
            for part, kind, util, samples, devices in rows]

"""Reading the store for the TUI: one consistent snapshot per poll, from a read-only connection.

The runner is the store's only writer; the TUI is one of its readers. A `StorePoller` lives in one
thread (sqlite3 connections stay in the thread that opened them) and, every poll:
- asks `PRAGMA data_version` whether anyone committed since the last poll, and returns None (nothing
  to redraw) when nobody did and the selection is the same;
- otherwise reads everything it shows inside one short read transaction (`BEGIN` ... `COMMIT`), so the
  experiments, points and findings agree with each other, and never keeps a transaction open between
  polls (a WAL reader that did would stop the writer's checkpoints from recycling the log).
Metric points are fetched incrementally (they are never updated once written), with a row count as a
check that catches points a misbehaving train.py printed out of step order.
"""

import sqlite3
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch.runner import store
from autoresearch.runner.errors import UserError

OK_STATUSES = frozenset({"ok", "keep", "discard"})  # finished and scored by the trusted evaluation
BEST_STATUSES = frozenset({"ok", "keep"})  # may hold the best score (a discard was not an improvement)
CRASHED_STATUSES = frozenset({"crash", "timeout", "oom", "killed"})
ACTIVE_STATUSES = frozenset({"pending", "running"})


@dataclass(frozen=True)
class Snapshot:
    """What the screen shows at one moment. `error` set: the store cannot be read, nothing else is."""

    experiments: tuple[store.Experiment, ...] = ()  # oldest first
    selected: store.Experiment | None = None
    following: bool = True  # selected is the one the TUI follows (running, else newest), not a pick
    points: tuple[store.MetricPoint, ...] = ()  # the selected experiment's, in step order
    findings: tuple[store.StoredFinding, ...] = ()  # the selected experiment's
    budget_s: float | None = None  # the selected experiment's time budget, when the store says it
    error: str | None = None
    store_exists: bool = True


@dataclass(frozen=True)
class Summary:
    """The header's counts and the best trusted score."""

    done: int = 0
    ok: int = 0
    crashed: int = 0
    blocked: int = 0
    violation: int = 0
    running: int = 0
    best: store.Experiment | None = None


def summarize(experiments: tuple[store.Experiment, ...]) -> Summary:
    """Counts by outcome and the experiment with the lowest trusted val_bpb among ok/keep ones."""
    statuses = [e.status for e in experiments]
    scored = [e for e in experiments if e.status in BEST_STATUSES and e.val_bpb is not None]
    return Summary(
        done=sum(s not in ACTIVE_STATUSES for s in statuses),
        ok=sum(s in OK_STATUSES for s in statuses),
        crashed=sum(s in CRASHED_STATUSES for s in statuses),
        blocked=statuses.count("blocked"),
        violation=statuses.count("violation"),
        running=sum(s in ACTIVE_STATUSES for s in statuses),
        best=min(scored, key=lambda e: e.val_bpb or 0.0, default=None),
    )


def followed(experiments: tuple[store.Experiment, ...]) -> store.Experiment | None:
    """The experiment to show when the user has picked none: the newest running one, else the newest."""
    running = [e for e in experiments if e.status in ACTIVE_STATUSES]
    return (running or list(experiments) or [None])[-1]


@dataclass
class StorePoller:
    """Polls one store file; use it from a single thread."""

    path: Path
    _conn: sqlite3.Connection | None = None
    _data_version: int | None = None
    _last_pick: int | None = None
    _last: Snapshot | None = None
    _points_of: int | None = None
    _points: list[store.MetricPoint] = field(default_factory=list)
    _budgets: dict[int, float | None] = field(default_factory=dict)  # run id -> its policy's budget

    def poll(self, pick: int | None = None, force: bool = False) -> Snapshot | None:
        """A new snapshot, showing experiment `pick` (None: follow), or None when nothing changed."""
        try:
            snapshot = self._poll(pick, force)
        except UserError as exc:
            self.close()
            snapshot = Snapshot(error=str(exc))
        except sqlite3.Error as exc:
            self.close()
            snapshot = Snapshot(error=f"cannot read the store {self.path}: {exc}")
        if snapshot is None or (snapshot == self._last and not force):
            return None
        self._last = snapshot
        return snapshot

    def close(self) -> None:
        """Close the connection (the next poll opens a new one)."""
        if self._conn is not None:
            self._conn.close()
        self._conn, self._data_version, self._points_of = None, None, None

    def _poll(self, pick: int | None, force: bool) -> Snapshot | None:
        if not self.path.is_file():
            self.close()
            return Snapshot(store_exists=False)
        if self._conn is None:
            self._conn = store.open_store(self.path, readonly=True)
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version and pick == self._last_pick and not force:
            return None
        self._conn.execute("BEGIN")
        try:
            snapshot = self._read(self._conn, pick)
        finally:
            self._conn.execute("COMMIT")
        self._data_version, self._last_pick = version, pick
        return snapshot

    def _read(self, conn: sqlite3.Connection, pick: int | None) -> Snapshot:
        experiments = tuple(store.list_experiments(conn))
        chosen = next((e for e in experiments if e.id == pick), None) if pick is not None else None
        selected = chosen or followed(experiments)
        if selected is None:
            return Snapshot()
        return Snapshot(
            experiments=experiments,
            selected=selected,
            following=chosen is None,
            points=tuple(self._read_points(conn, selected.id)),
            findings=tuple(store.list_findings(conn, selected.id)),
            budget_s=self._run_budget(conn, selected.run_id),
        )

    def _read_points(self, conn: sqlite3.Connection, experiment_id: int) -> list[store.MetricPoint]:
        """The experiment's points: only the new ones are read, all of them when the count disagrees."""
        if self._points_of != experiment_id:
            self._points_of, self._points = experiment_id, []
        since = self._points[-1].step + 1 if self._points else -(2**63)
        self._points.extend(store.metric_points(conn, experiment_id, since_step=since))
        count = conn.execute("SELECT COUNT(*) FROM metric_points WHERE experiment_id = ?", (experiment_id,))
        if count.fetchone()[0] != len(self._points):
            self._points = store.metric_points(conn, experiment_id, since_step=-(2**63))
        return self._points

    def _run_budget(self, conn: sqlite3.Connection, run_id: int | None) -> float | None:
        """The time budget in the policy of the experiment's run, if it has a run and the policy says."""
        if run_id is None:
            return None
        if run_id not in self._budgets:
            run = store.get_run(conn, run_id)
            self._budgets[run_id] = policy_budget(run.policy_toml) if run else None
        return self._budgets[run_id]


def policy_budget(policy_toml: str) -> float | None:
    """`limits.time_budget_s` of a policy's TOML text, or None."""
    try:
        value = tomllib.loads(policy_toml).get("limits", {}).get("time_budget_s")
    except (tomllib.TOMLDecodeError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and value > 0 else None

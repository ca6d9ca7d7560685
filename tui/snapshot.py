"""Reading the store for the dashboard: one consistent snapshot per poll, from a read-only connection.

The runner is the store's only writer; the TUI is one of its readers. A `StorePoller` lives in one
thread (sqlite3 connections stay in the thread that opened them) and, every poll:
- asks `PRAGMA data_version` whether anyone committed since the last poll, and returns None (nothing
  to redraw) when nobody did;
- otherwise reads what changed inside one short read transaction (`BEGIN` ... `COMMIT`), so the parts
  agree with each other, and never keeps a transaction open between polls (a WAL reader that did would
  stop the writer's checkpoints from recycling the log).

Everything is read incrementally, so a poll costs the same with 10 experiments or 10,000:
- experiments: only those from the oldest one that may still change (running, pending, or scored but
  not yet decided) or among the last few, with the run's row count as a check that forces a full read;
- metric points: only new steps of the followed experiment (points are never updated), with a row
  count as a check that catches a train.py printing steps out of order; the best kept experiment's
  points are read once per best;
- GPU samples: only rows newer than the last one read, keeping the last HISTORY_SAMPLES;
- lanes (one per slot of the run, views.slot_lanes): the last LANE_POINTS points of each experiment a slot
  runs, one bounded query per busy slot; nodes: the run's `nodes` rows (one per node).
A part that did not change is the same object in the next snapshot, so a panel compares by identity.
"""

import sqlite3
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch.runner.errors import UserError
from autoresearch.runner.record import store, views
from autoresearch.runner.record.status import OPEN, UNSETTLED
from autoresearch.tui import queries

TAIL = 3  # the newest experiments are always read again (the loop updates them after they settle)
HISTORY_SAMPLES = 2400  # GPU samples kept for the history: 10 minutes at the monitor's 4 Hz
LANE_POINTS = 48  # the points of a lane's sparkline: the newest of the experiment it runs
EARLIEST = -(2**63)


@dataclass(frozen=True)
class Lane:
    """One slot of the run, the experiment it runs (if any) and that experiment's newest points."""

    slot: views.SlotLane
    points: tuple[store.MetricPoint, ...] = ()  # its last LANE_POINTS, in step order

    @property
    def experiment(self) -> store.Experiment | None:
        return self.slot.experiment


@dataclass(frozen=True)
class Snapshot:
    """What the dashboard shows at one moment. `error` set: the store cannot be read, nothing else is."""

    error: str | None = None
    store_exists: bool = True
    run: store.Run | None = None
    experiments: tuple[store.Experiment, ...] = ()  # the run's, oldest first
    counts: dict[str, int] = field(default_factory=dict)  # experiments by status
    live: store.Experiment | None = None  # the running experiment, else the newest
    live_points: tuple[store.MetricPoint, ...] = ()
    best: store.Experiment | None = None  # views.best: the best kept experiment
    best_points: tuple[store.MetricPoint, ...] = ()
    budget_s: float | None = None  # views.run_budget_s: the run's training seconds per experiment
    gpu: tuple[store.GpuSample, ...] = ()  # the latest samples, oldest first
    spent_usd: float = 0.0
    model: str | None = None  # the agent's model, when it has one
    lanes: tuple[Lane, ...] = ()  # one per slot of the run (one unnamed lane for a run that recorded none)
    nodes: tuple[store.Node, ...] = ()  # the run's nodes as the runner last saw them (none for a local run)

    @property
    def multi_slot(self) -> bool:
        """More than one slot, or nodes of a cluster: the dashboard then shows its lanes and nodes."""
        run = self.run
        return len(self.lanes) > 1 or bool(self.nodes) or (run is not None and run.executor == "ray")

    @property
    def baseline(self) -> store.Experiment | None:
        """The first kept experiment: the run's baseline."""
        return views.baseline(self.experiments)


def configured_model(run: store.Run) -> str | None:
    """The model in the run's config, for the agents that have one (not the offline sweep)."""
    if run.agent != "claude":
        return None
    try:
        agent = tomllib.loads(run.config_toml).get("agent", {})
    except tomllib.TOMLDecodeError:
        return None
    model = agent.get("model") if isinstance(agent, dict) else None
    return model if isinstance(model, str) else "claude (default model)"


@dataclass
class StorePoller:
    """Polls one store file for one run (tag None: the latest run); use it from a single thread."""

    path: Path
    tag: str | None = None
    _conn: sqlite3.Connection | None = None
    _data_version: int | None = None
    _last: Snapshot | None = None
    _run_id: int | None = None
    _experiments: dict[int, store.Experiment] = field(default_factory=dict)
    _experiment_tuple: tuple[store.Experiment, ...] = ()
    _counts: dict[str, int] = field(default_factory=dict)
    _live_id: int | None = None
    _live_points: list[store.MetricPoint] = field(default_factory=list)
    _live_tuple: tuple[store.MetricPoint, ...] = ()
    _best_id: int | None = None
    _best_points: tuple[store.MetricPoint, ...] = ()
    _gpu: deque = field(default_factory=lambda: deque(maxlen=HISTORY_SAMPLES))
    _gpu_tuple: tuple[store.GpuSample, ...] = ()
    _lanes: tuple[Lane, ...] = ()
    _nodes: tuple[store.Node, ...] = ()

    def poll(self, force: bool = False) -> Snapshot | None:
        """A new snapshot, or None when nothing changed since the last one."""
        try:
            snapshot = self._poll(force)
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

    def follow(self, tag: str | None) -> None:
        """Show the run with tag from the next poll on (None: the latest run)."""
        self.tag, self._data_version = tag, None

    def close(self) -> None:
        """Close the connection (the next poll opens a new one and reads everything again)."""
        if self._conn is not None:
            self._conn.close()
        self._conn, self._data_version, self._run_id = None, None, None

    def _poll(self, force: bool) -> Snapshot | None:
        if not self.path.is_file():
            self.close()
            return Snapshot(store_exists=False)
        if self._conn is None:
            self._conn = store.open_store(self.path, readonly=True)
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version and not force:
            return None
        self._conn.execute("BEGIN")
        try:
            snapshot = self._read(self._conn)
        finally:
            self._conn.execute("COMMIT")
        self._data_version = version
        return snapshot

    def _read(self, conn: sqlite3.Connection) -> Snapshot:
        run = store.run_by_tag(conn, self.tag) if self.tag else queries.latest_run(conn)
        gpu = self._read_gpu(conn)
        if run is None:
            return Snapshot(gpu=gpu)
        if run.id != self._run_id:
            self._run_id, self._experiments, self._experiment_tuple, self._counts = run.id, {}, (), {}
            self._live_id = self._best_id = None
        experiments = self._read_experiments(conn, run.id)
        running = [e for e in experiments if e.status in OPEN]
        live = (running or list(experiments) or [None])[-1]
        best = views.best(experiments)
        return Snapshot(
            run=run, experiments=experiments, counts=self._counts, live=live,
            live_points=self._read_live_points(conn, live.id) if live else (),
            best=best, best_points=self._read_best_points(conn, best.id) if best else (),
            budget_s=views.run_budget_s(run), gpu=gpu, spent_usd=store.spent_usd(conn, run.id),
            model=queries.latest_model(conn, run.id) or configured_model(run),
            lanes=self._read_lanes(conn, run, experiments), nodes=self._read_nodes(conn, run.id),
        )

    def _read_experiments(self, conn: sqlite3.Connection, run_id: int) -> tuple[store.Experiment, ...]:
        ids = list(self._experiments)
        unsettled = [i for i, e in self._experiments.items() if e.status in UNSETTLED]
        first = min([*unsettled, *ids[-TAIL:]], default=EARLIEST)
        changed = False
        for experiment in queries.experiments_from(conn, run_id, first):
            if self._experiments.get(experiment.id) != experiment:
                self._experiments[experiment.id] = experiment
                changed = True
        if len(self._experiments) != queries.experiment_count(conn, run_id):  # one was deleted or missed
            self._experiments = {e.id: e for e in queries.experiments_from(conn, run_id, EARLIEST)}
            changed = True
        if changed:
            self._experiment_tuple = tuple(self._experiments.values())
            self._counts = views.counts(self._experiment_tuple)
        return self._experiment_tuple

    def _read_live_points(self, conn: sqlite3.Connection, experiment_id: int) -> tuple[store.MetricPoint, ...]:
        if self._live_id != experiment_id:
            self._live_id, self._live_points, self._live_tuple = experiment_id, [], ()
        since = self._live_points[-1].step + 1 if self._live_points else EARLIEST
        new = store.metric_points(conn, experiment_id, since_step=since)
        self._live_points.extend(new)
        if queries.point_count(conn, experiment_id) != len(self._live_points):
            self._live_points, new = store.metric_points(conn, experiment_id, since_step=EARLIEST), [None]
        if new:
            self._live_tuple = tuple(self._live_points)
        return self._live_tuple

    def _read_best_points(self, conn: sqlite3.Connection, experiment_id: int) -> tuple[store.MetricPoint, ...]:
        if self._best_id != experiment_id:
            self._best_id = experiment_id
            self._best_points = tuple(store.metric_points(conn, experiment_id, since_step=EARLIEST))
        return self._best_points

    def _read_lanes(self, conn: sqlite3.Connection, run: store.Run,
                    experiments: tuple[store.Experiment, ...]) -> tuple[Lane, ...]:
        previous = {lane.experiment.id: lane.points for lane in self._lanes if lane.experiment is not None}
        lanes = []
        for slot in views.slot_lanes(run, experiments):
            points: tuple[store.MetricPoint, ...] = ()
            if slot.experiment is not None:
                points = tuple(queries.last_points(conn, slot.experiment.id, LANE_POINTS))
                old = previous.get(slot.experiment.id)
                points = old if old == points else points
            lanes.append(Lane(slot, points))
        new = tuple(lanes)
        if new != self._lanes:
            self._lanes = new
        return self._lanes

    def _read_nodes(self, conn: sqlite3.Connection, run_id: int) -> tuple[store.Node, ...]:
        nodes = tuple(store.list_nodes(conn, run_id))
        if nodes != self._nodes:
            self._nodes = nodes
        return self._nodes

    def _read_gpu(self, conn: sqlite3.Connection) -> tuple[store.GpuSample, ...]:
        after = self._gpu[-1].id if self._gpu else EARLIEST
        new = queries.gpu_samples_after(conn, after, HISTORY_SAMPLES)
        if new:
            self._gpu.extend(new)
            self._gpu_tuple = tuple(self._gpu)
        return self._gpu_tuple


"""`python -m autoresearch.tui.bench`: the TUI against a large store, measured.

It builds a store of EXPERIMENTS experiments with POINTS_PER metric points each (10,000 and a million by
default: many nights of a fast loop), the last experiment running, then starts the TUI in a child process
(headless, 200x60, so no terminal is needed) and measures:
- start-up: from spawning the child (Python start and imports included) to the first full render of the
  dashboard, every panel drawn from the store;
- idle CPU: the child's CPU seconds over IDLE_S seconds of wall time while nothing is written;
- live latency: another process appends a metric point to the running experiment every WRITE_INTERVAL_S;
  for each, the time from its commit to the render of the loss curve that includes it;
- poll cost: what one poll of the store costs right after a point was written (in this process).
It prints the figures, and JSON with --json.
"""

import argparse
import asyncio
import json
import math
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from autoresearch.runner.phases.metrics import ProgressPoint
from autoresearch.runner.record import store
from autoresearch.runner.record.status import FAILED, OPEN, Status
from autoresearch.runner.workspace import Workspace
from autoresearch.tui.snapshot import StorePoller

EXPERIMENTS = 10_000
POINTS_PER = 100
IDLE_S = 10.0
WRITES = 20
WRITE_INTERVAL_S = 0.5
SIZE = (200, 60)
STATUSES = (Status.DISCARD, Status.DISCARD, Status.DISCARD, Status.DISCARD, Status.CRASH, Status.DISCARD,
            Status.BLOCKED, Status.DISCARD, Status.TIMEOUT, Status.DISCARD)


@dataclass(frozen=True)
class Figures:
    experiments: int
    metric_points: int
    build_s: float
    startup_s: float
    idle_cpu_percent: float
    latency_median_s: float
    latency_max_s: float
    latencies_seen: int
    poll_after_write_ms: float


def build_store(root: Path, experiments: int, points_per: int) -> int:
    """A workspace at root with one run of `experiments` (the last running); the running experiment's id."""
    root.mkdir(parents=True, exist_ok=True)
    ws = Workspace(root, root, False)
    conn = store.open_store(ws.store_path)
    try:
        run_id = store.create_run(conn, tag="bench", agent="sweep", policy_toml="[limits]\ntime_budget_s = 300\n")
        started = time.time() - experiments * 300.0
        rows, best = [], 1.0
        for seq in range(1, experiments + 1):
            status = (Status.RUNNING if seq == experiments else Status.KEEP if seq % 50 == 1
                      else STATUSES[seq % len(STATUSES)])
            val = None if status in FAILED | OPEN | {Status.BLOCKED} else best + 0.002 * (seq % 7) / 7
            if status == Status.KEEP:
                best = val = best - 0.0005
            rows.append((run_id, seq, f"{seq:040x}", f"{seq - 1:040x}", f"experiment {seq}: a change", status, val,
                         300.0 if val else None, started + 300.0 * seq, None if status == Status.RUNNING else 20480.0))
        with store.transaction(conn):
            conn.executemany("INSERT INTO experiments (run_id, seq, commit_sha, parent_sha, description, status,"
                             " val_bpb, training_seconds, started_at, peak_vram_mb)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            conn.executemany(
                "INSERT INTO metric_points (experiment_id, step, elapsed, loss, tok_per_s, mfu, recorded_at)"
                " VALUES (?, ?, ?, ?, 50000.0, 40.0, 0.0)",
                ((e, s, s * 3.0, 1.0 + 3.0 * math.exp(-s / 20.0) + 0.01 * math.sin(e + s), )
                 for e in range(1, experiments + 1) for s in range(1, points_per + 1)))
            conn.executemany(
                "INSERT INTO gpu_samples (experiment_id, recorded_at, device, kind, util_percent, mem_used_mb,"
                " mem_total_mb) VALUES (?, ?, 'gpu0', 'nvml', ?, 40000.0, 81559.0)",
                ((experiments, time.time() - 600 + i / 4, 50 + 40 * math.sin(i / 100)) for i in range(2400)))
        return conn.execute("SELECT id FROM experiments WHERE status = 'running'").fetchone()[0]
    finally:
        conn.close()


def last_step(conn: sqlite3.Connection, experiment_id: int) -> int:
    row = conn.execute("SELECT MAX(step) FROM metric_points WHERE experiment_id = ?", (experiment_id,)).fetchone()
    return row[0] or 0


def write_points(store_path: Path, experiment_id: int, count: int, interval_s: float) -> None:
    """Append count points to the experiment, one per interval; print `step commit_time` for each."""
    conn = store.open_store(store_path)
    try:
        step = last_step(conn, experiment_id)
        for _ in range(count):
            time.sleep(interval_s)
            step += 1
            store.add_metric_points(conn, experiment_id, [ProgressPoint(step, step * 3.0, 1.0, 50000.0, 40.0)])
            print(step, time.time(), flush=True)
    finally:
        conn.close()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure_app(root: Path, spawned_at: float, idle_s: float, writes: int, interval_s: float,
                      experiment_id: int) -> dict:
    """In the child: start the TUI, then measure idle CPU and the latency of points written by another process."""
    from autoresearch.tui.app import AutoresearchApp
    from autoresearch.tui.loss import LossPlot

    drawn: dict[int, float] = {}
    render = LossPlot.render

    def timed_render(self: LossPlot):
        text = render(self)
        points = self._points[0] if self._points else ()
        if points:
            drawn.setdefault(points[-1].step, time.time())
        return text

    LossPlot.render = timed_render  # type: ignore[method-assign]
    app = AutoresearchApp(Workspace(root, root, False), readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        while app.dashboard is None or app.dashboard.snapshot is None:
            await asyncio.sleep(0.002)
        await pilot.pause()
        startup_s = time.time() - spawned_at
        before = cpu_seconds()
        await asyncio.sleep(idle_s)
        idle_cpu = (cpu_seconds() - before) / idle_s * 100
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "autoresearch.tui.bench", "--write", str(root), str(experiment_id), str(writes),
            str(interval_s), stdout=asyncio.subprocess.PIPE)
        output, _ = await writer.communicate()
        await asyncio.sleep(1.0)
    commits = [line.split() for line in output.decode().splitlines()]
    latencies = [drawn[int(step)] - float(at) for step, at in commits if int(step) in drawn]
    return {"startup_s": startup_s, "idle_cpu_percent": idle_cpu, "latencies": latencies}


def poll_after_write_ms(root: Path, experiment_id: int) -> float:
    """The mean cost of a poll that finds one new point, in this process."""
    ws = Workspace(root, root, False)
    poller = StorePoller(ws.store_path)
    poller.poll()
    conn = store.open_store(ws.store_path)
    costs = []
    try:
        step = last_step(conn, experiment_id)
        for _ in range(20):
            step += 1
            store.add_metric_points(conn, experiment_id, [ProgressPoint(step, step * 3.0, 1.0, 50000.0, 40.0)])
            began = time.perf_counter()
            poller.poll()
            costs.append(time.perf_counter() - began)
    finally:
        conn.close()
        poller.close()
    return statistics.mean(costs) * 1000


def run_bench(experiments: int = EXPERIMENTS, points_per: int = POINTS_PER, idle_s: float = IDLE_S,
              writes: int = WRITES, interval_s: float = WRITE_INTERVAL_S) -> Figures:
    """Build the store in a temporary folder, measure, clean up."""
    with tempfile.TemporaryDirectory(prefix="autoresearch-tui-bench-") as folder:
        root = Path(folder)
        began = time.perf_counter()
        experiment_id = build_store(root, experiments, points_per)
        build_s = time.perf_counter() - began
        spawned_at = time.time()
        child = subprocess.run([sys.executable, "-m", "autoresearch.tui.bench", "--child", str(root), str(spawned_at),
                                str(idle_s), str(writes), str(interval_s), str(experiment_id)],
                               capture_output=True, text=True, check=False)
        if child.returncode != 0:
            raise RuntimeError(f"the measuring child failed:\n{child.stderr}")
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        latencies = measured["latencies"] or [math.nan]
        return Figures(experiments, experiments * points_per, build_s, measured["startup_s"],
                       measured["idle_cpu_percent"], statistics.median(latencies), max(latencies),
                       len(measured["latencies"]), poll_after_write_ms(root, experiment_id))


def report(figures: Figures) -> str:
    return "\n".join([
        f"store: {figures.experiments:,} experiments, {figures.metric_points:,} metric points "
        f"(built in {figures.build_s:.1f} s)",
        f"start-up to the first full render: {figures.startup_s:.2f} s (Python start and imports included)",
        f"CPU when idle: {figures.idle_cpu_percent:.1f}% of one core",
        f"metric written by another process -> on the curve: median {figures.latency_median_s * 1000:.0f} ms, "
        f"max {figures.latency_max_s * 1000:.0f} ms ({figures.latencies_seen} points)",
        f"one poll after a write: {figures.poll_after_write_ms:.1f} ms",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--write"]:
        root, experiment_id, count, interval = argv[1:5]
        write_points(Workspace(Path(root), Path(root), False).store_path, int(experiment_id), int(count),
                     float(interval))
        return 0
    if argv[:1] == ["--child"]:
        root, spawned_at, idle_s, writes, interval, experiment_id = argv[1:7]
        measured = asyncio.run(measure_app(Path(root), float(spawned_at), float(idle_s), int(writes), float(interval),
                                           int(experiment_id)))
        print(json.dumps(measured))
        return 0
    parser = argparse.ArgumentParser(prog="python -m autoresearch.tui.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=EXPERIMENTS)
    parser.add_argument("--points", type=int, default=POINTS_PER, help="metric points per experiment")
    parser.add_argument("--idle", type=float, default=IDLE_S, help="seconds of idle CPU measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = run_bench(args.experiments, args.points, args.idle)
    print(json.dumps(asdict(figures)) if args.json else report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

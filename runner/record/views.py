"""What a run produced, read from the store and git: status, leaderboard, results.tsv, the best train.py.

Readers only: everything here opens the store read-only, so it works while the runner writes.
"""

import difflib
import socket
import sqlite3
import time
from dataclasses import asdict, dataclass

import psutil
import pygit2

from autoresearch.runner.errors import UserError
from autoresearch.runner.record import gitrepo, store

HEARTBEAT_STALE_S = 30.0
RESULTS_STATUS = {"keep": "keep", "discard": "discard"}  # autoresearch's results.tsv knows keep/discard/crash


@dataclass(frozen=True)
class LeaderboardRow:
    rank: int
    seq: int
    commit: str
    val_bpb: float
    gain: float  # over the baseline (positive: better)
    test_bpb: float | None
    peak_vram_mb: float | None
    description: str


@dataclass(frozen=True)
class RunStatus:
    tag: str
    state: str  # as recorded, or "dead" when the runner's heartbeat is stale and its pid is gone
    alive: bool
    pid: int | None
    note: str | None
    elapsed_s: float
    experiments: int
    counts: dict[str, int]
    best_val_bpb: float | None
    baseline_val_bpb: float | None
    best_commit: str | None
    spent_usd: float
    running: str | None  # the experiment being trained, if any


def pick_run(conn: sqlite3.Connection, tag: str | None) -> store.Run:
    """The run with tag, or the latest run; a clear error when there is none."""
    run = store.run_by_tag(conn, tag) if tag else (store.list_runs(conn) or [None])[-1]
    if run is None:
        raise UserError(f"no run tagged {tag!r} in this workspace" if tag else
                        "no run in this workspace yet: start one with `autoresearch run`")
    return run


def runner_alive(run: store.Run, now: float | None = None) -> bool:
    """A fresh heartbeat from a runner whose process (on this host) still exists."""
    if run.state not in ("running", "paused") or run.heartbeat_at is None:
        return False
    if (now or time.time()) - run.heartbeat_at >= HEARTBEAT_STALE_S:
        return False
    return run.host != socket.gethostname() or run.pid is None or psutil.pid_exists(run.pid)


def run_status(conn: sqlite3.Connection, run: store.Run) -> RunStatus:
    experiments = store.list_experiments(conn, run.id)
    counts: dict[str, int] = {}
    for experiment in experiments:
        counts[experiment.status] = counts.get(experiment.status, 0) + 1
    kept = [e for e in experiments if e.status == "keep"]
    alive = runner_alive(run)
    state = run.state if alive or run.state not in ("running", "paused") else "dead"
    running = next((f"#{e.seq} {e.description}" for e in experiments if e.status == "running"), None)
    return RunStatus(
        tag=run.tag, state=state, alive=alive, pid=run.pid, note=run.note,
        elapsed_s=(run.ended_at or time.time()) - run.started_at, experiments=len(experiments), counts=counts,
        best_val_bpb=kept[-1].val_bpb if kept else None, baseline_val_bpb=kept[0].val_bpb if kept else None,
        best_commit=kept[-1].commit_sha if kept else None, spent_usd=store.spent_usd(conn, run.id),
        running=running if alive else None)


def leaderboard(conn: sqlite3.Connection, run: store.Run) -> list[LeaderboardRow]:
    """Kept commits, best first, with the held-out test score beside the validation score."""
    kept = [e for e in store.list_experiments(conn, run.id) if e.status == "keep" and e.val_bpb is not None]
    if not kept:
        return []
    baseline = kept[0].val_bpb
    ranked = sorted(kept, key=lambda e: e.val_bpb)
    return [LeaderboardRow(rank, e.seq, (e.commit_sha or "")[:7], e.val_bpb, baseline - e.val_bpb, e.test_bpb,
                           memory_mb(e), e.description)
            for rank, e in enumerate(ranked, start=1)]


def memory_mb(experiment: store.Experiment) -> float | None:
    """Peak VRAM as train.py reported it, else (on CPU, where it reports 0) the host-measured peak memory."""
    return experiment.peak_vram_mb or experiment.host_peak_vram_mb


def render_leaderboard(rows: list[LeaderboardRow]) -> str:
    if not rows:
        return "no kept experiments yet"
    lines = [f"{'#':>3}  {'commit':7}  {'val_bpb':>9}  {'gain':>9}  {'test_bpb':>9}  {'VRAM MB':>8}  description"]
    for row in rows:
        test = f"{row.test_bpb:.6f}" if row.test_bpb is not None else "-"
        vram = f"{row.peak_vram_mb:.0f}" if row.peak_vram_mb is not None else "-"
        lines.append(f"{row.rank:>3}  {row.commit:7}  {row.val_bpb:9.6f}  {row.gain:+9.6f}  {test:>9}  {vram:>8}  "
                     f"{row.description}")
    return "\n".join(lines)


def results_tsv(conn: sqlite3.Connection, run: store.Run) -> str:
    """autoresearch's results.tsv: commit, val_bpb, memory_gb, status (keep/discard/crash), description.

    Statuses other than keep and discard are written as crash, with the real one in brackets in front
    of the description; a run that never scored has val_bpb 0.000000, as autoresearch writes it.
    """
    lines = ["commit\tval_bpb\tmemory_gb\tstatus\tdescription"]
    for e in store.list_experiments(conn, run.id):
        status = RESULTS_STATUS.get(e.status, "crash")
        description = e.description if status != "crash" else f"[{e.status}] {e.description}"
        lines.append("\t".join([
            (e.commit_sha or "-------")[:7], f"{e.val_bpb or 0.0:.6f}",
            f"{(memory_mb(e) or 0.0) / 1024:.1f}", status, " ".join(description.split())]))
    return "\n".join(lines) + "\n"


def best_experiment(conn: sqlite3.Connection, run: store.Run) -> store.Experiment:
    kept = [e for e in store.list_experiments(conn, run.id) if e.status == "keep" and e.commit_sha]
    if not kept:
        raise UserError(f"run {run.tag} has no kept experiment yet: nothing to export")
    return min(kept, key=lambda e: e.val_bpb)


def export_best(conn: sqlite3.Connection, repo: pygit2.Repository, run: store.Run) -> str:
    """The best kept train.py with a header comment of where it came from."""
    best = best_experiment(conn, run)
    by_sha = {e.commit_sha: e for e in store.list_experiments(conn, run.id) if e.commit_sha}
    chain = gitrepo.first_parent_chain(repo, best.commit_sha)
    ancestry = [f"#   {sha[:8]} {by_sha[sha].val_bpb:.6f}  {by_sha[sha].description}"
                for sha in chain if sha in by_sha and by_sha[sha].val_bpb is not None]
    test = f"{best.test_bpb:.6f}" if best.test_bpb is not None else "not scored"
    header = [
        f"# Exported by autoresearch from run {run.tag!r}, experiment {best.seq}, commit {best.commit_sha}.",
        f"# val_bpb {best.val_bpb:.6f} (trusted scoring, validation split); test_bpb {test} (held-out split).",
        f"# {best.description}",
        "# Parent chain, newest first (commit, val_bpb, description):",
        *ancestry,
        "",
    ]
    return "\n".join(header) + gitrepo.read_file(repo, best.commit_sha).decode(errors="replace")


def diff_against_baseline(conn: sqlite3.Connection, repo: pygit2.Repository, run: store.Run) -> str:
    best = best_experiment(conn, run)
    baseline = next(e for e in store.list_experiments(conn, run.id) if e.status == "keep")
    old = gitrepo.read_file(repo, baseline.commit_sha).decode(errors="replace").splitlines(keepends=True)
    new = gitrepo.read_file(repo, best.commit_sha).decode(errors="replace").splitlines(keepends=True)
    return "".join(difflib.unified_diff(old, new, f"baseline/{baseline.commit_sha[:8]}/train.py",
                                        f"best/{best.commit_sha[:8]}/train.py"))


def status_dict(status: RunStatus) -> dict:
    return asdict(status)


def render_status(status: RunStatus) -> str:
    done = ", ".join(f"{count} {name}" for name, count in sorted(status.counts.items())) or "none"
    hours = status.elapsed_s / 3600
    lines = [f"run {status.tag}: {status.state}" + (f" (pid {status.pid})" if status.alive else "")
             + (f" - {status.note}" if status.note and not status.alive else ""),
             f"  elapsed {hours:.2f} h, {status.experiments} experiments: {done}"]
    if status.running:
        lines.append(f"  training {status.running}")
    if status.best_val_bpb is not None:
        gain = status.baseline_val_bpb - status.best_val_bpb
        lines.append(f"  best val_bpb {status.best_val_bpb:.6f} ({gain:+.6f} over the baseline "
                     f"{status.baseline_val_bpb:.6f}) at {status.best_commit[:8]}")
    lines.append(f"  spent ${status.spent_usd:.2f} on the agent")
    if status.state == "dead":
        lines.append("  the runner died: `autoresearch run --tag " + status.tag + "` resumes it")
    return "\n".join(lines)

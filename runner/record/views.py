"""What a run produced, read from the store and git: the read models the CLI and the TUI both show.

Each answer is worked out here once: the best experiment, the baseline, the leaderboard, whether the
runner is alive (else the run shows as dead), the time budget and the sandbox of a run, its slots (what
each one runs) and nodes; the agent's spending is the store's `spent_usd`. Only candidates count as keeps:
an extra seed of the baseline (role noise) or of a close keep (role confirm) is a measurement, never a
leaderboard entry, whatever its status says. The pure ones take experiments already read (the TUI reads them
incrementally); the others open nothing and only read, so they work while the runner writes.
"""

import difflib
import socket
import sqlite3
import time
import tomllib
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import psutil
import pygit2

from autoresearch.runner.errors import UserError
from autoresearch.runner.record import gitrepo, store
from autoresearch.runner.record.status import DEAD, JUDGED, LIVE, MEASUREMENT_ROLES, OPEN, Status
from autoresearch.runner.record.untrusted import as_data

HEARTBEAT_STALE_S = 30.0
RESULTS_CRASH = "crash"  # autoresearch's results.tsv knows keep/discard/crash: every other status is written so
UNISOLATED_SANDBOXES = frozenset({"process"})  # providers that run task code as plain processes
NAME_CHARS = 64  # a slot's or node's name as shown: a node names itself, so it is untrusted text
LOCAL_NODE = "local"
# A node's state as the runner records it (runner/executors/base.py NODE_STATES); a local host without a live
# runner shows idle. The words of older drafts (alive, dead, left) read the same way.
NODE_UP = frozenset({"ready", "alive"})  # takes experiments
NODE_DOWN = frozenset({"lost", "refused", "dead"})  # stopped answering, or refused at join: shown in red
IDLE = "idle"


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
    running: str | None  # an experiment being trained (the newest, when several slots train), if any
    sandbox: str | None = None  # the sandbox provider's name (None: recorded before runs kept it)
    isolated: bool | None = None  # False: experiments ran as plain processes (None: unknown)
    executor: str | None = None  # local or ray (None: recorded before runs kept it: one local slot)
    device: str | None = None  # the device model every slot shares (a GPU's name, or cpu)
    slots: list[str] | None = None  # the slots the run last ran on (None: not recorded)
    running_by_slot: list[dict] | None = None  # one dict per open experiment: slot, node, seq, role, ...
    nodes: list[dict] | None = None  # one dict per node: name, address, gpus, device, state, util_percent, seen_at


@dataclass(frozen=True)
class SlotLane:
    """One slot of a run and the experiment it runs now (None: idle). Names are shown as data."""

    slot: str  # "gpu0", "node-b/gpu1"; "–" for an older run's one slot, which had no name
    node: str
    device: str | None  # the GPU model or cpu
    where: str | None  # the GPU's uuid or the CPU slot's cores
    experiment: store.Experiment | None


@dataclass(frozen=True)
class NodeView:
    """One node of a run as shown: the runner's `nodes` row, or the local host from the run's slots."""

    name: str
    address: str | None
    gpus: int
    device: str | None
    state: str  # starting, ready, refused, lost, gone, or idle (a local host without a live runner)
    util_percent: float | None
    seen_at: float | None
    slots: int
    note: str | None = None  # why it is refused or lost, as the runner recorded it (data)


# --- experiments: best, baseline, leaderboard ----------------------------------------------------------


def candidate(experiment: store.Experiment) -> bool:
    """The baseline or a candidate: not an extra seed measuring the noise (noise) or checking a keep (confirm)."""
    return experiment.role not in MEASUREMENT_ROLES


def kept(experiments: Iterable[store.Experiment]) -> list[store.Experiment]:
    """The kept candidates with a score, in the run's order (never a noise or confirm seed)."""
    return [e for e in experiments if e.status == Status.KEEP and e.val_bpb is not None and candidate(e)]


def best(experiments: Iterable[store.Experiment]) -> store.Experiment | None:
    """The run's best experiment: the kept one with the lowest val_bpb (the earliest of equals), or None.

    The loop keeps a candidate only when it beats the best so far, so this is also the last kept one.
    """
    return min(kept(experiments), key=lambda e: e.val_bpb, default=None)  # type: ignore[arg-type, return-value]


def baseline(experiments: Iterable[store.Experiment]) -> store.Experiment | None:
    """The run's baseline: its first kept candidate, or None."""
    return next((e for e in experiments if e.status == Status.KEEP and candidate(e)), None)


def frontier(experiments: Iterable[store.Experiment]) -> list[tuple[int, float]]:
    """(seq, val_bpb) of the best kept score so far, at each experiment from the first kept one: the kept frontier
    that the TUI's progress chart, progress.png and the report draw."""
    line: list[tuple[int, float]] = []
    best_bpb = None
    for e in experiments:
        if e.status == Status.KEEP and e.val_bpb is not None and candidate(e) and (best_bpb is None
                                                                                  or e.val_bpb < best_bpb):
            best_bpb = e.val_bpb
        if best_bpb is not None:
            line.append((e.seq, best_bpb))
    return line


def chart_top(scores: list[float], baseline_bpb: float | None) -> float:
    """The highest val_bpb a progress chart shows, from the chart's trusted scores (kept and discarded) and the
    baseline's: worse experiments show too, but a wild one (a diverged run) cannot squash the frontier: at most as
    far above the baseline as the frontier has come down, or 1% of the baseline; above that they are off the chart
    (each chart marks them on its top edge)."""
    lowest, worst = min(scores), max(scores)
    baseline_bpb = max(baseline_bpb if baseline_bpb is not None else lowest, lowest)
    return max(baseline_bpb, min(worst, baseline_bpb + max(baseline_bpb - lowest, 0.01 * baseline_bpb)))


def counts(experiments: Iterable[store.Experiment]) -> dict[str, int]:
    """How many experiments have each status."""
    return dict(Counter(str(e.status) for e in experiments))


def leaderboard_rows(experiments: Iterable[store.Experiment]) -> list[LeaderboardRow]:
    """Kept experiments with a score, best first, each with its gain over the baseline."""
    scored = kept(experiments)
    if not scored:
        return []
    first = scored[0].val_bpb
    ranked = sorted(scored, key=lambda e: e.val_bpb)  # type: ignore[arg-type, return-value]
    return [LeaderboardRow(rank, e.seq, (e.commit_sha or "")[:7], e.val_bpb, first - e.val_bpb,  # type: ignore[operator, arg-type]
                           e.test_bpb, memory_mb(e), e.description)
            for rank, e in enumerate(ranked, start=1)]


def near_miss(experiment: store.Experiment) -> bool:
    """The keep rule recorded it as a near miss (an improvement on a parent that was no longer the best)."""
    judge = experiment.judge_json
    return isinstance(judge, dict) and judge.get("near_miss") is True


def shown_name(value: object) -> str:
    """A slot's or node's name as data: escaped and bounded (a Ray node names itself)."""
    return as_data(str(value), NAME_CHARS) if value is not None else "–"


# --- slots and nodes -----------------------------------------------------------------------------------


def run_slots(run: store.Run) -> list[dict]:
    """The run's slots as recorded (runs.slots_json), each a dict with at least a name; [] before the column."""
    slots = run.slots_json if isinstance(run.slots_json, list) else []
    return [s for s in slots if isinstance(s, dict) and s.get("name") is not None]


def slot_lanes(run: store.Run, experiments: Iterable[store.Experiment]) -> list[SlotLane]:
    """A lane per slot of the run, with the experiment open there (the running one, else the newest pending).

    Slots come from runs.slots_json, then any slot an open experiment names that the list lacks (a slot
    of a node that left). A run that recorded no slots (older runs, one local slot) has one unnamed lane,
    with its newest open experiment.
    """
    open_ = [e for e in experiments if e.status in OPEN]
    slots = run_slots(run)
    if not slots:
        top = open_[-1] if open_ else None
        slot = top.slot if top is not None and top.slot else None
        node = top.node if top is not None and top.node else LOCAL_NODE
        return [SlotLane(shown_name(slot) if slot else "–", shown_name(node), _optional(run.device), None, top)]
    by_slot: dict[str, store.Experiment] = {}
    for e in open_:
        if e.slot is not None and (e.status == Status.RUNNING or by_slot.get(e.slot, e).status != Status.RUNNING):
            by_slot[e.slot] = e
    lanes = [SlotLane(shown_name(s["name"]), shown_name(s.get("node") or LOCAL_NODE), _optional(s.get("device")),
                      _optional(s.get("gpu_uuid") or s.get("cpuset")), by_slot.pop(str(s["name"]), None))
             for s in slots]
    lanes += [SlotLane(shown_name(slot), shown_name(e.node or LOCAL_NODE), None, None, e)
              for slot, e in by_slot.items()]
    return lanes


def fleet_nodes(run: store.Run, rows: Iterable[store.Node], alive: bool,
                util_percent: float | None = None) -> list[NodeView]:
    """The run's nodes: the runner's rows (Ray), else the hosts its slots name (local: this host).

    alive: whether the run's runner is alive (a local host is idle without it); util_percent: the local
    host's utilisation now, from its latest GPU (or CPU) samples, when the caller has them.
    """
    slots = run_slots(run)
    per_node = Counter(str(s.get("node") or LOCAL_NODE) for s in slots)
    nodes = [NodeView(shown_name(n.name), _optional(n.address), n.gpus, _optional(n.device), n.state,
                      n.util_percent, n.seen_at, per_node.get(n.name, 0), _optional(getattr(n, "note", None)))
             for n in rows]
    if nodes or not slots:
        return nodes
    for node, count in per_node.items():
        on_node = [s for s in slots if str(s.get("node") or LOCAL_NODE) == node]
        gpus = sum(1 for s in on_node if s.get("gpu_uuid"))
        device = next((s.get("device") for s in on_node if s.get("device")), run.device)
        address = run.host if node == LOCAL_NODE else None
        nodes.append(NodeView(shown_name(node), _optional(address), gpus, _optional(device),
                              "ready" if alive else IDLE, util_percent if alive else None, None, count))
    return nodes


def _optional(value: object) -> str | None:
    return None if value is None or value == "" else shown_name(value)


def memory_mb(experiment: store.Experiment) -> float | None:
    """Peak VRAM as train.py reported it, else (on CPU, where it reports 0) the host-measured peak memory."""
    return experiment.peak_vram_mb or experiment.host_peak_vram_mb


# --- the run: its runner, budget and sandbox -----------------------------------------------------------


def pick_run(conn: sqlite3.Connection, tag: str | None) -> store.Run:
    """The run with tag, or the latest run; a clear error when there is none."""
    run = store.run_by_tag(conn, tag) if tag else (store.list_runs(conn) or [None])[-1]
    if run is None:
        raise UserError(f"no run tagged {tag!r} in this workspace" if tag else
                        "no run in this workspace yet: start one with `autoresearch run`")
    return run


def runner_alive(run: store.Run, now: float | None = None) -> bool:
    """A fresh heartbeat from a runner whose process (on this host) still exists."""
    if run.state not in LIVE or run.heartbeat_at is None:
        return False
    if (now or time.time()) - run.heartbeat_at >= HEARTBEAT_STALE_S:
        return False
    return run.host != socket.gethostname() or run.pid is None or psutil.pid_exists(run.pid)


def run_state(run: store.Run, now: float | None = None) -> str:
    """The run's recorded state, or "dead" when it says running/paused but its runner is not alive."""
    return DEAD if run.state in LIVE and not runner_alive(run, now) else run.state


def heartbeat_age(run: store.Run, now: float) -> float | None:
    """Seconds since the runner's last heartbeat, or None when it never beat."""
    return None if run.heartbeat_at is None else now - run.heartbeat_at


def run_budget_s(run: store.Run) -> float | None:
    """The run's training seconds per experiment: as recorded, else (older runs) its policy's limits.time_budget_s."""
    value = run.time_budget_s
    if value is None:
        try:
            value = tomllib.loads(run.policy_toml).get("limits", {}).get("time_budget_s")
        except (tomllib.TOMLDecodeError, AttributeError):
            return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def isolated(sandbox: str | None) -> bool | None:
    """Whether a run's sandbox (its provider's name) isolates task code; None when the run did not record it."""
    return None if sandbox is None else sandbox not in UNISOLATED_SANDBOXES


def sandbox_label(sandbox: str | None) -> str | None:
    """`sandbox: docker`, or `sandbox: process (NOT ISOLATED)`; None when the run did not record its sandbox."""
    if sandbox is None:
        return None
    return f"sandbox: {sandbox}" + ("" if isolated(sandbox) else " (NOT ISOLATED)")


def run_status(conn: sqlite3.Connection, run: store.Run) -> RunStatus:
    experiments = store.list_experiments(conn, run.id)
    top, first = best(experiments), baseline(experiments)
    now = time.time()
    alive = runner_alive(run, now)
    running_now = [e for e in experiments if e.status == Status.RUNNING]
    running = f"#{running_now[-1].seq} {running_now[-1].description}" if running_now else None
    by_slot = [{"slot": lane.slot, "node": lane.node, "seq": lane.experiment.seq, "status": str(lane.experiment.status),
                "role": lane.experiment.role, "description": lane.experiment.description,
                "elapsed_s": max(now - lane.experiment.started_at, 0.0)}
               for lane in slot_lanes(run, experiments) if lane.experiment is not None]
    nodes = [asdict(n) for n in fleet_nodes(run, store.list_nodes(conn, run.id), alive)]
    return RunStatus(
        tag=run.tag, state=run_state(run, now), alive=alive, pid=run.pid,
        note=run.note, elapsed_s=(run.ended_at or now) - run.started_at, experiments=len(experiments),
        counts=counts(experiments), best_val_bpb=top.val_bpb if top else None,
        baseline_val_bpb=first.val_bpb if first else None, best_commit=top.commit_sha if top else None,
        spent_usd=store.spent_usd(conn, run.id), running=running if alive else None, sandbox=run.sandbox,
        isolated=isolated(run.sandbox), executor=run.executor, device=run.device,
        slots=[shown_name(s["name"]) for s in run_slots(run)] if run.slots_json is not None else None,
        running_by_slot=by_slot if alive else [], nodes=nodes)



def leaderboard(conn: sqlite3.Connection, run: store.Run) -> list[LeaderboardRow]:
    """Kept commits, best first, with the held-out test score beside the validation score."""
    return leaderboard_rows(store.list_experiments(conn, run.id))


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
        status = str(e.status) if e.status in JUDGED else RESULTS_CRASH
        description = e.description if status != RESULTS_CRASH else f"[{e.status}] {e.description}"
        lines.append("\t".join([
            (e.commit_sha or "-------")[:7], f"{e.val_bpb or 0.0:.6f}",
            f"{(memory_mb(e) or 0.0) / 1024:.1f}", status, " ".join(description.split())]))
    return "\n".join(lines) + "\n"


def best_experiment(conn: sqlite3.Connection, run: store.Run) -> store.Experiment:
    """The run's best experiment (see `best`), committed; a clear error when it has none yet."""
    top = best(store.list_experiments(conn, run.id))
    if top is None or not top.commit_sha:
        raise UserError(f"run {run.tag} has no kept experiment yet: nothing to export")
    return top


def export_best(conn: sqlite3.Connection, repo: pygit2.Repository, run: store.Run) -> str:
    """The best kept train.py with a header comment of where it came from."""
    top = best_experiment(conn, run)
    by_sha = {e.commit_sha: e for e in store.list_experiments(conn, run.id) if e.commit_sha}
    chain = gitrepo.first_parent_chain(repo, top.commit_sha)
    ancestry = [f"#   {sha[:8]} {by_sha[sha].val_bpb:.6f}  {by_sha[sha].description}"
                for sha in chain if sha in by_sha and by_sha[sha].val_bpb is not None]
    test = f"{top.test_bpb:.6f}" if top.test_bpb is not None else "not scored"
    header = [
        f"# Exported by autoresearch from run {run.tag!r}, experiment {top.seq}, commit {top.commit_sha}.",
        f"# val_bpb {top.val_bpb:.6f} (trusted scoring, validation split); test_bpb {test} (held-out split).",
        f"# {top.description}",
        "# Parent chain, newest first (commit, val_bpb, description):",
        *ancestry,
        "",
    ]
    return "\n".join(header) + gitrepo.read_file(repo, top.commit_sha).decode(errors="replace")


def diff_against_baseline(conn: sqlite3.Connection, repo: pygit2.Repository, run: store.Run) -> str:
    top = best_experiment(conn, run)
    first = baseline(store.list_experiments(conn, run.id))
    assert first is not None  # the best is a kept experiment, so there is a first one
    old = gitrepo.read_file(repo, first.commit_sha).decode(errors="replace").splitlines(keepends=True)
    new = gitrepo.read_file(repo, top.commit_sha).decode(errors="replace").splitlines(keepends=True)
    return "".join(difflib.unified_diff(old, new, f"baseline/{first.commit_sha[:8]}/train.py",
                                        f"best/{top.commit_sha[:8]}/train.py"))


def status_dict(status: RunStatus) -> dict:
    return asdict(status)


def render_status(status: RunStatus) -> str:
    done = ", ".join(f"{count} {name}" for name, count in sorted(status.counts.items())) or "none"
    hours = status.elapsed_s / 3600
    lines = [f"run {status.tag}: {status.state}" + (f" (pid {status.pid})" if status.alive and status.pid else "")
             + (f" - {status.note}" if status.note and not status.alive else ""),
             f"  elapsed {hours:.2f} h, {status.experiments} experiments: {done}"]
    label = sandbox_label(status.sandbox)
    if label:
        lines.append(f"  {label}" + ("" if status.isolated else ": experiments ran as plain processes, "
                                                                   "without isolation"))
    fleet = _fleet_line(status)
    if fleet:
        lines.append(fleet)
    lanes = [r for r in status.running_by_slot or [] if r["slot"] != "–"]
    for lane in lanes:
        role = f" ({lane['role']} seed)" if lane.get("role") else ""
        where = lane["slot"] if lane["node"] == LOCAL_NODE else f"{lane['slot']} on {lane['node']}"
        lines.append(f"  {where}: {lane['status']} #{lane['seq']}{role} {' '.join(lane['description'].split())}")
    if status.running and not lanes:
        lines.append(f"  training {status.running}")
    for node in status.nodes or []:
        lines.append("  " + _node_line(node, time.time()))
    if status.best_val_bpb is not None:
        gain = status.baseline_val_bpb - status.best_val_bpb
        lines.append(f"  best val_bpb {status.best_val_bpb:.6f} ({gain:+.6f} over the baseline "
                     f"{status.baseline_val_bpb:.6f}) at {status.best_commit[:8]}")
    lines.append(f"  spent ${status.spent_usd:.2f} on the agent")
    if status.state == DEAD:
        lines.append("  the runner died: `autoresearch run --tag " + status.tag + "` resumes it")
    return "\n".join(lines)


def _fleet_line(status: RunStatus) -> str | None:
    """`executor local, device NVIDIA H100, 2 slots (1 idle)`; None for a run that recorded none of it."""
    if status.executor is None and status.device is None and not status.slots:
        return None
    parts = [f"executor {status.executor or 'local'}"]
    if status.device:
        parts.append(f"device {shown_name(status.device)}")
    if status.slots:
        busy = sum(1 for r in status.running_by_slot or [] if r["slot"] in status.slots)
        idle = len(status.slots) - busy
        parts.append(f"{len(status.slots)} slot{'s' if len(status.slots) != 1 else ''}"
                     + (f" ({idle} idle)" if status.alive and idle else ""))
    return "  " + ", ".join(parts)


def _node_line(node: dict, now: float) -> str:
    """`node node-b (10.0.0.2): LOST, 2 GPUs NVIDIA H100, last seen 65 s ago: why`."""
    state = node["state"]
    address = f" ({node['address']})" if node.get("address") else ""
    what = [state.upper() if state in NODE_DOWN else state]
    gpus = node.get("gpus") or 0
    what.append(f"{gpus} GPU{'s' if gpus != 1 else ''}" + (f" {node['device']}" if node.get("device") else "")
                if gpus else f"{node.get('slots') or 0} slots on {node.get('device') or 'cpu'}")
    if node.get("util_percent") is not None and state in NODE_UP:
        what.append(f"{node['util_percent']:.0f}% busy")
    if node.get("seen_at") is not None and state not in NODE_UP:
        what.append(f"last seen {_duration(now - node['seen_at'])} ago")
    note = f": {node['note']}" if node.get("note") else ""
    return f"node {node['name']}{address}: " + ", ".join(what) + note


def _duration(seconds: float) -> str:
    """`42 s`, `12 min`, `3.1 h` or `5.0 days`."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172_800 else f"{seconds / 86_400:.1f} days"

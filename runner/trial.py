"""`autoresearch try TRAIN_PY`: one experiment, exactly as the loop runs it, recorded in the store.

Check (static rules) -> record -> train in a fresh container under the host's monitor -> score in a
second container -> dynamic rules -> decide -> record. A candidate that a static rule blocks is
recorded with its findings and never runs. Prerequisites (engine, image, data, policy) are checked
before anything is recorded, so bad input leaves nothing half-written.
"""

import hashlib
import os
import queue
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import docker
import psutil

from autoresearch.runner.check.dynamic_rules import Overhead, RunFacts, check_run
from autoresearch.runner.check.findings import Finding, worst_action
from autoresearch.runner.check.integrity import hash_files, protected_files
from autoresearch.runner.check.policy import Policy
from autoresearch.runner.check.static_rules import check_source
from autoresearch.runner.errors import UserError
from autoresearch.runner.phases.data import prepare_data
from autoresearch.runner.phases.experiment import ExperimentOutcome, run_experiment
from autoresearch.runner.phases.metrics import ProgressPoint
from autoresearch.runner.record import store
from autoresearch.runner.record.untrusted import as_data, json_as_data
from autoresearch.runner.sandbox import images
from autoresearch.runner.sandbox.docker_provider import Handover, remove_orphans
from autoresearch.runner.sandbox.engine import connect
from autoresearch.runner.sandbox.monitor import Sample
from autoresearch.runner.workspace import Workspace

MAX_METRIC_POINTS = 100_000  # per experiment: a flood of progress lines cannot fill the store
FLUSH_INTERVAL_S = 0.25


@dataclass
class TrialResult:
    """What `autoresearch try` reports; the JSON of `--json`."""

    experiment_id: int
    status: str  # ok, blocked, crash, timeout, oom, killed, violation
    exit_reason: str
    val_bpb: float | None
    reported: dict[str, float]
    training_seconds: float | None
    total_seconds: float
    gpu_busy_seconds: float | None
    host_peak_mem_mb: float | None
    monitor: str
    findings: list[dict] = field(default_factory=list)
    log_path: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    work_dir: str | None = None
    handover: Handover | None = field(default=None, repr=False)  # open for scoring the test split (keep_handover)


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


@dataclass(frozen=True)
class Candidate:
    """A train.py to run, and what the record says about it."""

    code: bytes
    description: str
    run_id: int | None = None
    seq: int | None = None
    commit_sha: str | None = None
    parent_sha: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Prerequisites:
    """What an experiment needs before anything is recorded: the engine, the image and the data."""

    client: docker.DockerClient
    image: str
    flavor: str
    data: Path
    labels: dict[str, str]
    gpu_uuid: str | None = None


def try_candidate(ws: Workspace, train_py: Path, policy: Policy, flavor: str = "auto",
                  source: str = "offline", echo: bool = False) -> TrialResult:
    """Run one candidate train.py through check, train, score and decide; record everything."""
    candidate = Candidate(read_candidate(train_py), f"try {train_py.name}")
    blocked = check_candidate(ws, candidate, policy)
    if isinstance(blocked, TrialResult):
        return blocked
    return execute_candidate(ws, candidate, policy, prerequisites(ws, flavor, source), blocked, echo=echo)


def check_candidate(ws: Workspace, candidate: Candidate, policy: Policy) -> TrialResult | list[Finding]:
    """The static findings; a blocked candidate is recorded with them and its TrialResult returned."""
    static = check_source(candidate.code, policy)
    if worst_action(static) != "block":
        return static
    reason = "blocked by policy before running"
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    conn = store.open_store(ws.store_path)
    try:
        exp_id = store.create_experiment(
            conn, run_id=candidate.run_id, seq=candidate.seq, description=candidate.description, status="blocked",
            train_py_sha256=sha(candidate.code), ended_at=time.time(), exit_reason=reason,
            parent_sha=candidate.parent_sha,
        )
        store.add_findings(conn, exp_id, static)
    finally:
        conn.close()
    return TrialResult(exp_id, "blocked", reason, None, {}, None, 0.0, None, None, "",
                       json_as_data([f.to_dict() for f in static]))


def workspace_labels(root: Path) -> dict[str, str]:
    """The label that marks a workspace's containers (for finding its orphans)."""
    return {"autoresearch.workspace": hashlib.sha256(str(root).encode()).hexdigest()[:16]}


def prerequisites(ws: Workspace, flavor: str = "auto", source: str = "offline",
                  gpu_uuid: str | None = None) -> Prerequisites:
    """Engine, image and data, checked (and the data prepared) before anything is recorded."""
    client = connect()
    labels = workspace_labels(ws.root)
    remove_orphans(client, labels, psutil.pid_exists)
    flavor = images.resolve_flavor(flavor)
    image = images.require_image(flavor)
    return Prerequisites(client, image, flavor, prepare_data(ws.task_dir, source, flavor), labels, gpu_uuid)


def execute_candidate(ws: Workspace, candidate: Candidate, policy: Policy, pre: Prerequisites,
                      static: list[Finding], echo: bool = False, cancel: threading.Event | None = None,
                      baseline: Overhead | None = None, keep_handover: bool = False) -> TrialResult:
    """Record, train, score and judge a candidate that passed the static rules.

    baseline: what the run's baseline measured (the budget rules' allowances); keep_handover: leave the
    scored hand-over of an ok result open in TrialResult.handover, for the caller to score and release."""
    protected = protected_files(ws.task_dir, pre.data)
    before = hash_files(protected)
    conn = store.open_store(ws.store_path)
    exp_id = store.create_experiment(
        conn, run_id=candidate.run_id, seq=candidate.seq, description=candidate.description, status="running",
        train_py_sha256=sha(candidate.code), commit_sha=candidate.commit_sha, parent_sha=candidate.parent_sha,
    )
    store.add_findings(conn, exp_id, static)
    work_dir = ws.experiments_dir / f"{exp_id:06d}"
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "candidate.py").write_bytes(candidate.code)
    store.update_experiment(conn, exp_id, log_path=str(work_dir / "train.log"))
    recorder = LiveRecorder(ws.store_path, exp_id)
    try:
        outcome = run_experiment(
            pre.client, image=pre.image, task_dir=ws.task_dir, train_py=work_dir / "candidate.py", data=pre.data,
            work_dir=work_dir, budget_s=policy.limits.time_budget_s, flavor=pre.flavor, gpu_uuid=pre.gpu_uuid,
            limits=policy.limits, on_point=recorder.point, on_sample=recorder.sample,
            on_line=print if echo else None, seed=candidate.seed, cancel=cancel, keep_handover=keep_handover,
            labels={**pre.labels, "autoresearch.experiment": str(exp_id), "autoresearch.runner_pid": str(os.getpid())},
        )
    except BaseException:  # the engine went away, or the runner is interrupted: the caller closes the record
        conn.close()
        raise
    finally:
        recorder.close()
    dynamic = check_run(run_facts(outcome, policy, before, hash_files(protected), baseline), policy)
    status, reason = decide(outcome, dynamic)
    if status != "ok" and outcome.handover is not None:
        outcome.handover.release()
        outcome.handover = None
    usage = outcome.usage
    store.add_findings(conn, exp_id, dynamic)
    store.update_experiment(
        conn, exp_id, status=status, exit_reason=reason, val_bpb=outcome.val_bpb,
        reported_json=outcome.reported, training_seconds=outcome.reported.get("training_seconds"),
        total_seconds=outcome.timings.total, gpu_busy_seconds=usage.busy_seconds if usage else None,
        peak_vram_mb=outcome.reported.get("peak_vram_mb"), host_peak_vram_mb=usage.peak_mem_mb if usage else None,
        log_bytes=outcome.log_bytes, log_dropped_bytes=outcome.log_dropped_bytes,
        timings_json=asdict(outcome.timings), ended_at=time.time(),
    )
    conn.close()
    return TrialResult(  # what the candidate influenced goes out as data, as the store keeps it
        exp_id, status, as_data(reason), outcome.val_bpb if status == "ok" else None, json_as_data(outcome.reported),
        outcome.reported.get("training_seconds"), outcome.timings.total,
        usage.busy_seconds if usage and usage.kind == "nvml" else None,
        usage.peak_mem_mb if usage else None, usage.note if usage else "",
        json_as_data([f.to_dict() for f in (*static, *dynamic)]), str(outcome.train_log), asdict(outcome.timings),
        str(work_dir),
        outcome.handover,
    )


def read_candidate(path: Path) -> bytes:
    """The candidate's bytes; a missing or unreadable file is bad input, not an experiment."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_facts(outcome: ExperimentOutcome, policy: Policy, before: dict, after: dict,
              baseline: Overhead | None = None) -> RunFacts:
    usage, timings = outcome.usage, outcome.timings
    gpu = usage is not None and usage.kind == "nvml"
    return RunFacts(
        budget_s=policy.limits.time_budget_s,
        trusted_bpb=outcome.val_bpb,
        reported=outcome.reported,
        training_wall_s=timings.train_phase,
        compute_s=timings.compute,
        compute_kind="gpu" if gpu else "cpu",
        capacity=1.0 if gpu else float(policy.limits.cpus or os.cpu_count() or 1),
        before_progress_s=timings.before_progress,
        after_progress_s=timings.after_progress,
        progress_span_s=timings.progress_span,
        compute_outside_s=timings.compute_outside,
        baseline=baseline,
        peak_vram_mb=usage.peak_mem_mb if usage else None,
        vram_cap_mb=policy.limits.gpu_memory_cap_mb or None,
        killed_by_policy=outcome.killed_by,
        hashes_before=before,
        hashes_after=after,
        log_head=outcome.log_head,
        log_tail=outcome.log_tail,
        dropped_log_bytes=outcome.log_dropped_bytes,
        progress_last_elapsed=outcome.progress[-1].elapsed if outcome.progress else None,
    )


def decide(outcome: ExperimentOutcome, dynamic: list[Finding]) -> tuple[str, str]:
    """The experiment's status: the container's fate first, then any finding that discards it."""
    if outcome.status not in ("ok", "killed"):
        return outcome.status, outcome.reason
    if worst_action(dynamic) in ("block", "discard"):
        worst = next(f for f in dynamic if f.action in ("block", "discard"))
        return "violation", f"{worst.rule_id}: {worst.message}"
    if outcome.status == "killed":
        return outcome.status, outcome.reason
    return "ok", "finished and scored"


def describe(result: TrialResult) -> str:
    """The result for people: status and trusted score first, then where the time went, then findings."""
    lines = [f"experiment {result.experiment_id}: {result.status} ({result.exit_reason})"]
    if result.val_bpb is not None:
        reported = result.reported.get("val_bpb")
        note = f" (train.py reported {reported:.6f}, advisory)" if reported is not None else ""
        lines.append(f"  val_bpb {result.val_bpb:.6f} trusted{note}")
    if result.training_seconds is not None:
        lines.append(f"  training {result.training_seconds:.1f} s of {result.total_seconds:.1f} s in all")
    if result.gpu_busy_seconds is not None:
        lines.append(f"  GPU busy {result.gpu_busy_seconds:.1f} s (host-measured)")
    if result.host_peak_mem_mb is not None:
        vram = result.reported.get("peak_vram_mb")
        torch_note = f", torch reported {vram:.0f} MB" if vram else ""
        lines.append(f"  peak memory {result.host_peak_mem_mb:.0f} MB host-measured{torch_note} [{result.monitor}]")
    for finding in result.findings:
        rule, severity, action = finding["rule_id"], finding["severity"], finding["action"]
        lines.append(f"  finding {rule} ({severity}, {action}): {finding['message']}")
    if result.log_path:
        lines.append(f"  log: {result.log_path}")
    return "\n".join(lines)

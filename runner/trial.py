"""`autoresearch try TRAIN_PY`: one experiment, exactly as the loop runs it, recorded in the store.

Check (static rules) -> record -> train in a fresh sandbox phase under the host's monitor -> score in a
second phase -> dynamic rules -> decide (runner/judge.py) -> record (runner/record/recorder.py). A
candidate that a static rule blocks is recorded with its findings and never runs. Prerequisites
(sandbox, image, data, settings) are checked before anything is recorded, so bad input leaves nothing
half-written.
"""

import dataclasses
import hashlib
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from autoresearch.runner.check.dynamic_rules import Overhead, check_run
from autoresearch.runner.check.findings import Finding, worst_action
from autoresearch.runner.check.policy import Policy
from autoresearch.runner.check.static_rules import check_source
from autoresearch.runner.errors import UserError
from autoresearch.runner.executors.base import Slot, TrainJob, TrainResult
from autoresearch.runner.executors.slot_work import SlotHost, slot_limits, train_on_slot
from autoresearch.runner.judge import decide, run_facts
from autoresearch.runner.phases.compile_seed import CompileCache, Seed
from autoresearch.runner.phases.data import prepare_data
from autoresearch.runner.phases.sources import resolve_source
from autoresearch.runner.record.recorder import ExperimentRecorder, LiveRecorder, open_recorder
from autoresearch.runner.record.status import Status
from autoresearch.runner.record.untrusted import as_data, json_as_data
from autoresearch.runner.sandbox.base import EXPERIMENT_LABEL, RUNNER_PID_LABEL, WORKSPACE_LABEL, Handover, Sandbox
from autoresearch.runner.sandbox.registry import open_sandbox
from autoresearch.runner.settings import Settings, device_of
from autoresearch.runner.workspace import Workspace


@dataclass
class TrialResult:
    """What `autoresearch try` reports; the JSON of `--json`."""

    experiment_id: int
    status: str  # a Status: ok, blocked, crash, timeout, oom, killed, violation
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
    sandbox: str | None = None  # the provider it ran in; None: blocked before running
    isolated: bool = True  # False: the provider ran it without isolation (announced wherever it is shown)
    compile_cache: str = "cold"  # what training's compile cache started from (seeding: the run's baseline)
    compile_seed: Seed | None = None  # the run's compile seed, when this (the baseline) sealed it


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
    """What an experiment needs before anything is recorded: the sandbox, the image and the data."""

    sandbox: Sandbox
    image: str
    data: Path
    labels: dict[str, str]
    gpu_uuid: str | None = None
    source: str = "offline"  # the data source the settings' source resolved to
    source_why: str = "as configured"


def try_candidate(ws: Workspace, train_py: Path, settings: Settings, echo: bool = False) -> TrialResult:
    """Run one candidate train.py through check, train, score and decide; record everything."""
    candidate = Candidate(read_candidate(train_py), f"try {train_py.name}")
    recorder = open_recorder(ws.store_path)  # opens the store at its first write
    try:
        blocked = check_candidate(recorder, candidate, settings.policy)  # a blocked candidate needs no sandbox
        if isinstance(blocked, TrialResult):
            return blocked
        pre = prerequisites(ws, settings)  # no sandbox, image or data: one clear error, nothing recorded
        try:
            return execute_candidate(ws, recorder, candidate, settings.policy, pre, blocked, echo=echo)
        finally:
            pre.sandbox.close()
    finally:
        recorder.close()


def check_candidate(recorder: ExperimentRecorder, candidate: Candidate,
                    policy: Policy) -> TrialResult | list[Finding]:
    """The static findings; a blocked candidate is recorded with them and its TrialResult returned."""
    static = check_source(candidate.code, policy)
    if worst_action(static) != "block":
        return static
    reason = "blocked by policy before running"
    exp_id = recorder.blocked(reason, static, run_id=candidate.run_id, seq=candidate.seq,
                              description=candidate.description, train_py_sha256=sha(candidate.code),
                              parent_sha=candidate.parent_sha)
    return TrialResult(exp_id, Status.BLOCKED, reason, None, {}, None, 0.0, None, None, "",
                       json_as_data([f.to_dict() for f in static]))


def workspace_labels(root: Path) -> dict[str, str]:
    """The label that marks a workspace's containers (for finding its orphans)."""
    return {WORKSPACE_LABEL: hashlib.sha256(str(root).encode()).hexdigest()[:16]}


def prerequisites(ws: Workspace, settings: Settings, gpu_uuid: str | None = None) -> Prerequisites:
    """The sandbox, image and data, checked (and the data prepared) before anything is recorded."""
    sandbox = open_sandbox(settings.sandbox, settings.sandbox_insisted)
    labels = workspace_labels(ws.root)
    sandbox.remove_orphans(labels, psutil.pid_exists)
    image = sandbox.image(settings.flavor)
    source, why = resolve_source(settings.source)
    data = prepare_data(sandbox, image, ws.task_dir, source)
    return Prerequisites(sandbox, image, data, labels, gpu_uuid, source, why)


def execute_candidate(ws: Workspace, recorder: ExperimentRecorder, candidate: Candidate, policy: Policy,
                      pre: Prerequisites,
                      static: list[Finding], echo: bool = False, cancel: threading.Event | None = None,
                      baseline: Overhead | None = None, keep_handover: bool = False,
                      compile_cache: CompileCache | None = None) -> TrialResult:
    """Record, train, score and judge a candidate that passed the static rules, on this host's one slot.

    baseline: what the run's baseline measured (the budget rules' allowances); keep_handover: leave the
    scored hand-over of an ok result open in TrialResult.handover, for the caller to score and release;
    compile_cache: the run's compile seed to fill or start from (None: a cold compile)."""
    slot = Slot("local", gpu_uuid=pre.gpu_uuid, device="gpu" if pre.gpu_uuid else "cpu")
    job = start_candidate(ws, recorder, candidate, static, pre, policy, slot, compile_cache, keep_handover)
    live = LiveRecorder(ws.store_path, job.experiment_id)
    try:
        trained = train_on_slot(SlotHost(pre.sandbox, pre.image, pre.data, ws.task_dir), slot, job, live.point,
                                live.sample, cancel, print if echo else None)
    finally:  # the sandbox went away, or the runner is interrupted: the caller closes the record
        live.close()
    return close_trial(recorder, job.experiment_id, trained, policy, slot, pre.sandbox, static, baseline)


def start_candidate(ws: Workspace, recorder: ExperimentRecorder, candidate: Candidate, static: list[Finding],
                    pre: Prerequisites, policy: Policy, slot: Slot, compile_cache: CompileCache | None = None,
                    keep_handover: bool = False, role: str | None = None) -> TrainJob:
    """Record a candidate as running on slot, with its static findings, and make the job that trains it."""
    exp_id = recorder.started(static, run_id=candidate.run_id, seq=candidate.seq, description=candidate.description,
                              train_py_sha256=sha(candidate.code), commit_sha=candidate.commit_sha,
                              parent_sha=candidate.parent_sha, sandbox=pre.sandbox.name, slot=slot.name,
                              node=slot.node, role=role, seed=candidate.seed)
    work_dir = ws.experiments_dir / f"{exp_id:06d}"
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "candidate.py").write_bytes(candidate.code)
    recorder.update(exp_id, log_path=str(work_dir / "train.log"))
    labels = {**pre.labels, EXPERIMENT_LABEL: str(exp_id), RUNNER_PID_LABEL: str(os.getpid())}
    return TrainJob(exp_id, candidate.code, policy.limits, labels, str(work_dir), seed=candidate.seed,
                    compile_cache=compile_cache, keep_handover=keep_handover)


def close_trial(recorder: ExperimentRecorder, exp_id: int, trained: TrainResult, policy: Policy, slot: Slot,
                sandbox: Sandbox, static: list[Finding], baseline: Overhead | None = None) -> TrialResult:
    """Judge what a slot sent back by the dynamic rules, record how the trial ended, and say it as a TrialResult.

    A hand-over left open in the outcome is released unless the trial is ok."""
    outcome = trained.outcome
    slot_policy = dataclasses.replace(policy, limits=slot_limits(policy.limits, slot))
    facts = run_facts(outcome, slot_policy, device_of(slot.gpu_uuid), trained.hashes_before, trained.hashes_after,
                      baseline)
    dynamic = check_run(facts, slot_policy)
    status, reason = decide(outcome, dynamic)
    if status != Status.OK and outcome.handover is not None:
        outcome.handover.release()
        outcome.handover = None
    usage = outcome.usage
    recorder.ended(
        exp_id, status, dynamic, exit_reason=reason, val_bpb=outcome.val_bpb,
        reported_json=outcome.reported, training_seconds=outcome.reported.get("training_seconds"),
        total_seconds=outcome.timings.total, gpu_busy_seconds=usage.busy_seconds if usage else None,
        peak_vram_mb=outcome.reported.get("peak_vram_mb"), host_peak_vram_mb=usage.peak_mem_mb if usage else None,
        log_bytes=outcome.log_bytes, log_dropped_bytes=outcome.log_dropped_bytes,
        timings_json=asdict(outcome.timings),
    )
    return TrialResult(  # what the candidate influenced goes out as data, as the store keeps it
        exp_id, status, as_data(reason), outcome.val_bpb if status == Status.OK else None,
        json_as_data(outcome.reported), outcome.reported.get("training_seconds"), outcome.timings.total,
        usage.busy_seconds if usage and usage.kind == "nvml" else None,
        usage.peak_mem_mb if usage else None, usage.note if usage else "",
        json_as_data([f.to_dict() for f in (*static, *dynamic)]),
        str(outcome.train_log) if outcome.train_log else None, asdict(outcome.timings),
        str(outcome.train_log.parent) if outcome.train_log else None,
        outcome.handover,
        sandbox.name,
        sandbox.isolated,
        outcome.compile_cache,
        outcome.compile_seed,
    )


def read_candidate(path: Path) -> bytes:
    """The candidate's bytes; a missing or unreadable file is bad input, not an experiment."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

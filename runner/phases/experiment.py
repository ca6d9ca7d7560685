"""One experiment: train a candidate train.py in one fresh sandbox phase, score it in another.

The training phase sees prepare.py (read-only), its own copy of train.py (the one writable task file),
the train split and tokenizer (read-only), an empty hand-over (with the docker provider a size-capped
tmpfs volume) and, past a run's baseline, the run's compile seed (read-only, runner/phases/compile_seed.py);
never the validation or test data. The scoring phase runs prepare.py's evaluation, trusted
code only, on the model that training handed over (read-only), with the scored split mounted. Its one
writable place is a verdict folder that no other phase sees; the verdict counts only with the nonce this
runner made for that scoring, a clean exit and a well-formed result. What either phase prints is
advisory: it is logged, never parsed for a score. The sandbox provider (runner/sandbox) runs the phases.
"""

import hmac
import json
import math
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch.runner.check.policy import Limits
from autoresearch.runner.phases.compile_seed import CACHE_ENV, CompileCache, Seed, phase_cache, seal_phase
from autoresearch.runner.phases.data import split_files
from autoresearch.runner.phases.metrics import ProgressPoint, parse_progress, parse_summary
from autoresearch.runner.record.untrusted import as_data
from autoresearch.runner.sandbox.base import (
    PHASE_LABEL,
    Handover,
    Mount,
    PhaseResult,
    PhaseSpec,
    Resources,
    Sandbox,
    grant_phase_write,
)
from autoresearch.runner.sandbox.monitor import SKIPPED, Monitor, Sample, Usage
from autoresearch.runner.settings import device_of, training_deadline_s

SCORE_DEADLINE_S = 900.0
SKIPPED_REASON = "skipped by the user"
# The scorer's side of these lives in task/prepare.py (VERDICT_FILE, NONCE_ENV, exit codes); a test keeps them equal.
VERDICT_FILE = "verdict.json"
NONCE_ENV = "AUTORESEARCH_NONCE"
PROFILE_ENV = "AUTORESEARCH_PROFILE"  # train.py's profile (h100, cpu, smoke); unset: train.py picks by device
SCORER_VERDICT_EXIT = {"ok": 0, "violation": 3, "error": 3}
MAX_VERDICT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Verdict:
    """The trusted scorer's result as the runner accepted it: ok (with bpb), violation or crash."""

    status: str
    reason: str = ""
    bpb: float | None = None
    details: dict = field(default_factory=dict)


@dataclass
class Timings:
    """Where an experiment's wall time went, in seconds, as the host saw it."""

    train_container_start: float = 0.0
    first_output: float = 0.0  # container running -> first line (interpreter, imports, model build)
    training: float = 0.0  # as train.py reported it
    export: float = 0.0  # as train.py reported it
    train_phase: float = 0.0  # container running -> exit
    score_container_start: float = 0.0
    scoring: float = 0.0  # score container running -> exit
    total: float = 0.0
    # The host's own clock on the training container, for the budget rules: running -> first progress line
    # (the whole phase when there is none), last progress line -> exit, and first -> last progress line.
    before_progress: float = 0.0
    after_progress: float = 0.0
    progress_span: float | None = None
    compute: float | None = None  # host-measured: GPU-busy seconds on a GPU, the container's CPU seconds on CPU
    compute_outside: float | None = None  # the part of compute before the first and after the last progress line


@dataclass
class ExperimentOutcome:
    """What happened to one candidate; val_bpb is the trusted score, reported is advisory."""

    status: str  # ok, crash, timeout, oom, killed (by a policy limit), violation (from the scoring)
    reason: str
    val_bpb: float | None
    reported: dict[str, float]
    progress: list[ProgressPoint]
    timings: Timings
    score: dict = field(default_factory=dict)
    handover: Handover | None = None  # kept for scoring the test split when run_experiment was asked to
    train_log: Path | None = None
    score_log: Path | None = None
    usage: Usage | None = None  # what the host measured while training
    killed_by: str | None = None
    log_head: str = ""
    log_tail: str = ""
    log_bytes: int = 0
    log_dropped_bytes: int = 0
    compile_cache: str = "cold"  # what training's compile cache started from (compile_seed.PhaseCache.note)
    compile_seed: Seed | None = None  # the seed this experiment sealed (a run's baseline only)


def run_experiment(
    sandbox: Sandbox,
    *,
    image: str,
    task_dir: Path,
    train_py: Path,
    data: Path,
    work_dir: Path,
    limits: Limits,
    split: str = "val",
    gpu_uuid: str | None = None,
    on_line: Callable[[str], None] | None = None,
    on_point: Callable[[ProgressPoint], None] | None = None,
    on_sample: Callable[[Sample], None] | None = None,
    labels: dict[str, str] | None = None,
    seed: int | None = None,
    cancel: threading.Event | None = None,
    keep_handover: bool = False,
    compile_cache: CompileCache | None = None,
    profile: str | None = None,
    cpuset: str | None = None,
) -> ExperimentOutcome:
    """Train train_py for limits.time_budget_s seconds and score the handed-over model on split.

    keep_handover: leave a scored hand-over open in outcome.handover (the caller releases it);
    compile_cache: the run's compile seed to fill (the baseline) or start from (None: a cold compile);
    profile: train.py's profile (None: train.py's own choice); cpuset: the cores both phases are pinned to."""
    began = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    handover = sandbox.open_handover(image, limits.handover_max_mb, labels or {})
    try:
        outcome = _train_and_score(sandbox, image, task_dir, train_py, data, work_dir, split, gpu_uuid,
                                   limits, on_line, on_point, on_sample, labels, seed, cancel, handover, began,
                                   compile_cache, profile, cpuset)
    except BaseException:
        handover.release()
        raise
    if keep_handover and outcome.status == "ok":
        outcome.handover = handover
    else:
        handover.release()
    return outcome


def _train_and_score(sandbox: Sandbox, image, task_dir, train_py, data, work_dir, split, gpu_uuid, limits: Limits,
                     on_line, on_point, on_sample, labels, seed, cancel, handover: Handover,
                     began: float, compile_cache: CompileCache | None, profile: str | None,
                     cpuset: str | None) -> ExperimentOutcome:
    candidate = work_dir / "train.py"
    shutil.copyfile(train_py, candidate)
    grant_phase_write(candidate)

    progress: list[ProgressPoint] = []
    first_line_at: list[float] = []
    progress_at: dict[str, float] = {}  # host clock of the first and the last progress line

    def handle_line(line: str) -> None:
        if not first_line_at:
            first_line_at.append(time.monotonic())
        point = parse_progress(line)
        if point is not None:
            now = time.monotonic()
            progress_at.setdefault("first", now)
            progress_at["last"] = now
            progress.append(point)
            if on_point is not None:
                on_point(point)
        if on_line is not None:
            on_line(line)

    cache = phase_cache(compile_cache, work_dir, ["python3", "/task/train.py"])
    train_spec = PhaseSpec(
        image=image,
        command=cache.command,
        mounts=[
            Mount(task_dir / "prepare.py", "/task/prepare.py"),
            Mount(candidate, "/task/train.py", read_only=False),
            *data_mounts(data, "train"),
            handover.mount("/handover", read_only=False),
            *cache.mounts,
        ],
        environment={
            "AUTORESEARCH_DATA": "/data",
            "AUTORESEARCH_HANDOVER": "/handover",
            "AUTORESEARCH_TIME_BUDGET": str(limits.time_budget_s),
            **CACHE_ENV,
            **({"AUTORESEARCH_SEED": str(seed)} if seed is not None else {}),
            **({PROFILE_ENV: profile} if profile is not None else {}),
        },
        labels={**(labels or {}), PHASE_LABEL: "train"},
        deadline_s=training_deadline_s(limits, device_of(gpu_uuid)),
        gpu_uuid=gpu_uuid,
        resources=phase_resources(limits, cpuset),
    )

    def watch(init_pid: int, kill: Callable[[str], None]) -> Monitor:
        return Monitor(
            init_pid, gpu_uuid, kill, mem_cap_mb=limits.gpu_memory_cap_mb or None,
            disk_paths=(candidate,), disk_cap_bytes=limits.handover_max_mb * 2**20, on_sample=on_sample,
            cancel=cancel,
        ).start()

    train_log = work_dir / "train.log"
    trained = sandbox.run(train_spec, train_log, handle_line, watch, limits.log_max_bytes)
    reported = parse_summary(trained.log_tail)
    timings = Timings(
        train_container_start=trained.start_seconds,
        first_output=(first_line_at[0] - began - trained.start_seconds) if first_line_at else 0.0,
        training=reported.get("training_seconds", 0.0),
        export=reported.get("export_seconds", 0.0),
        train_phase=trained.run_seconds,
        **progress_timings(progress_at, began + trained.start_seconds, trained),
    )
    outcome = ExperimentOutcome(
        "ok", "", None, reported, progress, timings, train_log=train_log, usage=trained.usage,
        killed_by=trained.killed_by, log_head=trained.log_head, log_tail=trained.log_tail,
        log_bytes=trained.log_bytes, log_dropped_bytes=trained.log_dropped_bytes,
    )
    failure = training_failure(trained)
    outcome.compile_seed, outcome.compile_cache = seal_phase(cache, compile_cache, clean=failure is None)
    if failure:
        outcome.status, outcome.reason = failure
    else:
        score_experiment(sandbox, image, task_dir, data, handover, work_dir, split, gpu_uuid, limits, labels, outcome,
                         cpuset)
    timings.total = time.monotonic() - began
    return outcome


def progress_timings(progress_at: dict[str, float], running_at: float, trained: PhaseResult) -> dict:
    """Timings' host-clock fields from the first and last progress line's arrival."""
    usage = trained.usage
    compute = None if usage is None else usage.compute
    if not progress_at:
        return {"before_progress": trained.run_seconds, "after_progress": 0.0, "compute": compute,
                "compute_outside": compute}
    first, last = progress_at["first"], progress_at["last"]
    outside = None if usage is None else usage.compute_at(first) + usage.compute - usage.compute_at(last)
    return {"before_progress": max(0.0, first - running_at), "progress_span": last - first,
            "after_progress": max(0.0, running_at + trained.run_seconds - last), "compute": compute,
            "compute_outside": outside}


def data_mounts(data: Path, split: str) -> list[Mount]:
    """Read-only mounts of exactly the files one split needs, never the other splits."""
    return [Mount(path, f"/data/{path.name}") for path in split_files(data, split)]


def phase_resources(limits: Limits, cpuset: str | None = None) -> Resources:
    """What a policy's limits let one phase use, pinned to cpuset's cores when it names some."""
    return Resources(memory=limits.memory, pids_limit=limits.pids_limit, cpus=limits.cpus or None,
                     tmpfs_size=limits.tmpfs_size, cpuset=cpuset)


def training_failure(result: PhaseResult) -> tuple[str, str] | None:
    """(status, reason) when the training container did not finish cleanly, else None."""
    if result.timed_out:  # killed_by is the deadline: not a policy limit
        return "timeout", "killed at the hard deadline"
    if result.killed_by == SKIPPED:
        return "killed", SKIPPED_REASON
    if result.killed_by:
        return "killed", f"killed by policy ({result.killed_by})"
    if result.oom_killed:
        return "oom", "out of memory (OOMKilled)"
    if result.exit_code != 0:
        return "crash", f"exit code {result.exit_code}: {last_line(result)}"
    return None


def last_line(result: PhaseResult) -> str:
    """The last line a container printed, as data (escaped and bounded)."""
    lines = result.log_tail.strip().splitlines()
    return as_data(lines[-1], 300) if lines else "(no output)"


def score_experiment(sandbox: Sandbox, image, task_dir, data, handover, work_dir, split, gpu_uuid, limits, labels,
                     outcome, cpuset: str | None = None) -> None:
    """Run the trusted evaluation on the handed-over model and fill outcome's score fields."""
    verdict, scored = score_handover(sandbox, image=image, task_dir=task_dir, data=data, handover=handover,
                                     work_dir=work_dir, split=split, gpu_uuid=gpu_uuid, limits=limits, labels=labels,
                                     cpuset=cpuset)
    outcome.score_log = work_dir / f"score-{split}.log"
    outcome.timings.score_container_start = scored.start_seconds
    outcome.timings.scoring = scored.run_seconds
    outcome.score = verdict.details
    if verdict.status == "ok":
        outcome.val_bpb = verdict.bpb
    else:
        outcome.status, outcome.reason = verdict.status, verdict.reason


def score_handover(sandbox: Sandbox, *, image: str, task_dir: Path, data: Path, handover: Handover,
                   work_dir: Path, split: str, gpu_uuid: str | None, limits: Limits,
                   labels: dict[str, str] | None, cpuset: str | None = None) -> tuple[Verdict, PhaseResult]:
    """prepare.py's evaluation of the hand-over on split, in a fresh container: (its verdict, the run)."""
    nonce = secrets.token_hex(16)
    verdict_dir = work_dir / f"verdict-{split}"
    shutil.rmtree(verdict_dir, ignore_errors=True)
    verdict_dir.mkdir(parents=True)
    grant_phase_write(verdict_dir)
    spec = PhaseSpec(
        image=image,
        command=["python3", "-I", "/task/prepare.py", "evaluate", "--handover", "/handover", "--data", "/data",
                 "--split", split, "--verdict", "/verdict"],
        mounts=[Mount(task_dir / "prepare.py", "/task/prepare.py"), *data_mounts(data, split), handover.mount(),
                Mount(verdict_dir, "/verdict", read_only=False)],
        environment={NONCE_ENV: nonce},
        labels={**(labels or {}), PHASE_LABEL: f"score-{split}"},
        deadline_s=SCORE_DEADLINE_S,
        gpu_uuid=gpu_uuid,
        resources=phase_resources(limits, cpuset),
    )
    scored = sandbox.run(spec, work_dir / f"score-{split}.log", max_log_bytes=limits.log_max_bytes)
    return read_verdict(verdict_dir, nonce, split, scored), scored


def read_verdict(folder: Path, nonce: str, split: str, run: PhaseResult) -> Verdict:
    """The scorer's verdict, accepted only from its own file, with this scoring's nonce, a clean exit and a
    well-formed result; anything else is a crash whose reason says what was wrong."""
    if run.timed_out:
        return Verdict("crash", f"scoring passed its {SCORE_DEADLINE_S:.0f}s deadline")
    if run.oom_killed:
        return Verdict("crash", "scoring ran out of memory (OOMKilled)")
    raw = _read_capped(folder / VERDICT_FILE)
    if raw is None:
        return Verdict("crash", f"scoring gave no verdict (exit code {run.exit_code}): {last_line(run)}")
    try:
        verdict = json.loads(raw)
    except ValueError:
        return Verdict("crash", "scoring wrote a malformed verdict")
    if not isinstance(verdict, dict) or not hmac.compare_digest(str(verdict.get("nonce", "")), nonce):
        return Verdict("crash", "the verdict does not carry this scoring's nonce")
    status, reason = verdict.get("status"), as_data(str(verdict.get("reason", "")))
    if verdict.get("split") != split or SCORER_VERDICT_EXIT.get(status) != run.exit_code:
        return Verdict("crash", f"inconsistent verdict: status {as_data(str(status), 40)} for split "
                                f"{as_data(str(verdict.get('split')), 40)}, exit code {run.exit_code}")
    if status == "violation":
        return Verdict("violation", reason, details=verdict)
    if status == "error":
        return Verdict("crash", reason, details=verdict)
    bpb = verdict.get("bpb")
    if not isinstance(bpb, float) or not math.isfinite(bpb) or bpb <= 0:
        return Verdict("crash", f"the verdict's bpb {as_data(str(bpb), 40)} is not a positive number")
    return Verdict("ok", "", bpb, verdict)


def _read_capped(path: Path) -> bytes | None:
    """At most MAX_VERDICT_BYTES + 1 bytes of a regular file, never through a link; None when absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_VERDICT_BYTES + 1)
    return None if len(data) > MAX_VERDICT_BYTES else data

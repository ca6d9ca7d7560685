"""One experiment: train a candidate train.py in one fresh container, score it in another.

The training container sees prepare.py (read-only), its own copy of train.py (the one writable task
file), the train split and tokenizer (read-only) and an empty hand-over folder; never the validation
or test data. The scoring container runs prepare.py's evaluation, trusted code only, on the model that
training handed over, with the scored split mounted and nothing writable.
"""

import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker

from autoresearch.runner.data import grant_container_write, split_files
from autoresearch.runner.metrics import ProgressPoint, parse_progress, parse_summary
from autoresearch.runner.monitor import SKIPPED, Monitor, Sample, Usage
from autoresearch.runner.policy import Limits, load_policy
from autoresearch.runner.sandbox import ContainerResult, ContainerSpec, Mount, run_container

SCORE_DEADLINE_S = 900.0
SKIPPED_REASON = "skipped by the user"


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
    train_log: Path | None = None
    score_log: Path | None = None
    usage: Usage | None = None  # what the host measured while training
    killed_by: str | None = None
    log_head: str = ""
    log_tail: str = ""
    log_bytes: int = 0
    log_dropped_bytes: int = 0


def run_experiment(
    client: docker.DockerClient,
    *,
    image: str,
    task_dir: Path,
    train_py: Path,
    data: Path,
    work_dir: Path,
    budget_s: float,
    flavor: str = "cpu",
    split: str = "val",
    gpu_uuid: str | None = None,
    limits: Limits | None = None,
    on_line: Callable[[str], None] | None = None,
    on_point: Callable[[ProgressPoint], None] | None = None,
    on_sample: Callable[[Sample], None] | None = None,
    labels: dict[str, str] | None = None,
    seed: int | None = None,
    cancel: threading.Event | None = None,
) -> ExperimentOutcome:
    """Train train_py for budget_s seconds and score the handed-over model on split."""
    began = time.monotonic()
    limits = limits or load_policy().limits
    work_dir.mkdir(parents=True, exist_ok=True)
    handover = work_dir / "handover"
    handover.mkdir(exist_ok=True)
    grant_container_write(handover)
    candidate = work_dir / "train.py"
    shutil.copyfile(train_py, candidate)
    grant_container_write(candidate)

    progress: list[ProgressPoint] = []
    first_line_at: list[float] = []

    def handle_line(line: str) -> None:
        if not first_line_at:
            first_line_at.append(time.monotonic())
        point = parse_progress(line)
        if point is not None:
            progress.append(point)
            if on_point is not None:
                on_point(point)
        if on_line is not None:
            on_line(line)

    train_spec = ContainerSpec(
        image=image,
        command=["python3", "/task/train.py"],
        mounts=[
            Mount(task_dir / "prepare.py", "/task/prepare.py"),
            Mount(candidate, "/task/train.py", read_only=False),
            *data_mounts(data, "train"),
            Mount(handover, "/handover", read_only=False),
        ],
        environment={
            "AUTORESEARCH_DATA": "/data",
            "AUTORESEARCH_HANDOVER": "/handover",
            "AUTORESEARCH_TIME_BUDGET": str(budget_s),
            **({"AUTORESEARCH_SEED": str(seed)} if seed is not None else {}),
        },
        labels={**(labels or {}), "autoresearch.phase": "train"},
        deadline_s=budget_s + (limits.deadline_allowance_cuda_s if gpu_uuid else limits.deadline_allowance_cpu_s),
        gpu_uuid=gpu_uuid,
        **container_limits(limits),
    )

    def watch(init_pid: int, kill: Callable[[str], None]) -> Monitor:
        return Monitor(
            init_pid, gpu_uuid, kill, mem_cap_mb=limits.gpu_memory_cap_mb or None,
            disk_paths=(handover, candidate), disk_cap_bytes=limits.handover_max_mb * 2**20, on_sample=on_sample,
            cancel=cancel,
        ).start()

    train_log = work_dir / "train.log"
    trained = run_container(client, train_spec, train_log, handle_line, watch, limits.log_max_bytes)
    reported = parse_summary(trained.log_tail)
    timings = Timings(
        train_container_start=trained.start_seconds,
        first_output=(first_line_at[0] - began - trained.start_seconds) if first_line_at else 0.0,
        training=reported.get("training_seconds", 0.0),
        export=reported.get("export_seconds", 0.0),
        train_phase=trained.run_seconds,
    )
    outcome = ExperimentOutcome(
        "ok", "", None, reported, progress, timings, train_log=train_log, usage=trained.usage,
        killed_by=trained.killed_by, log_head=trained.log_head, log_tail=trained.log_tail,
        log_bytes=trained.log_bytes, log_dropped_bytes=trained.log_dropped_bytes,
    )
    failure = training_failure(trained)
    if failure:
        outcome.status, outcome.reason = failure
    else:
        score_experiment(client, image, task_dir, data, handover, work_dir, split, gpu_uuid, limits, labels, outcome)
    timings.total = time.monotonic() - began
    return outcome


def data_mounts(data: Path, split: str) -> list[Mount]:
    """Read-only mounts of exactly the files one split needs, never the other splits."""
    return [Mount(path, f"/data/{path.name}") for path in split_files(data, split)]


def container_limits(limits: Limits) -> dict:
    """The ContainerSpec fields a policy's limits set."""
    return {"memory": limits.memory, "pids_limit": limits.pids_limit, "cpus": limits.cpus or None,
            "tmpfs_size": limits.tmpfs_size}


def training_failure(result: ContainerResult) -> tuple[str, str] | None:
    """(status, reason) when the training container did not finish cleanly, else None."""
    if result.killed_by == SKIPPED:
        return "killed", SKIPPED_REASON
    if result.killed_by:
        return "killed", f"killed by policy ({result.killed_by})"
    if result.timed_out:
        return "timeout", "killed at the hard deadline"
    if result.oom_killed:
        return "oom", "out of memory (OOMKilled)"
    if result.exit_code != 0:
        last = result.log_tail.strip().splitlines()[-1:] or ["(no output)"]
        return "crash", f"exit code {result.exit_code}: {last[0][:300]}"
    return None


def score_experiment(client, image, task_dir, data, handover, work_dir, split, gpu_uuid, limits, labels,
                     outcome) -> None:
    """Run the trusted evaluation on the handed-over model and fill outcome's score fields."""
    result, scored = score_handover(client, image=image, task_dir=task_dir, data=data, handover=handover,
                                    log_path=work_dir / "score.log", split=split, gpu_uuid=gpu_uuid, limits=limits,
                                    labels=labels)
    outcome.score_log = work_dir / "score.log"
    outcome.timings.score_container_start = scored.start_seconds
    outcome.timings.scoring = scored.run_seconds
    outcome.score = result
    if result.get("status") == "ok":
        outcome.val_bpb = result["bpb"]
    elif result.get("status") == "violation":
        outcome.status, outcome.reason = "violation", result["reason"]
    else:
        reason = result.get("reason") or f"scoring failed (exit code {scored.exit_code})"
        outcome.status, outcome.reason = "crash", reason


def score_handover(client: docker.DockerClient, *, image: str, task_dir: Path, data: Path, handover: Path,
                   log_path: Path, split: str, gpu_uuid: str | None, limits: Limits,
                   labels: dict[str, str] | None) -> tuple[dict, ContainerResult]:
    """prepare.py's evaluation of handover/model.pt2 on split, in a fresh container: (its JSON line, the run)."""
    model = handover / "model.pt2"
    spec = ContainerSpec(
        image=image,
        command=["python3", "/task/prepare.py", "evaluate", "--model", "/handover/model.pt2",
                 "--data", "/data", "--split", split],
        mounts=[Mount(task_dir / "prepare.py", "/task/prepare.py"), *data_mounts(data, split)]
        + ([Mount(model, "/handover/model.pt2")] if model.is_file() else []),
        labels={**(labels or {}), "autoresearch.phase": f"score-{split}"},
        deadline_s=SCORE_DEADLINE_S,
        gpu_uuid=gpu_uuid,
        **container_limits(limits),
    )
    scored = run_container(client, spec, log_path, max_log_bytes=limits.log_max_bytes)
    return last_json_line(scored.log_tail), scored


def last_json_line(text: str) -> dict:
    """The last line of text that parses as a JSON object, or {}."""
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return {}

"""What a slot does with a job, wherever the slot is: the same code on this host and on a Ray node.

A training job trains and scores its candidate with runner/phases/experiment.py on the slot's GPU or
CPU cores, hashing the files the experiment must not change before and after; a test job scores a
kept model's hand-over, still on that slot, on the held-out test split. Nothing here writes the store.
"""

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autoresearch.runner.check.integrity import hash_files, protected_files
from autoresearch.runner.check.policy import Limits
from autoresearch.runner.executors.base import ScoreTestJob, ScoreTestResult, Slot, TrainJob, TrainResult
from autoresearch.runner.phases.experiment import run_experiment, score_handover
from autoresearch.runner.phases.metrics import ProgressPoint
from autoresearch.runner.sandbox.base import Handover, Sandbox
from autoresearch.runner.sandbox.monitor import Sample


@dataclass(frozen=True)
class SlotHost:
    """What a host's slots run with: its sandbox, the experiment image there, its prepared data, the task."""

    sandbox: Sandbox
    image: str
    data: Path
    task_dir: Path


def slot_limits(limits: Limits, slot: Slot) -> Limits:
    """limits on slot: a CPU slot's phases get at most its own cores."""
    if slot.cpus is None:
        return limits
    return dataclasses.replace(limits, cpus=float(min(limits.cpus or slot.cpus, slot.cpus)))


def train_on_slot(host: SlotHost, slot: Slot, job: TrainJob, on_point: Callable[[ProgressPoint], None] | None = None,
                  on_sample: Callable[[Sample], None] | None = None,
                  cancel: threading.Event | None = None, on_line: Callable[[str], None] | None = None) -> TrainResult:
    """Train and score job's candidate on slot; a scored model's hand-over stays open in the outcome when the job
    asks to keep it (the caller owns it then)."""
    protected = protected_files(host.task_dir, host.data)
    before = hash_files(protected)
    work_dir = Path(job.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    candidate = work_dir / "candidate.py"
    candidate.write_bytes(job.train_py)
    outcome = run_experiment(
        host.sandbox, image=host.image, task_dir=host.task_dir, train_py=candidate, data=host.data,
        work_dir=work_dir, limits=slot_limits(job.limits, slot), gpu_uuid=slot.gpu_uuid, on_point=on_point,
        on_sample=on_sample, on_line=on_line, seed=job.seed, cancel=cancel, keep_handover=job.keep_handover,
        compile_cache=job.compile_cache, labels=job.labels, cpuset=slot.cpuset)
    return TrainResult(outcome, before, hash_files(protected))


def score_test_on_slot(host: SlotHost, slot: Slot, handover: Handover, job: ScoreTestJob) -> ScoreTestResult:
    """The held-out test split's bpb of the model in handover, scored on slot."""
    verdict, _ = score_handover(
        host.sandbox, image=host.image, task_dir=host.task_dir, data=host.data, handover=handover,
        work_dir=Path(job.work_dir), split="test", gpu_uuid=slot.gpu_uuid, limits=slot_limits(job.limits, slot),
        labels=job.labels, cpuset=slot.cpuset)
    return ScoreTestResult(verdict.bpb if verdict.status == "ok" else None, verdict.reason)

"""Judging an experiment: its status from the sandbox's verdict and the dynamic rules, then keep or discard.

`decide` turns what happened to the phases and the dynamic findings into the trial's status (ok, or the
failure); `judge` applies the keep rule to a scored trial against the run's best at the moment it
finishes (several experiments are in flight at once, so the best may have moved since it was proposed):

- it must beat the best by the threshold: the configured floor, or `noise_multiplier` times the noise
  the run measured on its baseline's seeds, whichever is larger;
- a gain under `confirm_multiplier` times that noise is not kept yet: the same train.py runs on a second
  seed, and `confirm` keeps it only if the mean of both seeds beats the best by the threshold;
- a candidate that beat its own parent by the threshold, but not the best (its parent was no longer the
  best when it finished), is a near miss: discarded, and shown to the agent to port.

The facts the dynamic rules judge are gathered here too (`run_facts`), with the one device rule of
runner/settings.py.
"""

import os
import sqlite3
import statistics
from dataclasses import asdict, dataclass, fields

from autoresearch.runner.check.dynamic_rules import Overhead, RunFacts
from autoresearch.runner.check.findings import Finding, worst_action
from autoresearch.runner.check.policy import Policy
from autoresearch.runner.config import KeepRule
from autoresearch.runner.phases.experiment import ExperimentOutcome
from autoresearch.runner.record import store
from autoresearch.runner.record.status import Status


def decide(outcome: ExperimentOutcome, dynamic: list[Finding]) -> tuple[str, str]:
    """The experiment's status: the phase's fate first, then any finding that discards it."""
    if outcome.status not in (Status.OK, Status.KILLED):
        return outcome.status, outcome.reason
    if worst_action(dynamic) in ("block", "discard"):
        worst = next(f for f in dynamic if f.action in ("block", "discard"))
        return Status.VIOLATION, f"{worst.rule_id}: {worst.message}"
    if outcome.status == Status.KILLED:
        return outcome.status, outcome.reason
    return Status.OK, "finished and scored"


def keep_threshold(conn: sqlite3.Connection, rule: KeepRule, run_id: int | None = None) -> float:
    """The improvement a candidate needs: the configured floor, or the measured seed noise times the multiplier
    (the run's own noise when it measured one)."""
    noise = store.latest_noise(conn, run_id)
    return max(rule.threshold, rule.noise_multiplier * noise.std_bpb) if noise else rule.threshold


@dataclass(frozen=True)
class Judgement:
    """How the keep rule judged one scored candidate; recorded as the experiment's judge_json."""

    status: str  # keep or discard; ok while it waits for its confirmation
    best_bpb: float | None  # the best when it finished
    threshold: float
    noise_std: float | None
    gain: float | None = None  # over the best
    stale_parent: bool = False  # its parent was no longer the best when it finished
    near_miss: bool = False  # beat its parent by the threshold, not the best
    awaiting_confirmation: bool = False
    seeds: tuple[float, ...] = ()  # with a confirmation: the val_bpb of each seed
    confirmed_by: int | None = None  # the confirmation's experiment id

    def to_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value not in (None, False, ())}

    @classmethod
    def from_json(cls, recorded: dict) -> "Judgement":
        """A judgement as judge_json recorded it (other keys of that column are the loop's)."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in recorded.items() if key in known}
        return cls(**{**values, "seeds": tuple(values.get("seeds", ()))})


def judge(val_bpb: float, best: store.Experiment, parent: store.Experiment | None, threshold: float,
          noise_std: float | None, confirm_multiplier: float) -> Judgement:
    """The keep rule on one scored candidate against the best now; parent: the kept experiment it was proposed
    from (None: unknown, taken as the best)."""
    gain = best.val_bpb - val_bpb  # type: ignore[operator]
    stale = parent is not None and parent.id != best.id
    common = {"best_bpb": best.val_bpb, "threshold": threshold, "noise_std": noise_std, "gain": gain,
              "stale_parent": stale}
    if gain > threshold:
        close = noise_std is not None and confirm_multiplier > 0 and gain < confirm_multiplier * noise_std
        return Judgement(Status.OK if close else Status.KEEP, awaiting_confirmation=close, **common)
    near = stale and parent.val_bpb - val_bpb > threshold  # type: ignore[union-attr, operator]
    return Judgement(Status.DISCARD, near_miss=near, **common)


def confirm(first: Judgement, seeds: list[float], best: store.Experiment, confirmation_id: int) -> Judgement:
    """A close keep after its second seed: kept when the mean of its seeds beats the best now by the threshold."""
    gain = best.val_bpb - statistics.fmean(seeds)  # type: ignore[operator]
    status = Status.KEEP if gain > first.threshold else Status.DISCARD
    return Judgement(status, best.val_bpb, first.threshold, first.noise_std, gain, first.stale_parent,
                     seeds=tuple(seeds), confirmed_by=confirmation_id)


def run_facts(outcome: ExperimentOutcome, policy: Policy, device: str, before: dict, after: dict,
              baseline: Overhead | None = None) -> RunFacts:
    """What the dynamic rules judge. device picks the allowances; a compute the monitor could only measure in
    the other unit (no NVML on a GPU run) is left unmeasured rather than compared against the wrong capacity."""
    usage, timings = outcome.usage, outcome.timings
    gpu = device == "gpu"
    measured_as_device = usage is not None and (usage.kind == "nvml") == gpu
    return RunFacts(
        budget_s=policy.limits.time_budget_s,
        trusted_bpb=outcome.val_bpb,
        reported=outcome.reported,
        training_wall_s=timings.train_phase,
        compute_s=timings.compute if measured_as_device else None,
        compute_kind=device,
        capacity=1.0 if gpu else float(policy.limits.cpus or os.cpu_count() or 1),
        before_progress_s=timings.before_progress,
        after_progress_s=timings.after_progress,
        progress_span_s=timings.progress_span,
        compute_outside_s=timings.compute_outside if measured_as_device else None,
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

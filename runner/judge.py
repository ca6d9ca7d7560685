"""Judging an experiment: its status from the sandbox's verdict and the dynamic rules, then keep or discard.

`decide` turns what happened to the phases and the dynamic findings into the trial's status (ok, or the
failure); `keep_or_discard` applies the keep rule to a scored trial against the run's best. The facts the
dynamic rules judge are gathered here too (`run_facts`), with the one device rule of runner/settings.py.
"""

import os
import sqlite3

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


def keep_threshold(conn: sqlite3.Connection, rule: KeepRule) -> float:
    """The improvement a candidate needs: the configured floor, or the measured seed noise times the multiplier."""
    noise = store.latest_noise(conn)
    return max(rule.threshold, rule.noise_multiplier * noise.std_bpb) if noise else rule.threshold


def keep_or_discard(status: str, val_bpb: float | None, best: store.Experiment | None, threshold: float) -> str:
    """keep or discard for a scored trial (the first scored one is the baseline: kept); a failure keeps its status."""
    if status != Status.OK:
        return status
    if best is None:
        return Status.KEEP
    return Status.KEEP if val_bpb < best.val_bpb - threshold else Status.DISCARD


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

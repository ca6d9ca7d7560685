"""The words of the record: an experiment's status, a run's state, and the groups the code asks about.

One module owns them, so the loop, the CLI and the TUI mean the same thing by "failed" or "open". The
enums are StrEnums: a member equals its string, so the store keeps plain text and reads compare either
way. The store's CHECK constraints list the same words (tests/test_store.py checks that they agree).

Every status falls in exactly one of OPEN, SCORED, JUDGED, FAILED and {BLOCKED}.
"""

from enum import StrEnum
from typing import Protocol


class Status(StrEnum):
    """An experiment's status, as the store's `experiments.status` holds it."""

    PENDING = "pending"  # recorded, not started
    RUNNING = "running"  # training or scoring
    OK = "ok"  # scored; the loop's keep or discard comes next (a `noise` repeat stays ok)
    KEEP = "keep"  # beat the best by the keep rule: the branch advanced to it
    DISCARD = "discard"  # scored, did not beat the best
    CRASH = "crash"  # exited with an error, or scoring gave no verdict
    TIMEOUT = "timeout"  # killed at the hard deadline
    OOM = "oom"  # out of memory
    KILLED = "killed"  # killed by the policy, skipped, or interrupted (see `interrupted`)
    BLOCKED = "blocked"  # the policy refused it before it ran (never committed)
    VIOLATION = "violation"  # ran, but broke a rule (a finding that discards, or the scorer's verdict)


class Role(StrEnum):
    """What an experiment is for, as `experiments.role` holds it; NULL: the baseline or a candidate."""

    NOISE = "noise"  # a seed of the baseline, measuring the run's noise
    CONFIRM = "confirm"  # a second seed of a close keep, confirming it


MEASUREMENT_ROLES = frozenset({Role.NOISE, Role.CONFIRM})
"""Extra seeds of a train.py already run: never a keep, a baseline or a counted experiment of their own."""


class RunState(StrEnum):
    """A run's state, as the store's `runs.state` holds it."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"  # on request, or because it could not go on (the note says why)
    FINISHED = "finished"  # a cap was reached, or the agent had nothing more to propose
    CRASHED = "crashed"  # the runner failed or was interrupted (the note says why)


DEAD = "dead"
"""Shown, never stored: a run recorded as LIVE whose runner is gone (stale heartbeat, no process)."""

OPEN = frozenset({Status.PENDING, Status.RUNNING})
"""Not ended yet: what a dead runner leaves behind, closed as killed when its run resumes."""

SCORED = frozenset({Status.OK})
"""Scored but not yet judged: the loop turns it into keep or discard (outside a run it stays ok)."""

UNSETTLED = OPEN | SCORED
"""May still change: a reader of a live run reads these again."""

JUDGED = frozenset({Status.KEEP, Status.DISCARD})
"""Scored and judged by the keep rule; results.tsv writes every other status as crash."""

FAILED = frozenset({Status.CRASH, Status.TIMEOUT, Status.OOM, Status.KILLED, Status.VIOLATION})
"""Ended without a usable score: the loop hands the agent the last one's log tail."""

CRASHED = FAILED - {Status.VIOLATION}
"""FAILED less violation: the run itself broke (the dashboard counts violations apart, as rule breaking)."""

RULE_BREAKS = frozenset({Status.VIOLATION, Status.BLOCKED})
"""A rule was broken: during the run (violation) or before it, by the policy's check (blocked)."""

LIVE = frozenset({RunState.RUNNING, RunState.PAUSED})
"""Run states that say a runner owns the run: its heartbeat tells whether it really is alive."""

INTERRUPTED = "interrupted:"
"""The exit_reason prefix of an experiment closed because the runner or the engine went away."""


class _Closed(Protocol):
    exit_reason: str | None


def interrupted(experiment: _Closed) -> bool:
    """Closed because the runner or the engine went away, not because of the candidate: no cap counts it."""
    return (experiment.exit_reason or "").startswith(INTERRUPTED)

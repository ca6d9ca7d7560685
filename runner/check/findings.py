"""Findings: what a policy rule saw in one experiment, with the evidence, and what it does about it.

A finding's action decides the experiment's fate: `block` (the candidate never runs), `discard` (it
runs and is recorded as a violation, never kept) or `flag` (recorded only). Severity is for people
reading the audit; it never changes the outcome.
"""

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

SEVERITIES = ("info", "low", "medium", "high", "critical")
ACTIONS = ("block", "discard", "flag")  # strongest first


@dataclass(frozen=True)
class Finding:
    """One rule's verdict on one thing it saw."""

    rule_id: str  # e.g. "static.forbidden_import", "dynamic.metric_mismatch"
    severity: str  # one of SEVERITIES
    action: str  # one of ACTIONS
    message: str  # one line, human readable
    evidence: dict = field(default_factory=dict)  # JSON-serialisable, e.g. {"line": 12, "excerpt": "..."}

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")

    def to_dict(self) -> dict:
        """A plain dict for storage (JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Finding":
        """The Finding that to_dict stored."""
        return cls(data["rule_id"], data["severity"], data["action"], data["message"], dict(data["evidence"]))


def worst_action(findings: Iterable[Finding]) -> str | None:
    """The strongest action among findings (block > discard > flag), or None when there are none."""
    actions = {finding.action for finding in findings}
    return next((action for action in ACTIONS if action in actions), None)

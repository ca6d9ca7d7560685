"""Findings as text: how an experiment ended and what the policy saw in it, with evidence."""

import json

from rich.text import Text

from autoresearch.runner.record.store import Experiment, StoredFinding
from autoresearch.tui import format as fmt

EVIDENCE_CHARS = 400


def finding_text(stored: StoredFinding, evidence_chars: int = EVIDENCE_CHARS) -> Text:
    """severity, action, rule, then the message and the evidence (as JSON, cut at evidence_chars)."""
    finding = stored.finding
    text = Text()
    text.append(f"{finding.severity} ", style=fmt.SEVERITY_STYLES.get(finding.severity, ""))
    text.append(f"{finding.action} ", style="bold")
    text.append(finding.rule_id, style="cyan")
    text.append(f"\n{finding.message}")
    if finding.evidence:
        evidence = json.dumps(finding.evidence, sort_keys=True, default=str)
        text.append(f"\n{fmt.clip(evidence, evidence_chars)}", style="dim")
    return text


def findings_text(experiment: Experiment, findings: tuple[StoredFinding, ...]) -> Text:
    """The experiment's exit reason, then one entry per finding."""
    text = Text()
    text.append(f"#{experiment.seq} ")
    text.append_text(fmt.status_text(experiment.status))
    if experiment.exit_reason:
        text.append(f": {experiment.exit_reason}")
    if not findings:
        text.append("\n\nNo findings.", style="dim")
    for stored in findings:
        text.append("\n\n")
        text.append_text(finding_text(stored))
    return text

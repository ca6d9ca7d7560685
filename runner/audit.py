"""`autoresearch audit [--json]`: every policy finding in the workspace's store, with its evidence.

For people, one block per finding that fits in 100 columns: a line with the experiment (id, commit,
status), severity, action and rule, then the message and the evidence (compact JSON, wrapped, long
evidence cut with a pointer to --json). For programs, `--json` prints one JSON list, one object per
finding, with all the store holds, to pipe into jq. Findings quote what the agent wrote and the candidate
printed: the store keeps such text as data (bounded, control characters escaped, see untrusted.py), and
every field the table prints to a terminal is escaped once more; JSON output is ASCII-escaped.
"""

import json
import sqlite3
import textwrap
from collections import Counter
from dataclasses import dataclass

from autoresearch.runner.record import store
from autoresearch.runner.record.untrusted import escaped

WIDTH = 100
INDENT = " " * 6
EVIDENCE_LINES = 6  # wrapped lines of evidence shown per finding; --json has all of it
HEADER = f"{'EXP':>4}  {'COMMIT':<10}  {'STATUS':<9}  {'SEVERITY':<8}  {'ACTION':<7}  RULE"


@dataclass(frozen=True)
class AuditEntry:
    """A finding with the experiment it was recorded for."""

    stored: store.StoredFinding
    experiment: store.Experiment


def audit(conn: sqlite3.Connection, as_json: bool) -> int:
    """Print every finding of the store (a table, or one JSON list); the exit status is 0."""
    entries = audit_entries(conn)
    print(render_json(entries) if as_json else render_table(entries))
    return 0


def audit_entries(conn: sqlite3.Connection) -> list[AuditEntry]:
    """Every finding, oldest first, joined to its experiment."""
    experiments = {experiment.id: experiment for experiment in store.list_experiments(conn)}
    return [AuditEntry(stored, experiments[stored.experiment_id]) for stored in store.list_findings(conn)]


def render_json(entries: list[AuditEntry]) -> str:
    """One JSON document: a list of flat objects, one per finding."""
    return json.dumps([entry_dict(entry) for entry in entries], indent=2)


def entry_dict(entry: AuditEntry) -> dict:
    """The JSON object of one finding (timestamps in unix seconds, like the store)."""
    finding, experiment = entry.stored.finding, entry.experiment
    return {
        "id": entry.stored.id,
        "experiment_id": experiment.id,
        "run_id": experiment.run_id,
        "commit_sha": experiment.commit_sha,
        "status": experiment.status,
        "rule_id": finding.rule_id,
        "severity": finding.severity,
        "action": finding.action,
        "message": finding.message,
        "evidence": finding.evidence,
        "recorded_at": entry.stored.recorded_at,
    }


def render_table(entries: list[AuditEntry]) -> str:
    """The human report: a header, one block per finding, a summary line."""
    if not entries:
        return "No policy findings recorded in this store."
    blocks = [HEADER, *("\n".join(entry_lines(entry)) for entry in entries), summary(entries)]
    return "\n".join(blocks)


def entry_lines(entry: AuditEntry) -> list[str]:
    """One finding: its summary line, its message, its evidence."""
    finding, experiment = entry.stored.finding, entry.experiment
    commit = (experiment.commit_sha or "-")[:10]
    first = (f"{experiment.id:>4}  {commit:<10}  {experiment.status:<9}  {escaped(finding.severity):<8}  "
             f"{escaped(finding.action):<7}  {escaped(finding.rule_id)}")
    message = textwrap.wrap(escaped(finding.message), WIDTH, initial_indent=INDENT,
                            subsequent_indent=INDENT)
    return [first, *message, *evidence_lines(finding.evidence)]


def evidence_lines(evidence: dict) -> list[str]:
    """The evidence as wrapped compact JSON, cut after EVIDENCE_LINES lines."""
    if not evidence:
        return []
    text = json.dumps(evidence, sort_keys=True, separators=(", ", ": "))
    lines = textwrap.wrap(text, WIDTH, initial_indent=f"{INDENT}evidence: ", subsequent_indent=INDENT + "  ")
    if len(lines) <= EVIDENCE_LINES:
        return lines
    return [*lines[:EVIDENCE_LINES], f"{INDENT}  ... (cut: `autoresearch audit --json` has all of it)"]


def summary(entries: list[AuditEntry]) -> str:
    """'N findings in M experiments: 2 block, 1 flag'."""
    experiments = {entry.experiment.id for entry in entries}
    actions = Counter(entry.stored.finding.action for entry in entries)
    counts = ", ".join(f"{count} {action}" for action, count in sorted(actions.items()))
    noun = "finding" if len(entries) == 1 else "findings"
    where = "experiment" if len(experiments) == 1 else "experiments"
    return f"\n{len(entries)} {noun} in {len(experiments)} {where}: {counts}"

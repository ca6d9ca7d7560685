"""The doctor's report, apart from the checks that talk to Docker: what a check is and how its status reads.

`autoresearch doctor` (runner/doctor.py) makes the report; the TUI, which never loads docker-py, reads the
same report from `doctor --json` with these types.
"""

from dataclasses import asdict, dataclass

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"  # fail: the configured run cannot start
MARKS = {OK: "✓", WARN: "!", FAIL: "✗", SKIP: "–"}  # each status reads at a glance, with colour or without


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, what it found, and the fix when it is not fine."""

    name: str
    status: str  # OK, WARN, FAIL or SKIP
    detail: str
    fix: str | None = None


def report(checks: list[Check]) -> dict:
    """The JSON of `doctor --json`."""
    return {"ok": not any(c.status == FAIL for c in checks), "checks": [asdict(c) for c in checks]}

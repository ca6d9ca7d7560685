"""How values look on screen: status words with colours and marks, numbers and durations."""

import json

from rich.text import Text

from autoresearch.runner.record.status import DEAD, RunState, Status
from autoresearch.runner.record.store import Experiment
from autoresearch.runner.record.views import isolated, sandbox_label

# Each status has a colour and a mark, so it reads at a glance in colour and without it.
STATUS_STYLES: dict[str, tuple[str, str]] = {
    Status.PENDING: ("…", "dim"),
    Status.RUNNING: ("▶", "bold yellow"),
    Status.OK: ("✓", "green"),
    Status.KEEP: ("★", "bold green"),
    Status.DISCARD: ("·", "grey62"),
    Status.CRASH: ("✗", "red"),
    Status.TIMEOUT: ("⌛", "dark_orange"),
    Status.OOM: ("✗", "red"),
    Status.KILLED: ("✗", "red"),
    Status.BLOCKED: ("⊘", "magenta"),
    Status.VIOLATION: ("!", "bold red"),
}
RUN_STATE_STYLES: dict[str, str] = {
    RunState.RUNNING: "bold green", RunState.PAUSED: "bold yellow", RunState.STOPPED: "bold",
    RunState.FINISHED: "bold", RunState.CRASHED: "bold red", DEAD: "bold white on red",
}
WARNING_STYLE = "bold white on red"
SEVERITY_STYLES: dict[str, str] = {
    "info": "dim", "low": "cyan", "medium": "yellow", "high": "red", "critical": "bold red",
}
MISSING = "–"


def status_text(status: str) -> Text:
    """The status as a mark and a word, in its colour: `★ keep`."""
    mark, style = STATUS_STYLES.get(status, ("?", ""))
    return Text(f"{mark} {status}", style=style)


def sandbox_warning(sandbox: str | None) -> Text | None:
    """`sandbox: process (NOT ISOLATED)` in alarm colours for a run or experiment that ran without isolation."""
    if isolated(sandbox) is not False:
        return None
    return Text(sandbox_label(sandbox) or "", style=WARNING_STYLE)


def bpb(value: float | None) -> str:
    """Bits per byte with 6 decimals, the precision the anchor reports."""
    return MISSING if value is None else f"{value:.6f}"


def gain(value: float | None) -> str:
    """An improvement in bits per byte, signed, 6 decimals."""
    return MISSING if value is None else f"{value:+.6f}"


def seconds(value: float | None) -> str:
    """Seconds with one decimal."""
    return MISSING if value is None else f"{value:.1f}"


def duration(value: float) -> str:
    """A wall-clock duration as `42s`, `12m05s` or `3h02m`."""
    value = max(int(value), 0)
    if value < 60:
        return f"{value}s"
    if value < 3600:
        return f"{value // 60}m{value % 60:02d}s"
    return f"{value // 3600}h{value % 3600 // 60:02d}m"


def megabytes(value: float | None) -> str:
    """Memory as `812 MB` or `41.2 GB`."""
    if value is None:
        return MISSING
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.0f} MB"


def short_sha(sha: str | None) -> str:
    return (sha or MISSING)[:7]


def reported_val_bpb(experiment: Experiment) -> float | None:
    """The val_bpb train.py printed itself (advisory), from the experiment's reported summary."""
    reported = experiment.reported_json
    if isinstance(reported, str):  # tolerate a summary stored as JSON text inside the JSON column
        try:
            reported = json.loads(reported)
        except ValueError:
            return None
    value = reported.get("val_bpb") if isinstance(reported, dict) else None
    return float(value) if isinstance(value, int | float) else None


def clip(text: str, width: int) -> str:
    """text on one line, cut with … to at most width characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"

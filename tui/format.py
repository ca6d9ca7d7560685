"""How values look on screen: status colours, numbers, paths."""

import json
from pathlib import Path

from rich.text import Text

from autoresearch.runner.store import Experiment

STATUS_STYLES: dict[str, str] = {
    "pending": "dim",
    "running": "bold yellow",
    "ok": "green",
    "keep": "bold green",
    "discard": "grey62",
    "crash": "red",
    "timeout": "dark_orange",
    "oom": "red",
    "killed": "red",
    "blocked": "magenta",
    "violation": "bold red",
}
SEVERITY_STYLES: dict[str, str] = {
    "info": "dim", "low": "cyan", "medium": "yellow", "high": "red", "critical": "bold red",
}
MISSING = "–"


def status_text(status: str) -> Text:
    """The status word in its colour."""
    return Text(status, style=STATUS_STYLES.get(status, ""))


def bpb(value: float | None) -> str:
    """Bits per byte with 6 decimals, the precision the anchor reports."""
    return MISSING if value is None else f"{value:.6f}"


def seconds(value: float | None) -> str:
    """Seconds with one decimal."""
    return MISSING if value is None else f"{value:.1f}"


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


def short_path(path: Path, width: int) -> str:
    """path with the home folder as ~, cut from the left with … to at most width characters."""
    text = str(path)
    home = str(Path.home())
    if text == home or text.startswith(home + "/"):
        text = "~" + text[len(home):]
    return text if len(text) <= width else "…" + text[len(text) - width + 1:]


def clip(text: str, width: int) -> str:
    """text on one line, cut with … to at most width characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"

"""Parsing what train.py prints: one progress line per step and a final summary block.

Progress lines are logfmt after a fixed word, e.g.
    progress step=12 elapsed=3.41 loss=5.123456 tok_per_s=12345 mfu=38.20
The summary follows a line `---`, one `key: value` per line (autoresearch's format). Both are
advisory: train.py is the agent's code, so nothing here is trusted as a score.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressPoint:
    step: int
    elapsed: float
    loss: float
    tok_per_s: float
    mfu: float


def parse_progress(line: str) -> ProgressPoint | None:
    """A ProgressPoint from a progress line, or None for any other (or malformed) line."""
    if not line.startswith("progress "):
        return None
    try:
        fields = dict(item.split("=", 1) for item in line.split()[1:])
        return ProgressPoint(
            step=int(fields["step"]),
            elapsed=float(fields["elapsed"]),
            loss=float(fields["loss"]),
            tok_per_s=float(fields.get("tok_per_s", "nan")),
            mfu=float(fields.get("mfu", "nan")),
        )
    except (KeyError, ValueError):
        return None


def parse_summary(text: str) -> dict[str, float]:
    """The numeric `key: value` lines after the last `---` line of a log."""
    _, sep, block = ("\n" + text).rpartition("\n---\n")
    if not sep:
        return {}
    summary = {}
    for line in block.splitlines():
        key, colon, value = line.partition(":")
        if not colon:
            continue
        try:
            summary[key.strip()] = float(value)
        except ValueError:
            continue
    return summary

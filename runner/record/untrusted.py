"""Text that came out of a sandbox is data: a candidate's output, its exit text, the scorer's reasons, evidence.

Anything a candidate (or the agent that wrote it) can influence may hold terminal control sequences, bidi
overrides, fake status lines or kilobytes of text. `as_data` is the one way such text enters the store, a
screen, `--json` or an agent's prompt: every character that is not printable is escaped (`\\x1b`, `\\u202e`,
`\\n`), so it can neither drive a terminal nor pass for a line of ours, and the result is cut to a bound with
a marker saying how long it was. Applying it twice changes nothing, so each layer may apply it again.
Rich/Textual markup (`[red]`) is printable text: whoever draws it must draw it literally (a `Text`).
"""

from typing import Any

EXCERPT_CHARS = 500  # exit reasons, run notes, finding messages and evidence strings, as stored and shown
DESCRIPTION_CHARS = 200  # an experiment's one-line description (the agent's), as stored and shown


def escaped(text: str, keep_newlines: bool = False) -> str:
    """text with every non-printable character escaped (newlines and tabs kept when asked)."""
    if text.isprintable():
        return text
    kept = "\n\t" if keep_newlines else ""
    return "".join(ch if ch.isprintable() or ch in kept else ch.encode("unicode_escape").decode("ascii") for ch in text)


def as_data(text: str, limit: int = EXCERPT_CHARS, keep_newlines: bool = False) -> str:
    """text escaped, then cut to at most limit characters: the head kept, the cut marked."""
    safe = escaped(text, keep_newlines)
    if len(safe) <= limit:
        return safe
    marker = f" [... cut from {len(safe)} characters]"
    return safe[: max(limit - len(marker), 0)] + marker


def tail_as_data(text: str, limit: int, keep_newlines: bool = True) -> str:
    """text escaped, then cut to at most limit characters: the tail kept (a log's failure is at its end)."""
    safe = escaped(text, keep_newlines)
    if len(safe) <= limit:
        return safe
    marker = f"[... cut from {len(safe)} characters] "
    return marker + safe[len(safe) - max(limit - len(marker), 0):]


def json_as_data(value: Any, limit: int = EXCERPT_CHARS) -> Any:
    """A JSON value (e.g. a finding's evidence) with every string in it, keys too, passed through as_data."""
    if isinstance(value, str):
        return as_data(value, limit)
    if isinstance(value, dict):
        return {as_data(str(key), limit): json_as_data(item, limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_as_data(item, limit) for item in value]
    return value

"""The replay agent: proposes a recorded sequence of edits, for tests and reproductions.

The file is JSONL, one edit a line (blank lines are skipped):
    {"description": "...", "train_py": "..."}                     a whole new train.py
    {"description": "...", "replace": [["old", "new"], ...]}      edits of the current best train.py
and either may say how long the agent "thinks" before it proposes: "think_s": 30 (benches of the loop).
It is read and checked when the agent is made: a missing or malformed file is a UserError naming the line.
Each propose() consumes one edit, even when it does not apply (a replace whose `old` is not unique: an
AgentError, and the next call moves on to the next edit). After the last edit, propose() raises Exhausted,
an AgentFatal: the loop should end the run normally, as a replay that has finished.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

from autoresearch.runner.agents.base import AgentError, AgentFatal, Outcome, Proposal, ProposalContext
from autoresearch.runner.errors import UserError


class Exhausted(AgentFatal):
    """Every recorded edit has been proposed."""


@dataclass(frozen=True)
class Edit:
    """One recorded edit: a whole train.py, or (old, new) replacements."""

    description: str
    train_py: str | None = None
    replace: tuple[tuple[str, str], ...] = ()
    think_s: float = 0.0


class ReplayAgent:
    """Proposes the edits of a replay file in order; see the module docstring."""

    name = "replay"
    model = ""

    def __init__(self, path: Path) -> None:
        self.edits = load_edits(path)
        self._next = 0

    def propose(self, context: ProposalContext) -> Proposal:
        """The next recorded edit applied to context.train_py."""
        if self._next >= len(self.edits):
            raise Exhausted(f"replay finished: {len(self.edits)} edits applied")
        edit = self.edits[self._next]
        self._next += 1
        time.sleep(edit.think_s)
        if edit.train_py is not None:
            return Proposal(edit.train_py, edit.description)
        train_py = context.train_py
        for old, new in edit.replace:
            count = train_py.count(old)
            if count != 1:
                raise AgentError(f"replay edit {self._next}: {old[:60]!r} occurs {count} times in train.py, not once")
            train_py = train_py.replace(old, new)
        return Proposal(train_py, edit.description)

    def preflight(self) -> None:
        """Nothing to check: the edits were read when the agent was made."""

    def observe(self, outcome: Outcome) -> None:
        """Nothing to learn: the edits are fixed."""


def load_edits(path: Path) -> list[Edit]:
    """The edits of a replay file; UserError with the line number for anything malformed."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the replay file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    edits = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                edits.append(_parse(line))
            except ValueError as exc:
                raise UserError(f"{path}:{number}: {exc}") from exc
    if not edits:
        raise UserError(f"the replay file {path} has no edits")
    return edits


def _parse(line: str) -> Edit:
    record = json.loads(line)  # JSONDecodeError is a ValueError
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    description = record.get("description")
    if not isinstance(description, str) or not description.strip() or "\n" in description:
        raise ValueError('"description" must be a non-empty one-line string')
    think_s = record.get("think_s", 0.0)
    if not isinstance(think_s, int | float) or isinstance(think_s, bool) or think_s < 0:
        raise ValueError('"think_s" must be a number of seconds, 0 or more')
    if ("train_py" in record) == ("replace" in record):
        raise ValueError('expected exactly one of "train_py" and "replace"')
    if "train_py" in record:
        if not isinstance(record["train_py"], str):
            raise ValueError('"train_py" must be a string')
        return Edit(description, train_py=record["train_py"], think_s=float(think_s))
    pairs = record["replace"]
    valid = isinstance(pairs, list) and pairs and all(_is_pair(pair) for pair in pairs)
    if not valid:
        raise ValueError('"replace" must be a non-empty list of [old, new] string pairs with a non-empty old')
    return Edit(description, replace=tuple((old, new) for old, new in pairs), think_s=float(think_s))


def _is_pair(pair: object) -> bool:
    return isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair) and bool(pair[0])

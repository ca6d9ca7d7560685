"""The in-process LLM agents' tools: their JSON schemas, and their execution on an in-memory copy of train.py.

Nothing here touches the disk: the model can read train.py, prepare.py, program.md and its notes, edit its
own copy of train.py, replace its notes (kept between proposals: the loop stores them per run and shows them
at the next proposal), and submit. A bad call (unknown tool, wrong argument types, an edit that does not apply,
a submission that does not parse, notes too long) comes back as an is_error tool result the model can act on.
"""

import ast
from dataclasses import dataclass, field
from typing import Any

from autoresearch.runner.record.store import NOTES_CHARS

EDITABLE = "train.py"
NOTES = "notes.md"  # the name view_file shows the notes under
MAX_DESCRIPTION_CHARS = 200

TOOLS: list[dict[str, Any]] = [
    {
        "name": "view_file",
        "description": "Show a task file with line numbers (train.py as edited so far). Optionally a line range.",
        "input_schema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": ["train.py", "prepare.py", "program.md", NOTES]},
                "start_line": {"type": "integer", "description": "first line to show, 1-based"},
                "end_line": {"type": "integer", "description": "last line to show, inclusive"},
            },
            "required": ["name"],
        },
    },
    {
        "name": "replace_in_train_py",
        "description": "Replace the text `old`, which must occur exactly once in train.py, by `new`.",
        "input_schema": {
            "type": "object",
            "properties": {"old": {"type": "string"}, "new": {"type": "string"}},
            "required": ["old", "new"],
        },
    },
    {
        "name": "rewrite_train_py",
        "description": "Replace the whole of train.py by `content`. Prefer replace_in_train_py for small edits.",
        "input_schema": {
            "type": "object",
            "properties": {"content": {"type": "string"}},
            "required": ["content"],
        },
    },
    {
        "name": "update_notes",
        "description": f"Replace your notes by `content`, the whole new text (at most {NOTES_CHARS} characters): "
                       "what you learned and what to try next. They are kept between proposals and shown to you at "
                       "each one. Call it before submit.",
        "input_schema": {
            "type": "object",
            "properties": {"content": {"type": "string", "maxLength": NOTES_CHARS}},
            "required": ["content"],
        },
    },
    {
        "name": "submit",
        "description": "Submit the edited train.py as the next experiment, with a one-line description of the idea.",
        "input_schema": {
            "type": "object",
            "properties": {"description": {"type": "string", "maxLength": MAX_DESCRIPTION_CHARS}},
            "required": ["description"],
        },
    },
]


@dataclass(frozen=True)
class ToolResult:
    """The text sent back for one tool call."""

    text: str
    is_error: bool = False

    def block(self, tool_use_id: str) -> dict[str, Any]:
        """The tool_result content block answering tool_use_id."""
        return {"type": "tool_result", "tool_use_id": tool_use_id, "content": self.text, "is_error": self.is_error}


class _BadInput(Exception):
    """A tool call the model must correct; the message says how."""


@dataclass
class WorkingCopy:
    """train.py as the model has edited it so far, the read-only files, its notes, and the submission once made."""

    original: str
    readonly: dict[str, str]  # prepare.py and program.md
    notes: str = ""  # the notes the context gave; update_notes replaces them
    train_py: str = field(init=False)
    description: str | None = field(init=False, default=None)  # set by a successful submit
    _notes_updated: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.train_py = self.original

    def run(self, name: str, tool_input: object) -> ToolResult:
        """Execute one tool call."""
        handlers = {
            "view_file": self._view,
            "replace_in_train_py": self._replace,
            "rewrite_train_py": self._rewrite,
            "update_notes": self._update_notes,
            "submit": self._submit,
        }
        handler = handlers.get(name)
        if handler is None:
            return ToolResult(f"unknown tool {name!r}; the tools are: {', '.join(handlers)}", is_error=True)
        if not isinstance(tool_input, dict):
            return ToolResult(f"the input of {name} must be a JSON object", is_error=True)
        try:
            return handler(tool_input)
        except _BadInput as exc:
            return ToolResult(str(exc), is_error=True)

    def _view(self, args: dict[str, Any]) -> ToolResult:
        name = _arg(args, "name", str)
        files = {EDITABLE: self.train_py, **self.readonly, NOTES: self.notes}
        if name not in files:
            raise _BadInput(f"no file {name!r}; the files are: {', '.join(files)}")
        lines = files[name].splitlines()
        start = _arg(args, "start_line", int, required=False) or 1
        end = _arg(args, "end_line", int, required=False) or len(lines)
        if not lines:
            return ToolResult(f"{name} is empty")
        if start < 1 or end < start:
            raise _BadInput(f"bad line range {start}..{end}; {name} has {len(lines)} lines")
        shown = lines[start - 1 : end]
        if not shown:
            raise _BadInput(f"{name} has only {len(lines)} lines")
        return ToolResult("\n".join(f"{n:>5}\t{line}" for n, line in enumerate(shown, start)))

    def _replace(self, args: dict[str, Any]) -> ToolResult:
        old, new = _arg(args, "old", str), _arg(args, "new", str)
        count = self.train_py.count(old) if old else 0
        if count == 0:
            raise _BadInput("`old` does not occur in train.py; view_file shows the current text (mind the whitespace)")
        if count > 1:
            raise _BadInput(f"`old` occurs {count} times in train.py; include more context so it occurs exactly once")
        self.train_py = self.train_py.replace(old, new)
        return ToolResult(f"replaced; train.py has {len(self.train_py.splitlines())} lines{_parse_note(self.train_py)}")

    def _rewrite(self, args: dict[str, Any]) -> ToolResult:
        content = _arg(args, "content", str)
        if not content.strip():
            raise _BadInput("`content` is empty")
        self.train_py = content
        return ToolResult(f"rewritten; train.py has {len(content.splitlines())} lines{_parse_note(content)}")

    def _update_notes(self, args: dict[str, Any]) -> ToolResult:
        content = _arg(args, "content", str)
        if len(content) > NOTES_CHARS:
            raise _BadInput(f"the notes have {len(content)} characters, more than {NOTES_CHARS}: shorten them")
        self.notes, self._notes_updated = content, True
        return ToolResult(f"notes saved ({len(content)} characters); they are shown to you at the next proposal")

    def new_notes(self) -> str | None:
        """The notes for Proposal.notes: as update_notes left them, None when the model never called it."""
        return self.notes if self._notes_updated else None

    def _submit(self, args: dict[str, Any]) -> ToolResult:
        description = _arg(args, "description", str).strip()
        if not description or "\n" in description or len(description) > MAX_DESCRIPTION_CHARS:
            raise _BadInput(f"the description must be one non-empty line of at most {MAX_DESCRIPTION_CHARS} chars")
        if self.train_py == self.original:
            raise _BadInput("train.py is unchanged: edit it before submitting")
        error = syntax_error(self.train_py)
        if error:
            raise _BadInput(f"train.py does not parse ({error}); fix it and submit again")
        self.description = description
        return ToolResult("submitted")


def syntax_error(source: str) -> str | None:
    """Why source is not valid Python, in one line, or None when it parses."""
    try:
        ast.parse(source)
    except SyntaxError as exc:
        return f"line {exc.lineno}: {exc.msg}"
    except ValueError as exc:  # e.g. a null byte
        return str(exc)
    return None


def _parse_note(source: str) -> str:
    error = syntax_error(source)
    return f"; note: it does not parse now ({error})" if error else ""


def _arg(args: dict[str, Any], key: str, kind: type, *, required: bool = True) -> Any:
    value = args.get(key)
    if value is None:
        if required:
            raise _BadInput(f"missing argument {key!r}")
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _BadInput(f"argument {key!r} must be {'a string' if kind is str else 'an integer'}")
    return value

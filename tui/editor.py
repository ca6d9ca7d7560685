"""Editing a file in the user's editor while the TUI steps aside (App.suspend gives it the terminal)."""

import os
import shlex
import subprocess
from pathlib import Path

from textual.app import App, SuspendNotSupported

DEFAULT_EDITOR = "vi"


def editor_command(path: Path) -> list[str]:
    """$VISUAL, else $EDITOR, else vi, with path as its last argument."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or DEFAULT_EDITOR
    return [*shlex.split(editor), str(path)]


def edit(app: App, path: Path) -> tuple[bool, str]:
    """Open path in the editor; (whether the file changed, what to tell the user)."""
    before = path.stat().st_mtime_ns if path.exists() else None
    command = editor_command(path)
    try:
        with app.suspend():
            result = subprocess.run(command, check=False)
    except SuspendNotSupported:
        return False, "this terminal cannot hand itself to an editor: edit the file in another window"
    except OSError as exc:
        return False, f"cannot start the editor {command[0]!r}: {exc.strerror} (set $EDITOR)"
    if result.returncode != 0:
        return False, f"the editor exited with {result.returncode}"
    after = path.stat().st_mtime_ns if path.exists() else None
    if after == before:
        return False, f"{path.name} unchanged"
    return True, f"{path.name} saved: the agent reads it at its next proposal"

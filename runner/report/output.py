"""Where the report and the chart go: a path checked before any work, and a write that fails in one line."""

from pathlib import Path

from autoresearch.runner.errors import UserError


def checked(path: Path) -> Path:
    """path, when its folder exists and it is no folder itself; else a UserError saying which."""
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: {folder} is not an existing directory")
    return path


def write(path: Path, data: bytes | str) -> Path:
    """Write data to path; a path the system refuses (read-only, no space, ...) is a UserError."""
    try:
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path

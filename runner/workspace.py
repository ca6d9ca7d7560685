"""Finding the workspace a command works in, and where its files go.

A workspace is a folder with an `autoresearch.toml`, searched for from the current folder upward.
Outside any workspace, commands use the scratch workspace in the cache: the bundled default task,
its own store and logs, so that `autoresearch try` works anywhere.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from autoresearch.runner.errors import UserError
from autoresearch.runner.task_files import default_task_dir

CONFIG_FILE = "autoresearch.toml"
STATE_DIR = ".autoresearch"


def cache_dir() -> Path:
    """Where prepared data, downloads and the scratch workspace live: $AUTORESEARCH_CACHE or ~/.cache/autoresearch."""
    return Path(os.environ.get("AUTORESEARCH_CACHE", "~/.cache/autoresearch")).expanduser()


@dataclass(frozen=True)
class Workspace:
    root: Path
    task_dir: Path  # holds prepare.py, train.py, program.md
    is_scratch: bool

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def store_path(self) -> Path:
        return self.state_dir / "store.db"

    @property
    def experiments_dir(self) -> Path:
        return self.state_dir / "experiments"


def nearest_existing(path: Path) -> Path:
    """path, or its closest parent that exists: where a folder yet to be made takes its space from."""
    return next(p for p in (path, *path.parents) if p.exists())


def find_workspace(start: Path | None = None) -> Workspace:
    """The workspace containing start (default: the current folder), else the scratch workspace."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file():
            return Workspace(root=folder, task_dir=folder, is_scratch=False)
    return Workspace(root=cache_dir() / "scratch", task_dir=default_task_dir(), is_scratch=True)


def require_workspace(ws: Workspace) -> None:
    """UserError unless ws is a real workspace (not the scratch one): the commands that run or read a loop need one."""
    if ws.is_scratch:
        raise UserError("not inside an autoresearch workspace: create one with `autoresearch init DIR`, "
                        "then run this command inside DIR")

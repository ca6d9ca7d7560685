"""Finding the workspace a command works in, and where its files go.

A workspace is a folder with an `autoresearch.toml`, searched for from the current folder upward.
Outside any workspace, commands use the scratch workspace in the cache: the bundled default task,
its own store and logs, so that `autoresearch try` works anywhere.
"""

from dataclasses import dataclass
from pathlib import Path

from autoresearch.runner.phases.data import cache_dir
from autoresearch.runner.task_files import default_task_dir

CONFIG_FILE = "autoresearch.toml"
STATE_DIR = ".autoresearch"


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


def find_workspace(start: Path | None = None) -> Workspace:
    """The workspace containing start (default: the current folder), else the scratch workspace."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file():
            return Workspace(root=folder, task_dir=folder, is_scratch=False)
    return Workspace(root=cache_dir() / "scratch", task_dir=default_task_dir(), is_scratch=True)

"""Where the bundled default task (task/ in the repository) lives once installed."""

from importlib.resources import files
from pathlib import Path

TASK_FILES = ("prepare.py", "train.py", "program.md")
OFFLINE_CORPUS = Path("data") / "offline_corpus.jsonl.xz"


def default_task_dir() -> Path:
    """The folder holding prepare.py, train.py, program.md and the offline corpus."""
    return Path(str(files("autoresearch.task").joinpath("prepare.py"))).parent

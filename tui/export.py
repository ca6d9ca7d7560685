"""Exporting one experiment's train.py from git to a file the user can run, diff or keep."""

from pathlib import Path

from autoresearch.runner.errors import UserError
from autoresearch.runner.record import gitrepo
from autoresearch.runner.record.store import Experiment
from autoresearch.runner.workspace import Workspace

EXPORT_DIR = "exports"


def export_path(ws: Workspace, tag: str, experiment: Experiment) -> Path:
    """`.autoresearch/exports/train-<tag>-<seq>-<sha>.py`: in the workspace, ignored by git."""
    return ws.state_dir / EXPORT_DIR / f"train-{tag}-{experiment.seq}-{(experiment.commit_sha or '')[:8]}.py"


def export_train_py(ws: Workspace, tag: str, experiment: Experiment) -> Path:
    """Write the experiment's committed train.py, byte for byte; the path written."""
    if not experiment.commit_sha:
        raise UserError(f"experiment #{experiment.seq} was never committed ({experiment.status}): nothing to export")
    code = gitrepo.read_file(gitrepo.open_repo(ws.root), experiment.commit_sha)
    path = export_path(ws, tag, experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(code)
    return path

"""`autoresearch init [DIR]`: a new workspace with the task's files, a config and a git repository.

DIR may be missing, an empty folder (which gets a repository of its own, even inside another one: the
runner's commits put train.py at the repository root), or the root of a git repository that is not a
workspace yet; a non-empty folder that is not a repository root is refused, so init never mixes the task
into unrelated files. It is refused too inside another workspace (its commands would find the outer one), and where
one of the files it writes already exists.

The workspace gets `prepare.py`, `train.py` and `program.md` from the task, `autoresearch.toml` with
the defaults and `.autoresearch/` ignored in `.gitignore` (appended to an existing one), all committed
on the repository's current branch. The offline corpus is not copied: the runner mounts the bundled
one into data preparation, so a workspace stays small in git. In an existing repository only these
files are added to the index; the user's other staged and unstaged changes stay as they were.
"""

from pathlib import Path

import pygit2

from autoresearch.runner.config import default_config_toml
from autoresearch.runner.errors import UserError
from autoresearch.runner.record import gitrepo
from autoresearch.runner.task_files import TASK_FILES, default_task_dir
from autoresearch.runner.workspace import CONFIG_FILE, STATE_DIR, find_workspace

IGNORE_LINE = f"{STATE_DIR}/"


def init_workspace(target: Path, task_dir: Path | None = None) -> Path:
    """Make target a workspace of the task in task_dir (default: the bundled task); returns its root."""
    root = target.expanduser().resolve()
    _check_target(root)
    root.mkdir(parents=True, exist_ok=True)
    repo = _repository(root)
    source = task_dir or default_task_dir()
    for name in TASK_FILES:
        (root / name).write_bytes((source / name).read_bytes())
    (root / CONFIG_FILE).write_text(default_config_toml(), encoding="utf-8")
    _ignore_state_dir(root / ".gitignore")
    _commit(repo, [*TASK_FILES, CONFIG_FILE, ".gitignore"])
    return root


def _check_target(root: Path) -> None:
    """Fail unless init may write into root."""
    outer = find_workspace(root)
    if not outer.is_scratch:
        where = "is already a workspace" if outer.root == root else f"is inside the workspace {outer.root}"
        raise UserError(f"{root} {where} ({CONFIG_FILE} found)")
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} is not a folder")
    if not root.exists() or not any(root.iterdir()):
        return
    if not (root / ".git").exists():
        raise UserError(f"{root} is not empty and not a git repository: choose a new or empty folder")
    clashes = [name for name in TASK_FILES if (root / name).exists()]
    if clashes:
        raise UserError(f"{root} already has {', '.join(clashes)}: init would overwrite it")


def _repository(root: Path) -> pygit2.Repository:
    """The repository at root, created when there is none."""
    if (root / ".git").exists():
        return gitrepo.open_repo(root)
    return pygit2.init_repository(str(root))


def _ignore_state_dir(path: Path) -> None:
    """Make the .gitignore at path ignore the state folder."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if IGNORE_LINE in text.splitlines():
        return
    separator = "\n" if text and not text.endswith("\n") else ""
    path.write_text(f"{text}{separator}{IGNORE_LINE}\n", encoding="utf-8")


def _commit(repo: pygit2.Repository, names: list[str]) -> None:
    """Commit the files names (at the root) on top of HEAD, adding exactly them to the index."""
    parents = [] if repo.head_is_unborn else [repo.head.peel(pygit2.Commit)]
    builder = repo.TreeBuilder(parents[0].tree) if parents else repo.TreeBuilder()
    index = repo.index
    index.read()
    for name in names:
        index.add(name)
        entry = index[name]
        builder.insert(name, entry.id, entry.mode)
    index.write()
    author = gitrepo.signature()
    repo.create_commit("HEAD", author, author, "autoresearch init", builder.write(), [p.id for p in parents])

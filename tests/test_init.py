"""`autoresearch init`: a workspace with the task's files, a valid config and a clean git repository."""


import pygit2
import pytest

from autoresearch.runner.config import Config, load_config
from autoresearch.runner.errors import UserError
from autoresearch.runner.init import init_workspace
from autoresearch.runner.task_files import TASK_FILES, default_task_dir
from autoresearch.runner.workspace import find_workspace


def test_a_new_folder_becomes_a_clean_committed_workspace(tmp_path):
    root = init_workspace(tmp_path / "ws")
    assert root == (tmp_path / "ws").resolve()
    for name in TASK_FILES:
        assert (root / name).read_bytes() == (default_task_dir() / name).read_bytes()
    assert load_config(root / "autoresearch.toml") == Config()
    assert not (root / "data").exists()  # the runner mounts the bundled offline corpus

    repo = pygit2.Repository(str(root))
    assert repo.status() == {}
    head = repo.head.peel(pygit2.Commit)
    assert sorted(entry.name for entry in head.tree) == sorted([*TASK_FILES, "autoresearch.toml", ".gitignore"])
    assert head.tree["train.py"].data == (default_task_dir() / "train.py").read_bytes()
    (root / ".autoresearch").mkdir()
    (root / ".autoresearch" / "store.db").write_bytes(b"x")
    assert repo.path_is_ignored(".autoresearch/store.db")
    assert repo.status() == {}

    workspace = find_workspace(root / ".autoresearch")
    assert (workspace.root, workspace.task_dir, workspace.is_scratch) == (root, root, False)


def test_a_given_task_folder_is_copied(tmp_path):
    task = tmp_path / "task"
    task.mkdir()
    for name in TASK_FILES:
        (task / name).write_text(f"# my {name}\n")
    root = init_workspace(tmp_path / "ws", task_dir=task)
    assert (root / "train.py").read_text() == "# my train.py\n"


def test_an_existing_workspace_or_a_folder_inside_one_is_refused(tmp_path):
    root = init_workspace(tmp_path / "ws")
    with pytest.raises(UserError, match="is already a workspace"):
        init_workspace(root)
    with pytest.raises(UserError, match="is inside the workspace"):
        init_workspace(root / "nested")


def test_a_non_empty_folder_that_is_no_repository_is_refused(tmp_path):
    (tmp_path / "stuff.txt").write_text("mine\n")
    with pytest.raises(UserError, match="is not empty and not a git repository"):
        init_workspace(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stuff.txt"]


def test_an_existing_repository_gets_the_files_without_losing_the_users_changes(tmp_path):
    repo = pygit2.init_repository(str(tmp_path), initial_head="work")
    user = pygit2.Signature("User", "user@example.com")
    (tmp_path / "README.md").write_text("hello\n")
    (tmp_path / ".gitignore").write_text("*.log")
    repo.index.add_all()
    repo.index.write()
    first = repo.create_commit("HEAD", user, user, "first", repo.index.write_tree(), [])
    (tmp_path / "README.md").write_text("hello, edited\n")  # unstaged
    (tmp_path / "staged.txt").write_text("staged\n")
    repo.index.add("staged.txt")
    repo.index.write()

    init_workspace(tmp_path)

    repo = pygit2.Repository(str(tmp_path))
    assert repo.head.name == "refs/heads/work"
    head = repo.head.peel(pygit2.Commit)
    assert [str(p) for p in head.parent_ids] == [str(first)]
    assert "staged.txt" not in head.tree and head.tree["README.md"].data == b"hello\n"
    assert head.tree[".gitignore"].data == b"*.log\n.autoresearch/\n"
    assert repo.status() == {"README.md": pygit2.GIT_STATUS_WT_MODIFIED, "staged.txt": pygit2.GIT_STATUS_INDEX_NEW}


def test_a_repository_with_a_train_py_of_its_own_is_refused(tmp_path):
    pygit2.init_repository(str(tmp_path))
    (tmp_path / "train.py").write_text("mine\n")
    with pytest.raises(UserError, match=r"already has train\.py"):
        init_workspace(tmp_path)
    assert (tmp_path / "train.py").read_text() == "mine\n"

"""The git record of a run, written straight into the object database with pygit2.

A run lives on the branch `autoresearch/<tag>`. Each candidate is a commit whose parent is the best
commit at the time and whose tree is the parent's with `train.py` (at the repository root) replaced.
The branch moves only when a candidate is kept, so its tip is always the best kept commit; every
experiment also gets its own ref `refs/autoresearch/<tag>/<seq>`, so discarded, crashed and blocked
attempts stay inspectable (`git log refs/autoresearch/<tag>/7`). Results, known only after training,
are attached as notes under `refs/notes/autoresearch` (`git log --notes=autoresearch`).

Nothing here checks out, touches the index or the working tree, or moves HEAD or the user's branches:
a run can go on while the user works in the same repository.
"""

from pathlib import Path

import pygit2
from pygit2.enums import FileMode, RepositoryOpenFlag

from autoresearch.runner.errors import UserError

BRANCH_PREFIX = "autoresearch/"
EXPERIMENT_REFS = "refs/autoresearch/"
NOTES_REF = "refs/notes/autoresearch"
AUTHOR = ("autoresearch", "autoresearch@localhost")


def signature() -> pygit2.Signature:
    """The author and committer of everything the runner writes, stamped now."""
    return pygit2.Signature(*AUTHOR)


def open_repo(root: Path) -> pygit2.Repository:
    """The git repository whose working tree is root (not one found further up)."""
    try:
        return pygit2.Repository(str(root), RepositoryOpenFlag.NO_SEARCH)
    except pygit2.GitError:
        raise UserError(f"{root} is not a git repository: run `autoresearch init`") from None


def branch_name(tag: str) -> str:
    """The run's branch, `autoresearch/<tag>`, once tag is checked to be a valid ref component."""
    refs = (f"refs/heads/{BRANCH_PREFIX}{tag}", f"{EXPERIMENT_REFS}{tag}/0")
    if "/" in tag or not all(pygit2.reference_is_valid_name(ref) for ref in refs):
        raise UserError(f"invalid run tag {tag!r}: use letters, digits, '-', '_' or '.' (no '/', no spaces)")
    return f"{BRANCH_PREFIX}{tag}"


def start_branch(repo: pygit2.Repository, tag: str, base: str = "HEAD") -> str:
    """The tip of the run's branch, created at the commit base names when it does not exist yet."""
    name = branch_name(tag)
    branch = repo.branches.local.get(name)
    if branch is None:
        branch = repo.branches.local.create(name, _commit(repo, base))
    return str(branch.target)


def branch_tip(repo: pygit2.Repository, tag: str) -> str | None:
    """The sha of the run's best kept commit, or None before the run started."""
    branch = repo.branches.local.get(branch_name(tag))
    return None if branch is None else str(branch.target)


def commit_candidate(repo: pygit2.Repository, parent_sha: str, train_py: bytes, message: str) -> str:
    """A commit on parent whose tree differs from the parent's only in train.py; returns its sha."""
    parent = _commit(repo, parent_sha)
    builder = repo.TreeBuilder(parent.tree)
    old = builder.get("train.py")
    builder.insert("train.py", repo.create_blob(train_py), old.filemode if old is not None else FileMode.BLOB)
    author = signature()
    return str(repo.create_commit(None, author, author, message, builder.write(), [parent.id]))


def set_experiment_ref(repo: pygit2.Repository, tag: str, seq: int, sha: str) -> None:
    """Point `refs/autoresearch/<tag>/<seq>` at the experiment's commit (replacing any earlier one)."""
    branch_name(tag)
    repo.references.create(f"{EXPERIMENT_REFS}{tag}/{seq}", _commit(repo, sha).id, force=True)


def experiment_ref(repo: pygit2.Repository, tag: str, seq: int) -> str | None:
    """The commit of experiment seq of the run, or None when it has none."""
    ref = repo.references.get(f"{EXPERIMENT_REFS}{tag}/{seq}")
    return None if ref is None else str(ref.target)


def advance_branch(repo: pygit2.Repository, tag: str, sha: str) -> None:
    """Move the run's branch to sha, a descendant of its tip (a kept candidate)."""
    name = branch_name(tag)
    branch = repo.branches.local.get(name)
    if branch is None:
        raise UserError(f"branch {name} does not exist: the run was never started")
    commit = _commit(repo, sha)
    if commit.id != branch.target and not repo.descendant_of(commit.id, branch.target):
        raise UserError(f"cannot move {name} to {sha[:12]}: it does not descend from the tip {str(branch.target)[:12]}"
                        " (did another run move the branch?)")
    branch.set_target(commit.id, f"autoresearch: keep {sha[:12]}")


def read_file(repo: pygit2.Repository, sha: str, path: str = "train.py") -> bytes:
    """The content of path in the commit sha."""
    try:
        return _commit(repo, sha).tree[path].data
    except KeyError:
        raise UserError(f"commit {sha[:12]} has no {path}") from None


def result_note(repo: pygit2.Repository, sha: str, text: str) -> None:
    """Attach text to the commit sha as its autoresearch note (replacing an earlier one)."""
    author = signature()
    repo.create_note(text, author, author, sha, NOTES_REF, True)


def read_note(repo: pygit2.Repository, sha: str) -> str | None:
    """The autoresearch note of the commit sha, or None."""
    try:
        return repo.lookup_note(sha, NOTES_REF).message
    except KeyError:
        return None


def keep_on_branch(repo: pygit2.Repository, tag: str, sha: str) -> str:
    """Make the kept commit sha the run's best: the branch advances to it when it descends from the tip; a commit
    proposed from an earlier tip (several experiments were in flight) is committed again, its train.py unchanged,
    on top of the tip, so the branch stays one line of keeps. The commit the branch is at now."""
    branch = repo.branches.local.get(branch_name(tag))
    if branch is None:
        raise UserError(f"branch {branch_name(tag)} does not exist: the run was never started")
    commit = _commit(repo, sha)
    if commit.id == branch.target or repo.descendant_of(commit.id, branch.target):
        advance_branch(repo, tag, sha)
        return sha
    message = (f"{commit.message.rstrip()}\n\nkept over {str(branch.target)[:12]}; "
               f"proposed from {str(commit.parent_ids[0])[:12]}\n")
    moved = repo.create_commit(None, signature(), signature(), message, commit.tree_id, [branch.target])
    advance_branch(repo, tag, str(moved))
    return str(moved)


def diff_text(repo: pygit2.Repository, old_sha: str, new_sha: str, path: str = "train.py") -> str:
    """The unified diff of path between two commits, as `git diff old new -- path` prints it ("" if unchanged)."""
    diff = repo.diff(_commit(repo, old_sha).tree, _commit(repo, new_sha).tree)
    return "".join(patch.text or "" for patch in diff if path in (patch.delta.old_file.path, patch.delta.new_file.path))


def first_parent_chain(repo: pygit2.Repository, sha: str, stop_at: str | None = None) -> list[str]:
    """The shas from sha back along first parents, newest first, ending before stop_at (or at the root)."""
    chain = []
    commit = _commit(repo, sha)
    stop = None if stop_at is None else _commit(repo, stop_at).id
    while commit.id != stop:
        chain.append(str(commit.id))
        if not commit.parent_ids:
            break
        commit = repo[commit.parent_ids[0]]
    return chain


def _commit(repo: pygit2.Repository, rev: str) -> pygit2.Commit:
    """The commit rev (a sha, ref or other revision) names."""
    try:
        return repo.revparse_single(rev).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        raise UserError(f"{rev!r} names no commit in {repo.workdir or repo.path}") from None

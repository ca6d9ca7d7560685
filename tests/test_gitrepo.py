"""The run's git record: candidates, the best branch, experiment refs and notes, in a real repository."""

from pathlib import Path

import pygit2
import pytest

from autoresearch.runner.errors import UserError
from autoresearch.runner.record import gitrepo

TRAIN = b"lr = 0.01\nsteps = 100\n"


@pytest.fixture
def repo(tmp_path: Path) -> pygit2.Repository:
    """A user's repository on branch `work` with one commit, a staged change and an unstaged one."""
    repo = pygit2.init_repository(str(tmp_path / "ws"), initial_head="work")
    root = Path(repo.workdir)
    (root / "train.py").write_bytes(TRAIN)
    (root / "prepare.py").write_text("print('prepare')\n")
    repo.index.add_all()
    repo.index.write()
    user = pygit2.Signature("User", "user@example.com")
    repo.create_commit("HEAD", user, user, "initial", repo.index.write_tree(), [])
    (root / "notes.txt").write_text("staged\n")
    repo.index.add("notes.txt")
    repo.index.write()
    (root / "train.py").write_bytes(b"lr = 0.5  # the user's own edit\n")
    return repo


def snapshot(repo: pygit2.Repository) -> tuple:
    """What the user sees: HEAD, the branches, git status, the index and the working tree."""
    repo.index.read()
    root = Path(repo.workdir)
    files = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    index = sorted((entry.path, str(entry.id)) for entry in repo.index)
    return repo.head.name, str(repo.head.target), sorted(repo.branches.local), repo.status(), index, files


def test_a_run_never_touches_the_users_head_branches_index_or_working_tree(repo):
    before = snapshot(repo)
    base = gitrepo.start_branch(repo, "r1")
    kept = gitrepo.commit_candidate(repo, base, b"lr = 0.02\n", "raise the learning rate")
    gitrepo.set_experiment_ref(repo, "r1", 1, kept)
    gitrepo.advance_branch(repo, "r1", kept)
    gitrepo.result_note(repo, kept, "val_bpb 1.234 keep")
    after = snapshot(repo)
    assert after[0] == before[0] and after[1] == before[1]
    assert after[2] == sorted([*before[2], "autoresearch/r1"])
    assert after[3:] == before[3:]


def test_candidates_are_children_of_the_best_and_the_branch_moves_only_on_keep(repo):
    base = gitrepo.start_branch(repo, "r1")
    assert base == str(repo.head.target)
    assert gitrepo.start_branch(repo, "r1") == base  # already started: unchanged

    first = gitrepo.commit_candidate(repo, base, b"lr = 0.02\n", "raise the learning rate")
    commit = repo[first]
    assert [str(p) for p in commit.parent_ids] == [base]
    assert commit.message == "raise the learning rate"
    assert commit.author.name == "autoresearch" and commit.author.email == "autoresearch@localhost"
    assert gitrepo.read_file(repo, first) == b"lr = 0.02\n"
    assert gitrepo.read_file(repo, first, "prepare.py") == gitrepo.read_file(repo, base, "prepare.py")
    assert gitrepo.branch_tip(repo, "r1") == base  # not kept yet

    gitrepo.advance_branch(repo, "r1", first)
    assert gitrepo.branch_tip(repo, "r1") == first

    discarded = gitrepo.commit_candidate(repo, first, b"lr = 9.0\n", "absurd learning rate")
    second = gitrepo.commit_candidate(repo, first, b"lr = 0.03\n", "a bit higher")
    gitrepo.advance_branch(repo, "r1", second)
    assert gitrepo.branch_tip(repo, "r1") == second
    with pytest.raises(UserError, match="does not descend"):
        gitrepo.advance_branch(repo, "r1", discarded)
    assert gitrepo.first_parent_chain(repo, second) == [second, first, base]
    assert gitrepo.first_parent_chain(repo, second, stop_at=base) == [second, first]


def test_every_experiment_keeps_its_own_ref(repo):
    base = gitrepo.start_branch(repo, "r1")
    shas = [gitrepo.commit_candidate(repo, base, f"lr = {n}\n".encode(), f"try {n}") for n in range(3)]
    for seq, sha in enumerate(shas, start=1):
        gitrepo.set_experiment_ref(repo, "r1", seq, sha)
    assert [gitrepo.experiment_ref(repo, "r1", seq) for seq in (1, 2, 3)] == shas
    assert gitrepo.experiment_ref(repo, "r1", 4) is None
    assert repo.references["refs/autoresearch/r1/2"].target == repo[shas[1]].id
    gitrepo.set_experiment_ref(repo, "r1", 2, shas[0])  # a retried experiment replaces its ref
    assert gitrepo.experiment_ref(repo, "r1", 2) == shas[0]


def test_notes_carry_results_attached_after_the_fact(repo):
    sha = gitrepo.commit_candidate(repo, gitrepo.start_branch(repo, "r1"), b"x = 1\n", "try")
    assert gitrepo.read_note(repo, sha) is None
    gitrepo.result_note(repo, sha, "status: crash\n")
    gitrepo.result_note(repo, sha, "status: keep\nval_bpb: 1.1\n")
    assert gitrepo.read_note(repo, sha) == "status: keep\nval_bpb: 1.1\n"
    assert repo.references.get(gitrepo.NOTES_REF) is not None


def test_diff_text_is_the_unified_diff_of_train_py(repo):
    base = gitrepo.start_branch(repo, "r1")
    sha = gitrepo.commit_candidate(repo, base, b"lr = 0.02\nsteps = 100\n", "try")
    text = gitrepo.diff_text(repo, base, sha)
    assert "--- a/train.py\n+++ b/train.py\n" in text
    assert "-lr = 0.01\n+lr = 0.02\n" in text
    assert gitrepo.diff_text(repo, base, sha, "prepare.py") == ""
    assert gitrepo.diff_text(repo, sha, sha) == ""


def test_bad_tags_revisions_and_folders_are_one_line_errors(repo, tmp_path):
    for tag in ("a b", "x/y", "bad..tag", "", "end."):
        with pytest.raises(UserError, match="invalid run tag"):
            gitrepo.start_branch(repo, tag)
    with pytest.raises(UserError, match="names no commit"):
        gitrepo.commit_candidate(repo, "0" * 40, b"", "nothing")
    with pytest.raises(UserError, match="never started"):
        gitrepo.advance_branch(repo, "r2", str(repo.head.target))
    with pytest.raises(UserError, match=r"has no missing\.py"):
        gitrepo.read_file(repo, "HEAD", "missing.py")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="is not a git repository: run `autoresearch init`"):
        gitrepo.open_repo(tmp_path / "plain")
    assert gitrepo.open_repo(Path(repo.workdir)).path == repo.path


def test_a_subfolder_of_a_repository_is_not_its_repository(repo):
    sub = Path(repo.workdir) / "sub"
    sub.mkdir()
    with pytest.raises(UserError, match="is not a git repository"):
        gitrepo.open_repo(sub)

"""The judging of a coding-agent CLI's /work (runner/agents/workdir.py), on tars built here: every way the
hand-back can be wrong is refused, with evidence for a violation."""

import io
import tarfile

import pytest

from autoresearch.runner.agents.base import AgentViolation
from autoresearch.runner.agents.workdir import NoChange, judge_workdir

TASK = {"prepare.py": b"TIME_BUDGET = 300\n", "program.md": b"# program\n", "CONTEXT.md": b"history\n"}
GIVEN = {"train.py": b"LR = 0.02\n", "notes.md": b"", "description.txt": b""}


def tar_of(files: dict[str, bytes], *, links: dict[str, str] | None = None, root_uid: int = 0,
           root_mode: int = 0o755, special: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        root = tarfile.TarInfo(".")
        root.type, root.mode, root.uid = tarfile.DIRTYPE, root_mode, root_uid
        tar.addfile(root)
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(f"./{name}")
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for name in special or {}:
            info = tarfile.TarInfo(f"./{name}")
            info.type = tarfile.FIFOTYPE
            tar.addfile(info)
    return out.getvalue()


def work(**agent: bytes) -> dict[str, bytes]:
    return {**TASK, **GIVEN, **{name.replace("_", "."): data for name, data in agent.items()}}


def test_a_changed_train_py_with_a_description_and_notes_is_accepted():
    returned = judge_workdir(tar_of(work(train_py=b"LR = 0.03\n", description_txt=b"raise LR\n",
                                         notes_md=b"LR matters\n")), TASK, GIVEN)
    assert (returned.train_py, returned.description, returned.notes) == ("LR = 0.03\n", "raise LR", "LR matters\n")


def test_a_multi_line_description_becomes_one_capped_line():
    returned = judge_workdir(tar_of(work(train_py=b"LR = 0.03\n", description_txt=b"a\nb\n" + b"x" * 900)),
                             TASK, GIVEN)
    assert "\n" not in returned.description and len(returned.description) == 200


@pytest.mark.parametrize(("files", "extra", "message"), [
    (work(train_py=b"LR = 1\n", prepare_py=b"TIME_BUDGET = 9999\n"), {}, "changed the read-only prepare.py"),
    ({**{k: v for k, v in work(train_py=b"LR = 1\n").items() if k != "program.md"}}, {}, "added or removed"),
    (work(train_py=b"LR = 1\n", **{"evil_py": b"x"}), {}, "added or removed"),
    (work(train_py=b"x = '" + b"a" * (600 * 1024) + b"'\n"), {}, "over its cap"),
    ({k: v for k, v in work().items() if k != "train.py"}, {"links": {"train.py": "/data/val.bin"}},
     "no longer a regular file"),
    ({k: v for k, v in work(train_py=b"LR = 1\n").items() if k != "notes.md"}, {"special": {"notes.md": b""}},
     "no longer a regular file"),
    (work(train_py=b"LR = 1\n"), {"root_uid": 1000}, "changed /work itself"),
    (work(train_py=b"LR = 1\n"), {"root_mode": 0o777}, "changed /work itself"),
])
def test_every_other_change_is_a_violation_with_evidence(files, extra, message):
    with pytest.raises(AgentViolation, match=message) as caught:
        judge_workdir(tar_of(files, **extra), TASK, GIVEN)
    finding = caught.value.finding
    assert (finding.rule_id, finding.action) == ("agent.confinement", "block") and finding.evidence


def test_a_symlinked_train_py_names_its_target_in_the_evidence():
    files = {k: v for k, v in work().items() if k != "train.py"}
    with pytest.raises(AgentViolation) as caught:
        judge_workdir(tar_of(files, links={"train.py": "/run/gateway/gateway.sock"}), TASK, GIVEN)
    assert caught.value.finding.evidence["link"] == "/run/gateway/gateway.sock"
    assert caught.value.finding.evidence["kind"] == "symlink"


@pytest.mark.parametrize(("train_py", "message"), [(b"LR = 0.02\n", "without changing"),
                                                   (b"def (:\n", "does not parse"),
                                                   (b"\xff\xfe", "not UTF-8")])
def test_an_unchanged_or_broken_train_py_is_a_failed_proposal_not_a_violation(train_py, message):
    with pytest.raises(NoChange, match=message):
        judge_workdir(tar_of(work(train_py=train_py)), TASK, GIVEN)


@pytest.mark.parametrize("archive", [b"", b"not a tar at all" * 100])
def test_an_unreadable_hand_back_is_a_violation(archive):
    with pytest.raises(AgentViolation, match="could not be read back"):
        judge_workdir(archive, TASK, GIVEN)

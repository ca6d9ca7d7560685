"""What a coding-agent CLI may hand back: its agent container's /work, judged by the runner.

The runner lays /work out (images/agent_enter.sh): the task files read-only and root-owned, and three files the
agent's user owns: train.py (the experiment), notes.md (its notes between proposals) and description.txt (its one
line about the idea). After the CLI ends, the container prints a tar of /work; this module accepts only a
changed, regular, size-capped, parseable train.py, and regular, size-capped notes and description. Any other
change, addition, removal, link or special file is an AgentViolation carrying the evidence.
"""

import io
import tarfile
from dataclasses import dataclass

from autoresearch.runner.agents.base import AgentError, AgentViolation
from autoresearch.runner.agents.tools import MAX_DESCRIPTION_CHARS, syntax_error

TRAIN_PY = "train.py"
NOTES = "notes.md"
DESCRIPTION = "description.txt"
AGENT_FILES = (TRAIN_PY, NOTES, DESCRIPTION)  # the files the agent's user owns
MAX_TRAIN_PY_BYTES = 512 * 1024
MAX_NOTES_BYTES = 16 * 1024
MAX_DESCRIPTION_BYTES = 4096
LIMITS = {TRAIN_PY: MAX_TRAIN_PY_BYTES, NOTES: MAX_NOTES_BYTES, DESCRIPTION: MAX_DESCRIPTION_BYTES}


class NoChange(AgentError):
    """The CLI ended without changing train.py: a proposal that failed, retried by the loop."""


@dataclass(frozen=True)
class Returned:
    """What the agent handed back, once judged."""

    train_py: str
    notes: str
    description: str


def judge_workdir(archive: bytes, task_files: dict[str, bytes], given: dict[str, bytes]) -> Returned:
    """The accepted train.py, notes and description of /work's tar; AgentViolation or NoChange otherwise.

    task_files: the read-only files as the runner wrote them; given: the agent's files as they were handed over.
    """
    try:
        entries = _entries(archive)
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise AgentViolation("the agent's /work could not be read back", {"error": str(exc)[:300]}) from None
    expected = set(task_files) | set(AGENT_FILES)
    added = sorted(set(entries) - expected - {"."})
    removed = sorted(expected - set(entries))
    if added or removed:
        raise AgentViolation(f"the agent added or removed files in /work ({', '.join(added + removed)[:200]})",
                             {"added": added, "removed": removed})
    for name, (member, data) in entries.items():
        if name == ".":
            if not member.isdir() or member.uid != 0 or member.mode & 0o022:
                raise AgentViolation("the agent changed /work itself", _member_evidence(name, member))
            continue
        if not member.isfile():
            raise AgentViolation(f"{name} is no longer a regular file (a link or special file)",
                                 _member_evidence(name, member))
        if name in task_files and data != task_files[name]:
            raise AgentViolation(f"the agent changed the read-only {name}",
                                 {**_member_evidence(name, member), "excerpt": data[:300].decode(errors="replace")})
        if name in LIMITS and len(data) > LIMITS[name]:
            raise AgentViolation(f"{name} is over its cap ({len(data)} > {LIMITS[name]} bytes)",
                                 _member_evidence(name, member))
    train_py = _text(entries, TRAIN_PY)
    if entries[TRAIN_PY][1] == given[TRAIN_PY]:
        raise NoChange("the CLI ended without changing train.py")
    error = syntax_error(train_py)
    if error:
        raise NoChange(f"the CLI's train.py does not parse ({error})")
    description = " ".join(_text(entries, DESCRIPTION).split())[:MAX_DESCRIPTION_CHARS]
    return Returned(train_py, _text(entries, NOTES), description)


def _entries(archive: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """name -> (member, content) of every entry under /work (directories have empty content)."""
    found: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for member in tar:
            name = member.name.removeprefix("./") or "."
            if name in found:
                raise ValueError(f"{name} appears twice")
            stream = tar.extractfile(member) if member.isfile() else None
            found[name] = (member, stream.read() if stream else b"")
    return found


def _text(entries: dict[str, tuple[tarfile.TarInfo, bytes]], name: str) -> str:
    try:
        return entries[name][1].decode("utf-8")
    except UnicodeDecodeError:
        raise NoChange(f"{name} is not UTF-8 text") from None


def _member_evidence(name: str, member: tarfile.TarInfo) -> dict:
    kinds = {tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hard link", tarfile.DIRTYPE: "directory",
             tarfile.FIFOTYPE: "fifo", tarfile.CHRTYPE: "char device", tarfile.BLKTYPE: "block device"}
    return {"path": name, "kind": kinds.get(member.type, "file"), "mode": oct(member.mode), "uid": member.uid,
            "size": member.size, "link": member.linkname or None}

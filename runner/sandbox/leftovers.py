"""What the providers without an engine (process, fake) keep, so that a later runner cleans up after a dead one.

Docker remembers a dead runner's containers and volumes by label; these providers write a small JSON
record beside each phase and hand-over they make instead, with the labels and, for a phase, its session
(the phase's own process group, made with start_new_session) and that session's start time. A record
is orphaned when its labels match and its runner (RUNNER_PID_LABEL) is gone; its session is killed only
while it is still that session, never a later one that was given the same number.
"""

import contextlib
import json
import os
import secrets
import signal
from collections.abc import Callable
from pathlib import Path

import psutil

from autoresearch.runner.sandbox.base import runner_gone


def write_record(path: Path, data: dict) -> None:
    """Write data to path atomically (a reader sees the old or the new record, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    scratch.write_text(json.dumps(data))
    os.replace(scratch, path)


def read_record(path: Path) -> dict | None:
    """The record at path; None when it is gone or not a record."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def orphaned(record: dict, labels: dict[str, str], alive: Callable[[int], bool]) -> bool:
    """The record carries labels and the runner that made it is gone."""
    own = record.get("labels")
    if not isinstance(own, dict) or any(own.get(k) != v for k, v in labels.items()):
        return False
    return runner_gone(own, alive)


def start_time(pid: int) -> float | None:
    """When process pid started (its identity beside its reusable number); None when it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def session_members(sid: int) -> list[int]:
    """The processes in session sid (a phase's, made by start_new_session): its tree, orphans included."""
    members = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError):
            if pid != os.getpid() and os.getsid(pid) == sid:
                members.append(pid)
    return members


def kill_session(sid: int) -> None:
    """SIGKILL the process group sid and every process left in session sid."""
    if sid == os.getsid(0):
        return  # never the runner's own session
    with contextlib.suppress(OSError):
        os.killpg(sid, signal.SIGKILL)
    for pid in session_members(sid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def end_session(sid: object, started: object) -> None:
    """Kill a recorded session while it is still that session.

    Its number stays reserved while any process is in it; a leader with another start time means the
    session is gone and the number was given to a new process, which is left alone."""
    if not isinstance(sid, int) or sid <= 1:
        return
    leader = start_time(sid)
    if leader is None or leader == started:
        kill_session(sid)

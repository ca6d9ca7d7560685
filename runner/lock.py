"""One runner per workspace: an exclusive `flock` on `.autoresearch/runner.lock`.

The kernel drops the lock when its process dies, however it dies (SIGKILL, OOM, a reboot), so a
crashed runner never holds a workspace. The file also says who holds it, for the error message.
"""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autoresearch.runner.errors import UserError

LOCK_FILE = "runner.lock"


def lock_path(state_dir: Path) -> Path:
    return state_dir / LOCK_FILE


def holder(state_dir: Path) -> int | None:
    """The pid of the runner holding the workspace, or None when it is free."""
    path = lock_path(state_dir)
    if not path.is_file():
        return None
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


@contextmanager
def runner_lock(state_dir: Path) -> Iterator[None]:
    """Hold the workspace's runner lock for the block, or fail at once naming the holder."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_path(state_dir), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            raise UserError(f"a runner (pid {pid}) is already running in this workspace: "
                            "watch it with `autoresearch status`, or stop it with `autoresearch stop`") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)

"""Talking to a running runner from another process: detaching it, and sending it commands.

Commands go through the store's `commands` table (see steering.py); the sender waits a few seconds
for the runner's acknowledgement so the user knows the command was taken.
"""

import subprocess
import sys
import time
from pathlib import Path

from autoresearch.runner.errors import UserError
from autoresearch.runner.lock import holder
from autoresearch.runner.record import store
from autoresearch.runner.record.views import pick_run, runner_alive
from autoresearch.runner.workspace import Workspace

ACK_WAIT_S = 5.0
EARLY_EXIT_WAIT_S = 3.0
RUNNER_LOG = "runner.log"

WHAT_HAPPENS = {
    "stop": "it stops after the current experiment",
    "pause": "it pauses after the current experiment",
    "resume": "it goes on",
    "skip": "the running experiment is killed and recorded as skipped",
}


def detach(ws: Workspace, run_argv: list[str]) -> tuple[int, Path]:
    """Start `autoresearch run run_argv` in its own session, logging to a file; (its pid, the log)."""
    pid = holder(ws.state_dir)
    if pid is not None:
        raise UserError(f"a runner (pid {pid}) is already running in this workspace: see `autoresearch status`")
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = ws.state_dir / RUNNER_LOG
    with open(log_path, "ab") as log:
        log.write(f"\n--- autoresearch run {' '.join(run_argv)} (detached) at {time.ctime()}\n".encode())
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "autoresearch.runner.cli", "run", *run_argv], cwd=ws.root,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:  # a bad config or a busy workspace fails at once: say so here, not only in the log
        code = process.wait(timeout=EARLY_EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        return process.pid, log_path
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
    raise UserError(f"the runner exited at once (code {code}): {tail[0]}")


def send(ws: Workspace, kind: str, tag: str | None = None) -> str:
    """Queue a command for the tag's (or the latest) run and wait for its acknowledgement; what to tell the user."""
    conn = store.open_store(ws.store_path)
    try:
        run = pick_run(conn, tag)
        if not runner_alive(run):
            raise UserError(f"no runner is running run {run.tag} (state: {run.state}): nothing to {kind}")
        command_id = store.add_command(conn, run.id, kind)
        deadline = time.monotonic() + ACK_WAIT_S
        while time.monotonic() < deadline:
            command = store.get_command(conn, command_id)
            if command is not None and command.acked_at is not None:
                return f"{kind}: taken by the runner (pid {run.pid}); {WHAT_HAPPENS[kind]}"
            time.sleep(0.2)
        return f"{kind}: sent; the runner has not acknowledged it yet (it reads commands about once a second)"
    finally:
        conn.close()

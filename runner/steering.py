"""The runner's side of the command channel: a thread that beats the heartbeat and obeys commands.

Viewers (the CLI, the TUI) never signal the runner; they insert a row into the store's `commands`
table. This thread reads them about once a second, acknowledges each (so the sender sees it was
taken) and sets flags the loop reads between experiments. `skip` acts at once: it sets the cancel
event that the running container's monitor watches.
"""

import threading
from pathlib import Path

from autoresearch.runner.record import store

TICK_S = 1.0


class Steering:
    """Heartbeat and commands for one run, from its own thread and its own store connection."""

    def __init__(self, store_path: Path, run_id: int):
        self.store_path, self.run_id = store_path, run_id
        self.stop_requested = threading.Event()
        self.paused = threading.Event()
        self.cancel = threading.Event()  # for the running container; the loop clears it per experiment
        self.changed = threading.Event()  # wakes the loop when it waits (paused, backing off)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="steering", daemon=True)

    def __enter__(self) -> "Steering":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def wait(self, seconds: float) -> None:
        """Sleep up to seconds, waking early when a command arrives."""
        self.changed.wait(seconds)
        self.changed.clear()

    def _loop(self) -> None:
        conn = store.open_store(self.store_path)
        try:
            while not self._done.is_set():
                store.heartbeat(conn, self.run_id)
                for command in store.pending_commands(conn, self.run_id):
                    self._obey(command.kind)
                    store.ack_command(conn, command.id)
                self._done.wait(TICK_S)
        finally:
            conn.close()

    def _obey(self, kind: str) -> None:
        if kind == "stop":
            self.stop_requested.set()
        elif kind == "pause":
            self.paused.set()
        elif kind == "resume":
            self.paused.clear()
        elif kind == "skip":
            self.cancel.set()
        self.changed.set()

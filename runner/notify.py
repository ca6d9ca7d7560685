"""Notifications through apprise: a run's news ([notify] events, runner/config.py) to its [notify] urls.

Sending never blocks or breaks the loop: `send` only queues a notice (a bounded queue; a notice that does not
fit is recorded as dropped), and a daemon thread of its own sends each notice to each service, apprise's own
socket timeouts inside our bound (SEND_TIMEOUT_S: a send past it is given up, and its thread left to apprise's
timeouts). Every send is recorded in the store's `notifications` table, with the error when it failed, and the
first failure of each service is said once in the loop's output. At the run's end `close` waits CLOSE_WAIT_S at
most for the last notices (the run's end among them).

The URLs hold secrets (tokens and passwords in the user, password, host, path or query): no URL is written
anywhere. A service is named by its key and apprise's name for it (`urls[1] (JSON)`), an error is apprise's
warning with every part of the URL (as apprise parses it) masked, a URL apprise does not understand is refused
naming its key alone, and what apprise and urllib3 log of a send stays out of the process's logs.

The loop does not import this module (its import contract keeps requests, which apprise loads, out of the engine
core): `autoresearch run` hands it the Notifier class (runner/commands/run.py), which it starts once the run is
recorded.
"""

import collections
import contextlib
import logging
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import apprise

from autoresearch.runner.errors import UserError
from autoresearch.runner.record import store

SEND_TIMEOUT_S = 20.0  # one notice to one service: apprise's throttle (5.5 s for most services) and timeouts (4 s)
QUEUE_SIZE = 100  # notices waiting to be sent; more are recorded as dropped
CLOSE_WAIT_S = 20.0  # at the run's end, for the notices still queued
MASK = "****"
MIN_SECRET_CHARS = 3  # shorter parts of a URL are not masked in an error (they would mask words, not secrets)
SEND_THREAD = "notify-send"
QUIET_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry")  # what they log of a request names its URL


@dataclass(frozen=True)
class Notice:
    """One piece of news for every service."""

    event: str  # one of runner/config.py NOTIFY_EVENTS
    title: str
    body: str
    queued_at: float


@dataclass(frozen=True)
class Service:
    """One [notify] urls entry as apprise understands it."""

    name: str  # its key and apprise's name for it: "urls[1] (JSON)"
    plugin: apprise.NotifyBase
    secrets: tuple[str, ...]  # the URL's parts, longest first: masked in its errors


def services(urls: Sequence[str]) -> list[Service]:
    """The [notify] urls as apprise services; one apprise does not understand is a UserError naming its key."""
    _quiet_logs()
    found = []
    for index, url in enumerate(urls):
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            raise UserError(f"[notify] urls[{index}] is not a URL apprise understands (a scheme it knows, such as "
                            "ntfy://, json:// or mailto://, with the parts that service needs)")
        found.append(Service(f"urls[{index}] ({plugin.service_name})", plugin, _secrets(url)))
    return found


class Notifier:
    """The loop's notices, sent through apprise from a daemon thread (see the module's docstring)."""

    def __init__(self, urls: Sequence[str], say: Callable[[str], None]):
        """Check the URLs (a UserError before the run records anything); nothing is sent before `start`."""
        self.services = services(urls)
        self.say = say
        self.queue: queue.Queue[Notice | None] = queue.Queue(QUEUE_SIZE)
        self.dropped: collections.deque[Notice] = collections.deque(maxlen=QUEUE_SIZE)
        self.failed: set[str] = set()  # services whose failure was said
        self.thread: threading.Thread | None = None

    def start(self, store_path: Path, run_id: int) -> None:
        """Start sending, recording each send in the run's notifications."""
        self.thread = threading.Thread(target=self._work, args=(store_path, run_id), name="notify", daemon=True)
        self.thread.start()

    def send(self, event: str, title: str, body: str) -> None:
        """Queue a notice; returns at once."""
        notice = Notice(event, title, body, time.time())
        try:
            self.queue.put_nowait(notice)
        except queue.Full:
            self.dropped.append(notice)

    def close(self) -> None:
        """Send what is queued, waiting CLOSE_WAIT_S at most (what is left then ends with the process)."""
        if self.thread is None:
            return
        deadline = time.monotonic() + CLOSE_WAIT_S
        with contextlib.suppress(queue.Full):
            self.queue.put(None, timeout=CLOSE_WAIT_S)
        self.thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self, store_path: Path, run_id: int) -> None:
        conn = store.open_store(store_path)
        try:
            while True:
                notice = self.queue.get()
                while self.dropped:
                    self._record(conn, run_id, self.dropped.popleft(), "dropped: the queue of notices was full")
                if notice is None:
                    return
                for service in self.services:
                    self._record(conn, run_id, notice, deliver(service, notice), service)
        finally:
            conn.close()

    def _record(self, conn: sqlite3.Connection, run_id: int, notice: Notice, error: str | None,
                service: Service | None = None) -> None:
        """Record one send (every service's, for a dropped notice); say a service's first failure."""
        names = [service.name] if service else [s.name for s in self.services]
        for name in names:
            store.add_notification(conn, run_id, event=notice.event, title=notice.title, service=name,
                                   queued_at=notice.queued_at, sent_at=time.time(), ok=error is None, error=error)
            if error is not None and name not in self.failed:
                self.failed.add(name)
                self.say(f"notify: {name} failed: {error} (later failures only go to the store's notifications)")


def deliver(service: Service, notice: Notice) -> str | None:
    """Send one notice to one service within SEND_TIMEOUT_S: None when it took it, else why not (URL masked)."""
    outcome: list[str | None] = []

    def attempt() -> None:
        with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as log:
            try:
                took = service.plugin.notify(body=notice.body, title=notice.title)
            except Exception as exc:  # a plugin's bug must not end the sending thread
                outcome.append(f"{type(exc).__name__}: {exc}")
                return
        warnings = log.getvalue().strip().splitlines()
        outcome.append(None if took else (warnings[-1] if warnings else "the service did not take it"))

    thread = threading.Thread(target=attempt, name=SEND_THREAD, daemon=True)
    thread.start()
    thread.join(SEND_TIMEOUT_S)
    if not outcome:
        return f"no answer within {SEND_TIMEOUT_S:g} s"
    return None if outcome[0] is None else masked(outcome[0], service.secrets)


def _quiet_logs() -> None:
    """Keep what apprise, and the HTTP library under it, log of our sends (URLs) out of this process's logs: apprise's
    logger stops at itself (LogCapture's handler on it still reads it), the library's drop our send threads' lines."""
    logging.getLogger("apprise").propagate = False
    for name in QUIET_LOGGERS:
        logging.getLogger(name).addFilter(_not_sending)


def _not_sending(record: logging.LogRecord) -> bool:
    return record.threadName != SEND_THREAD


def masked(text: str, secrets: Sequence[str]) -> str:
    """text with every one of secrets (longest first) replaced by MASK."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _secrets(url: str) -> tuple[str, ...]:
    """The parts of url that may be secret (all but its scheme), as written and decoded, longest first."""
    parsed = apprise.URLBase.parse_url(url, verify_host=False) or {}
    fields = [url, parsed.get("user"), parsed.get("password"), parsed.get("host"), parsed.get("fullpath"),
              *(parsed.get("qsd") or {}).values()]
    parts = {piece for value in fields if value for piece in [value, *re.split(r"[/:@?&=#]+", str(value))]}
    parts |= {unquote(part) for part in parts}
    schema = parsed.get("schema")
    return tuple(sorted((p for p in parts if len(p) >= MIN_SECRET_CHARS and p != schema), key=len, reverse=True))

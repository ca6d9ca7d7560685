"""Notifications through apprise (runner/notify.py) against a real HTTP server on 127.0.0.1, from a real loop.

The loop runs on the fake sandbox (tests/fake_workspace.py) with the Notifier that `autoresearch run` hands it;
apprise posts `json://` notices to a local http.server in a thread, which records what arrives and when. A
dead server (a closed port) and a slow one (it answers long after our bound) must neither block nor break the
loop, and are recorded as failures; a URL's secrets appear nowhere: the store, the loop's output, the errors.

The latency of a new best (from the keep being recorded, the notice's queued_at, to the server reading it):
`NOTIFY_LATENCY_SENDS=20 python3 -m pytest -q -s tests/test_notify.py -k latency` prints the median over 20.
"""

import base64
import functools
import json
import logging
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from autoresearch.runner import notify, steering
from autoresearch.runner.errors import UserError
from autoresearch.runner.loop import Loop
from autoresearch.runner.record import store
from autoresearch.runner.record.status import RunState
from tests import fake_workspace
from tests.fake_workspace import FakeWorkspace, edit

SECRET = "SECRETPASS"
TOKEN = "TOKENPATH9"


@dataclass
class Post:
    received_at: float
    path: str
    auth: str
    payload: dict


@dataclass
class Server:
    port: int
    posts: list[Post] = field(default_factory=list)

    def url(self) -> str:
        """A json:// URL with a password and a token in its path: the secrets that must not leak."""
        return f"json://user:{SECRET}@127.0.0.1:{self.port}/hook/{TOKEN}"


def serve(delay_s: float = 0.0) -> tuple[Server, ThreadingHTTPServer]:
    """A local server recording every post (after delay_s: a slow one)."""
    posts: list[Post] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received = time.time()
            time.sleep(delay_s)
            posts.append(Post(received, self.path, self.headers.get("Authorization", ""), json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return Server(httpd.server_address[1], posts), httpd


@pytest.fixture
def server() -> Iterator[Server]:
    found, httpd = serve()
    yield found
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def slow_server() -> Iterator[Server]:
    found, httpd = serve(delay_s=30.0)
    yield found
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def notifying(monkeypatch) -> None:
    """FakeWorkspace's in-process loops get the Notifier, as `autoresearch run` gives it; steering reads fast."""
    monkeypatch.setattr(fake_workspace, "Loop", functools.partial(Loop, notifier=notify.Notifier))
    monkeypatch.setattr(steering, "TICK_S", 0.1)


def with_notify(fw: FakeWorkspace, urls: list[str], **settings) -> None:
    """Add a [notify] section to the workspace's autoresearch.toml."""
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    config = fw.root / "autoresearch.toml"
    config.write_text(config.read_text() + f"\n[notify]\nurls = {json.dumps(urls)}\n{lines}")


def notifications(fw: FakeWorkspace) -> list[store.Notification]:
    return fw.read(lambda conn: store.list_notifications(conn, fw.run_row().id))


def store_dump(fw: FakeWorkspace) -> str:
    return "\n".join(fw.read(lambda conn: list(conn.iterdump())))


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and TOKEN not in text


# ---- what reaches a service


def test_a_new_best_and_the_runs_end_reach_the_server_and_the_url_is_nowhere(tmp_path, monkeypatch, notifying,
                                                                              server, caplog):
    caplog.set_level(logging.DEBUG)  # apprise's debug lines name the URL: they must not reach the process's logs
    fw = FakeWorkspace.make(tmp_path, monkeypatch)
    with_notify(fw, [server.url()])
    fw.replay(edit("better", bpb=0.9), edit("worse", bpb=1.1))
    assert fw.loop() == 0

    best, end = server.posts
    assert best.path == f"/hook/{TOKEN}" and base64.b64decode(best.auth.split()[1]).decode() == f"user:{SECRET}"
    assert best.payload["title"] == "autoresearch t: new best val_bpb 0.900000"
    assert best.payload["message"] == "#2 better: val_bpb 0.900000, 0.100000 below the best (1.000000)"
    assert end.payload["title"] == "autoresearch t: run finished"
    assert end.payload["message"] == "replay finished: 2 edits applied"

    rows = notifications(fw)
    assert [(n.event, n.service, n.ok, n.error) for n in rows] == [("best", "urls[0] (JSON)", 1, None),
                                                                    ("end", "urls[0] (JSON)", 1, None)]
    assert all(n.queued_at <= p.received_at <= n.sent_at for n, p in zip(rows, server.posts, strict=True))
    run = fw.run_row()
    assert "[notify]" in run.config_toml and '"(redacted)"' in run.config_toml
    assert_no_secret(store_dump(fw), "\n".join(fw.said), caplog.text)
    assert not [line for line in fw.said if line.startswith("notify:")]  # nothing failed: nothing said


def test_only_the_configured_events_are_sent(tmp_path, monkeypatch, notifying, server):
    fw = FakeWorkspace.make(tmp_path, monkeypatch)
    with_notify(fw, [server.url()], events=["end"])
    fw.replay(edit("better", bpb=0.9))
    assert fw.loop() == 0
    assert [p.payload["title"] for p in server.posts] == ["autoresearch t: run finished"]


# ---- a service that is down or slow never blocks or breaks the loop


def test_a_dead_and_a_slow_server_never_block_the_loop_and_are_recorded_as_failures(tmp_path, monkeypatch,
                                                                                     notifying, slow_server):
    monkeypatch.setattr(notify, "SEND_TIMEOUT_S", 0.5)
    fw = FakeWorkspace.make(tmp_path, monkeypatch)
    dead = f"json://user:{SECRET}@127.0.0.1:{closed_port()}/{TOKEN}"
    with_notify(fw, [dead, slow_server.url()])
    fw.replay(edit("better", bpb=0.9), edit("better again", bpb=0.8), edit("and again", bpb=0.7))
    began = time.monotonic()
    assert fw.loop() == 0
    assert time.monotonic() - began < 20  # the slow server answers each post after 30 s

    assert (fw.run_row().state, len(fw.experiments())) == (RunState.FINISHED, 4)
    rows = notifications(fw)
    assert [(n.event, n.service, n.ok) for n in rows] == [
        (event, service, 0) for event in ("best", "best", "best", "end")
        for service in ("urls[0] (JSON)", "urls[1] (JSON)")]
    dead_errors = {n.error for n in rows if n.service == "urls[0] (JSON)"}
    assert len(dead_errors) == 1 and "Connection error" in dead_errors.pop()
    assert {n.error for n in rows if n.service == "urls[1] (JSON)"} == {"no answer within 0.5 s"}
    said = [line for line in fw.said if line.startswith("notify:")]  # each service's first failure, once
    assert [line.split(" failed: ")[0] for line in said] == ["notify: urls[0] (JSON)", "notify: urls[1] (JSON)"]
    assert_no_secret(store_dump(fw), "\n".join(fw.said))


def test_notices_that_do_not_fit_the_queue_are_recorded_as_dropped(tmp_path, monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch)
    monkeypatch.setattr(notify, "QUEUE_SIZE", 2)
    conn = store.open_store(fw.store_path)
    run_id = store.create_run(conn, tag="t", agent="replay")
    notifier = notify.Notifier([f"json://127.0.0.1:{closed_port()}/"], print)
    for n in range(4):  # not started yet: the queue holds the first two
        notifier.send("best", f"best {n}", "")
    notifier.start(fw.store_path, run_id)
    notifier.close()
    rows = store.list_notifications(conn, run_id)
    conn.close()
    assert sorted((n.title, n.error.startswith("dropped: ")) for n in rows) == [
        ("best 0", False), ("best 1", False), ("best 2", True), ("best 3", True)]


# ---- what the loop notices


class Recorded:
    """A sender that records what the loop hands it."""

    def __init__(self, urls, say):
        self.sent: list[tuple[str, str, str]] = []
        Recorded.last = self

    def start(self, store_path, run_id) -> None:
        pass

    def send(self, event: str, title: str, body: str) -> None:
        self.sent.append((event, title, body))

    def close(self) -> None:
        pass


@pytest.fixture
def recorded(monkeypatch) -> None:
    monkeypatch.setattr(fake_workspace, "Loop", functools.partial(Loop, notifier=Recorded))


def events(kind: str) -> list[tuple[str, str]]:
    return [(title, body) for event, title, body in Recorded.last.sent if event == kind]


def test_failures_in_a_row_are_noticed_once_until_a_candidate_succeeds(tmp_path, monkeypatch, recorded):
    fw = FakeWorkspace.make(tmp_path, monkeypatch)
    with_notify(fw, ["json://127.0.0.1:9/"], failures_in_a_row=2)
    crash = {"exit_code": 1}
    fw.replay(edit("c1", **crash), edit("c2", **crash), edit("c3", **crash), edit("fine", bpb=1.1),
              edit("c4", **crash), edit("c5", **crash))
    assert fw.loop() == 0
    noticed = events("failures")
    assert [title for title, _ in noticed] == ["autoresearch t: 2 candidates in a row failed"] * 2
    assert noticed[0][1].startswith("the last, #3: crash: exit code 1")


def test_a_stall_is_noticed_once_nothing_finished_in_twice_an_experiments_expected_time(tmp_path, monkeypatch,
                                                                                        recorded):
    fw = FakeWorkspace.make(tmp_path, monkeypatch)  # a one-second budget, the baseline takes 0.2 s
    with_notify(fw, ["json://127.0.0.1:9/"])
    fw.replay(edit("slow", seconds=4, bpb=1.1))
    assert fw.loop() == 0
    [(title, body)] = events("stalled")
    assert title.startswith("autoresearch t: nothing finished for ") and body.endswith("; 1 in flight")


def test_spending_past_the_fraction_of_the_cap_is_noticed_once(tmp_path, monkeypatch, recorded):
    fw = FakeWorkspace.make(tmp_path, monkeypatch)
    with_notify(fw, ["json://127.0.0.1:9/"], spend_fraction=0.5)
    fw.replay(edit("better", bpb=0.9))
    assert fw.loop(max_usd=1.0) == 0
    assert events("spend") == []
    conn = store.open_store(fw.store_path)  # spending as a paying agent's turn records it
    store.add_agent_turn(conn, run_id=fw.run_row().id, experiment_id=None, model="m", usage={"cost_usd": 0.6},
                         latency_s=0.1, request={}, response={}, error=None)
    conn.close()
    assert fw.loop(max_usd=1.0) == 0
    assert events("spend") == [("autoresearch t: spent $0.60 of the $1.00 cap",
                                "past 50% of [caps] max_usd; the run stops at the cap")]


# ---- bad URLs


def test_a_url_apprise_does_not_understand_is_refused_naming_its_key_never_the_secret(tmp_path, monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch)
    with_notify(fw, ["json://127.0.0.1:9/", f"nosuchservice://user:{SECRET}@host/{TOKEN}"])
    for args in (["run"], ["run", "--detach"]):
        done = fw.cli(*args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.startswith("autoresearch: [notify] urls[1] is not a URL apprise understands")
        assert done.stderr.count("\n") == 1
        assert_no_secret(done.stdout, done.stderr)
    assert not fw.store_path.exists()


def test_an_error_masks_every_part_of_the_url():
    [service] = notify.services([f"json://user:{SECRET}@127.0.0.1:{closed_port()}/hook/{TOKEN}?token=QSECRET1"])
    text = f"failed at json://user:{SECRET}@127.0.0.1/hook/{TOKEN}?token=QSECRET1 ({TOKEN}, {SECRET}, QSECRET1)"
    assert_no_secret(notify.masked(text, service.secrets))
    assert "QSECRET1" not in notify.masked(text, service.secrets)
    with pytest.raises(UserError, match=r"^\[notify\] urls\[0\] is not a URL apprise understands"):
        notify.services([f"{SECRET}"])


# ---- latency


def test_the_latency_of_a_new_best_to_the_server(tmp_path, monkeypatch, notifying, server):
    sends = int(os.environ.get("NOTIFY_LATENCY_SENDS", "3"))
    fw = FakeWorkspace.make(tmp_path, monkeypatch)
    with_notify(fw, [server.url()], events=["best"])
    fw.replay(*(edit(f"better {i}", bpb=1.0 - 0.02 * i) for i in range(1, sends + 1)))
    assert fw.loop() == 0
    queued = {n.title: n.queued_at for n in notifications(fw)}
    latencies = [post.received_at - queued[post.payload["title"]] for post in server.posts]
    assert len(latencies) == sends
    median = statistics.median(latencies)
    print(f"\nnew best -> local server: median {median * 1000:.1f} ms over {sends} sends "
          f"(min {min(latencies) * 1000:.1f}, max {max(latencies) * 1000:.1f})")
    assert median < 2.0

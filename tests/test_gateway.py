"""The gateway, the agent container's only way out, attacked and used by real clients: the anthropic SDK, httpx and
http.client (for request lines no SDK writes), against the fake API on TCP and on a Unix socket."""

import http.client
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from autoresearch.runner.agents.gateway import MAX_BODY_BYTES, PLACEHOLDER_KEY, Gateway, Upstream, httpx
from autoresearch.runner.agents.gateway_usage import Tokens, UsageMeter, usage_row
from tests.agents.fake_api import FakeAPI, Reply, error_body, message_events, ok, streamed, tool_use

REAL_KEY = "sk-ant-real-0123456789-secret"
PRICES = (3.0, 15.0)
TEXT = {"type": "text", "text": "I will lower the learning rate."}
EDIT = tool_use("edit", {"old": "LR = 0.02", "new": "LR = 0.01"}, "toolu_1")
ASK = {"model": "claude-test", "max_tokens": 100, "messages": [{"role": "user", "content": "improve train.py"}]}


class Rows:
    """A log_turn that keeps every row's keyword arguments and returns row ids 1, 2, ..."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def __call__(self, **row: Any) -> int:
        self.rows.append(row)
        return len(self.rows)


@pytest.fixture
def folder() -> Iterator[Path]:
    """A short folder (a socket path has at most 107 bytes), traversable by any uid like the runner's."""
    with tempfile.TemporaryDirectory(prefix="gw-", dir="/tmp") as name:
        Path(name).chmod(0o755)
        yield Path(name)


@pytest.fixture(params=["tcp", "unix"])
def api(request: pytest.FixtureRequest, folder: Path) -> Iterator[FakeAPI]:
    """The upstream: a fake API on TCP or on a Unix socket."""
    server = FakeAPI(unix_socket=folder / "upstream.sock" if request.param == "unix" else None).start()
    yield server
    server.stop()


@pytest.fixture
def tcp_api() -> Iterator[FakeAPI]:
    server = FakeAPI().start()
    yield server
    server.stop()


def upstream_of(api: FakeAPI, protocol: str = "anthropic", key: str | None = REAL_KEY) -> Upstream:
    return Upstream(api.base_url, protocol, key, api.unix_socket)


Opener = Callable[..., Gateway]


@pytest.fixture
def gateway(folder: Path) -> Iterator[Opener]:
    """Opens started gateways on folder/gw-N.sock, each with its own Rows (gateway.rows); closes them all after."""
    opened: list[Gateway] = []

    def open_gateway(upstream: Upstream, *, dollars_left: Callable[[], float | None] = lambda: None,
                     timeout_s: float = 30.0) -> Gateway:
        rows = Rows()
        gw = Gateway(folder / f"gw-{len(opened)}.sock", upstream, log_turn=rows, prices=PRICES,
                     dollars_left=dollars_left, timeout_s=timeout_s).start()
        gw.rows = rows  # type: ignore[attr-defined]
        opened.append(gw)
        return gw

    yield open_gateway
    for gw in opened:
        gw.close()


def rows(gw: Gateway) -> list[dict[str, Any]]:
    return gw.rows.rows  # type: ignore[attr-defined]


def sdk(gw: Gateway, key: str = PLACEHOLDER_KEY, **kwargs: Any) -> anthropic.Anthropic:
    """The anthropic SDK as Claude Code is set up: base URL http://localhost, the gateway's socket, no retries."""
    http_client = httpx.Client(transport=httpx.HTTPTransport(uds=str(gw.socket_path)))
    return anthropic.Anthropic(api_key=key, base_url="http://localhost", http_client=http_client, max_retries=0,
                               **kwargs)


def raw(gw: Gateway) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(gw.socket_path)), base_url="http://localhost",
                        timeout=10)


class UnixConnection(http.client.HTTPConnection):
    """http.client on a Unix socket: it writes a request line and headers as they are given."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def wire(gw: Gateway, method: str, target: str, body: bytes | None = b"{}",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request as written; (status, headers, body) of the reply."""
    conn = UnixConnection(gw.socket_path)
    try:
        conn.request(method, target, body, {"x-api-key": PLACEHOLDER_KEY, **(headers or {})})
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()


def responses_events(text: str = "done") -> list[tuple[str | None, dict[str, Any] | str]]:
    """An OpenAI Responses stream: created, one text delta, completed with usage (120 input of which 20 cached)."""
    response = {"id": "resp_1", "object": "response", "model": "gpt-fake", "status": "in_progress", "output": [],
                "usage": None}
    usage = {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 20}, "output_tokens": 30,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 150}
    return [
        ("response.created", {"type": "response.created", "sequence_number": 0, "response": response}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1,
                                        "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": text}),
        ("response.completed", {"type": "response.completed", "sequence_number": 2,
                                "response": {**response, "status": "completed", "usage": usage}}),
    ]


def chat_events() -> list[tuple[str | None, dict[str, Any] | str]]:
    """An OpenAI Chat Completions stream with stream_options.include_usage: the last chunk carries the usage."""
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-fake", "usage": None}
    return [
        (None, {**chunk, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}),
        (None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        (None, {**chunk, "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 7,
                                                  "prompt_tokens_details": {"cached_tokens": 10}}}),
        (None, "[DONE]"),
    ]


def sse(events: list[tuple[str | None, dict[str, Any] | str]]) -> bytes:
    return b"".join((f"event: {event}\n" if event else "").encode()
                    + f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()
                    for event, data in events)


class StallingUpstream:
    """A raw upstream on a Unix socket that answers one streamed call with its first event, then stalls until
    `release` is set, then sends the rest."""

    def __init__(self, path: Path, events: list[tuple[str | None, dict[str, Any] | str]]) -> None:
        self.path = path
        self.events = events
        self.release = threading.Event()
        self.finished = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
            try:
                conn.sendall(head + sse(self.events[:1]))
                self.release.wait(10)
                conn.sendall(sse(self.events[1:]))
            except OSError:
                pass
        self.finished.set()

    def close(self) -> None:
        self.release.set()
        self._listener.close()


# --- relaying and metering -------------------------------------------------------------------------------------


def test_a_streamed_call_is_relayed_intact_and_logged(api: FakeAPI, gateway: Opener) -> None:
    api.script = [streamed(TEXT, EDIT, input_tokens=100, output_tokens=20, cache_read=30, cache_write=40)]
    gw = gateway(upstream_of(api))
    with sdk(gw).messages.stream(**ASK) as stream:
        message = stream.get_final_message()
    assert [block.model_dump(exclude_none=True) for block in message.content] == [TEXT, EDIT]
    assert message.stop_reason == "tool_use"
    seen = api.requests[0]
    assert seen.path == "/v1/messages" and seen.body == {**ASK, "stream": True}
    assert seen.headers["x-api-key"] == REAL_KEY and "authorization" not in seen.headers
    [row] = rows(gw)
    assert row["model"] == "claude-test" and row["error"] is None and row["request"] == {**ASK, "stream": True}
    assert row["usage"] == {"input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 30,
                            "cache_write_tokens": 40, "cost_usd": pytest.approx(759e-6)}
    assert row["response"]["stop_reason"] == "tool_use" and row["response"]["id"] == "msg_fake"
    assert row["response"]["status"] == 200 and row["latency_s"] > 0
    assert gw.take_turns() == [1] and gw.refusals == []


def test_a_non_streamed_call_and_a_query_string(tcp_api: FakeAPI, gateway: Opener) -> None:
    tcp_api.script = [ok(TEXT, stop_reason="end_turn", input_tokens=7, output_tokens=3), ok(TEXT)]
    gw = gateway(upstream_of(tcp_api))
    message = sdk(gw).messages.create(**ASK)
    assert message.content[0].text == TEXT["text"] and message.usage.input_tokens == 7
    with raw(gw) as client:
        reply = client.post("/v1/messages?beta=true", json=ASK, headers={"x-api-key": PLACEHOLDER_KEY})
    assert reply.status_code == 200 and reply.json()["content"] == [TEXT]
    assert tcp_api.requests[1].path == "/v1/messages?beta=true"
    first, _ = rows(gw)
    assert first["usage"]["input_tokens"] == 7 and first["usage"]["output_tokens"] == 3
    assert first["response"]["stop_reason"] == "end_turn" and not first["response"]["streamed"]


def test_an_openai_responses_stream_is_relayed_and_metered(api: FakeAPI, gateway: Opener) -> None:
    events = responses_events()
    api.script = [Reply(200, events)]
    gw = gateway(upstream_of(api, "openai"))
    body = {"model": "gpt-test", "input": "improve train.py", "stream": True}
    with raw(gw) as client, client.stream("POST", "/v1/responses", json=body,
                                          headers={"authorization": f"Bearer {PLACEHOLDER_KEY}"}) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"] == "text/event-stream"
        received = b"".join(reply.iter_bytes())
    assert received == sse(events)
    seen = api.requests[0].headers
    assert seen["authorization"] == f"Bearer {REAL_KEY}" and "x-api-key" not in seen
    [row] = rows(gw)
    assert row["model"] == "gpt-test" and row["response"]["stop_reason"] == "completed"
    assert row["usage"]["input_tokens"] == 100 and row["usage"]["cache_read_tokens"] == 20
    assert row["usage"]["output_tokens"] == 30 and row["usage"]["cost_usd"] == pytest.approx(usage_row(
        Tokens(100, 30, 20), PRICES)["cost_usd"])


def test_an_openai_chat_stream_is_metered_from_its_usage_chunk(tcp_api: FakeAPI, gateway: Opener) -> None:
    tcp_api.script = [Reply(200, chat_events())]
    gw = gateway(upstream_of(tcp_api, "openai"))
    body = {"model": "local-model", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    with raw(gw) as client:
        reply = client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {PLACEHOLDER_KEY}"})
    assert reply.content == sse(chat_events())
    [row] = rows(gw)
    usage = row["usage"]
    assert (usage["input_tokens"], usage["cache_read_tokens"], usage["output_tokens"]) == (40, 10, 7)
    assert row["response"]["stop_reason"] == "stop"


@pytest.mark.parametrize(("protocol", "body", "expected"), [
    ("anthropic", sse(message_events([TEXT], input_tokens=5, output_tokens=9, cache_read=2, cache_write=1)),
     Tokens(5, 9, 2, 1)),
    ("openai", sse(responses_events()), Tokens(100, 30, 20)),
    ("openai", sse(chat_events()).replace(b"\n", b"\r\n"), Tokens(40, 7, 10)),
])
def test_the_meter_reads_a_stream_cut_anywhere(protocol: str, body: bytes, expected: Tokens) -> None:
    for step in (1, 7, len(body)):
        meter = UsageMeter(protocol, "text/event-stream; charset=utf-8")
        for start in range(0, len(body), step):
            meter.feed(body[start:start + step])
        meter.finish()
        assert meter.tokens() == expected


# --- keys -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {}, {"x-api-key": "sk-ant-guess"}, {"authorization": "Bearer sk-ant-guess"}, {"authorization": PLACEHOLDER_KEY},
])
def test_without_the_placeholder_a_call_is_refused_401_and_never_forwarded(
        tcp_api: FakeAPI, gateway: Opener, headers: dict[str, str]) -> None:
    gw = gateway(upstream_of(tcp_api))
    with raw(gw) as client:
        reply = client.post("/v1/messages", json=ASK, headers=headers)
    assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error"
    assert tcp_api.requests == [] and rows(gw) == [] and len(gw.refusals) == 1 and "401" in gw.refusals[0]


def test_subscription_mode_passes_the_clients_own_token_unchanged(tcp_api: FakeAPI, gateway: Opener) -> None:
    tcp_api.script = [streamed(TEXT)]
    gw = gateway(upstream_of(tcp_api, key=None))
    client = sdk(gw, key="unused", default_headers={"authorization": "Bearer sk-ant-oat01-users-own",
                                                    "anthropic-beta": "oauth-2025-04-20"})
    with client.messages.stream(**ASK) as stream:
        stream.get_final_message()
    seen = tcp_api.requests[0].headers
    assert seen["authorization"] == "Bearer sk-ant-oat01-users-own" and seen["anthropic-beta"] == "oauth-2025-04-20"
    assert len(rows(gw)) == 1


def test_the_real_key_never_comes_back(tcp_api: FakeAPI, gateway: Opener) -> None:
    """Not in any reply's headers or body (even from an upstream that echoes it), nor the refusals, nor the rows."""
    echo = f"invalid x-api-key: {REAL_KEY}"
    tcp_api.script = [streamed(TEXT), Reply(401, error_body("authentication_error", echo), {"x-echo": REAL_KEY}),
                      Reply(200, [("message_start", {"type": "message_start", "message": {"id": REAL_KEY}}),
                                  ("error", {"type": "error", "error": {"type": "api_error", "message": echo}})])]
    gw = gateway(upstream_of(tcp_api))
    received: list[str] = []
    with raw(gw) as client:
        for headers in ({"x-api-key": PLACEHOLDER_KEY},) * 3 + ({"x-api-key": REAL_KEY},):
            reply = client.post("/v1/messages", json={**ASK, "stream": True}, headers=headers)
            received += [str(reply.headers), reply.text]
        for target in ("/v1/models", "/admin"):
            reply = client.get(target)
            received += [str(reply.headers), reply.text]
    assert "invalid x-api-key: [redacted]" in received[3] and "[redacted]" in received[2]
    assert len(tcp_api.requests) == 3 and len(gw.refusals) == 3
    evidence = "\n".join([*received, *gw.refusals, json.dumps(rows(gw))])
    assert REAL_KEY not in evidence and rows(gw)[1]["error"].startswith("upstream 401: authentication_error")
    assert repr(gw.upstream).count(REAL_KEY) == 0


# --- pinning ----------------------------------------------------------------------------------------------------


def test_an_absolute_uri_or_another_host_never_reaches_another_server(tcp_api: FakeAPI, gateway: Opener) -> None:
    evil = FakeAPI([ok(TEXT)] * 3).start()
    try:
        tcp_api.script = [ok(TEXT)]
        gw = gateway(upstream_of(tcp_api))
        evil_host = evil.base_url.removeprefix("http://")
        assert wire(gw, "POST", f"{evil.base_url}/v1/messages")[0] == 403
        assert wire(gw, "CONNECT", f"{evil_host}")[0] == 403
        status, _, body = wire(gw, "POST", "/v1/messages", json.dumps(ASK).encode(), {"Host": evil_host})
        assert status == 200 and json.loads(body)["content"] == [TEXT]
        assert evil.requests == [] and tcp_api.requests[0].headers["host"] == tcp_api.base_url.removeprefix("http://")
        assert len(gw.refusals) == 2
    finally:
        evil.stop()


@pytest.mark.parametrize(("method", "target", "status"), [
    ("GET", "/v1/models", 404),
    ("POST", "/admin", 404),
    ("POST", "/v1/messages/../models", 404),
    ("POST", "/v1/%6Dessages", 404),
    ("POST", "//evil.example/v1/messages", 404),
    ("POST", "/v1/responses", 404),  # the other protocol's path
    ("POST", "/v1/messages?x=<script>", 404),
    ("GET", "/v1/messages", 405),
    ("DELETE", "/v1/messages", 405),
    ("BREW", "/v1/messages", 501),
])
def test_other_paths_and_methods_are_refused(tcp_api: FakeAPI, gateway: Opener, method: str, target: str,
                                             status: int) -> None:
    gw = gateway(upstream_of(tcp_api))
    got, headers, body = wire(gw, method, target)
    assert got == status and headers["content-type"] == "application/json"
    assert json.loads(body)["type"] == "error" and json.loads(body)["error"]["message"]
    assert tcp_api.requests == [] and len(gw.refusals) == 1 and gw.refusals[0].startswith(str(status))


def test_a_body_over_the_cap_is_refused_413(tcp_api: FakeAPI, gateway: Opener) -> None:
    gw = gateway(upstream_of(tcp_api))
    conn = UnixConnection(gw.socket_path)
    conn.putrequest("POST", "/v1/messages")
    conn.putheader("x-api-key", PLACEHOLDER_KEY)
    conn.putheader("content-length", str(MAX_BODY_BYTES + 1))
    conn.endheaders()  # the body is never sent: the gateway answers on the length alone
    assert conn.getresponse().status == 413
    conn.close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(gw.socket_path))
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + PLACEHOLDER_KEY.encode()
                     + b"\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n%x\r\n" % MAX_BODY_BYTES)
        assert sock.recv(100).startswith(b"HTTP/1.1 413")
    assert tcp_api.requests == [] and len(gw.refusals) == 2


@pytest.mark.parametrize(("framing", "status"), [
    (b"content-length: -1\r\n\r\n", b"400"),
    (b"content-length: 1_0\r\n\r\n{}", b"400"),
    (b"transfer-encoding: chunked\r\n\r\n-5\r\n", b"400"),
    (b"transfer-encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n", b"400"),
    (b"transfer-encoding: gzip\r\n\r\n", b"501"),
    (b"content-length: 3\r\n\r\n[1]", b"400"),  # JSON, but not an object
])
def test_malformed_framing_is_refused(tcp_api: FakeAPI, gateway: Opener, framing: bytes, status: bytes) -> None:
    gw = gateway(upstream_of(tcp_api))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(gw.socket_path))
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + PLACEHOLDER_KEY.encode() + b"\r\n"
                     + framing)
        assert sock.recv(100).startswith(b"HTTP/1.1 " + status)
    assert tcp_api.requests == [] and len(gw.refusals) == 1


def test_a_chunked_body_is_forwarded_and_the_connection_kept_alive(tcp_api: FakeAPI, gateway: Opener) -> None:
    tcp_api.script = [ok(TEXT), ok(TEXT)]
    gw = gateway(upstream_of(tcp_api))
    conn = UnixConnection(gw.socket_path)
    sockets = []
    for _ in range(2):
        conn.request("POST", "/v1/messages", iter([json.dumps(ASK).encode()]), {"x-api-key": PLACEHOLDER_KEY},
                     encode_chunked=True)
        reply = conn.getresponse()
        assert reply.status == 200 and json.loads(reply.read())["content"] == [TEXT]
        sockets.append(conn.sock)
    conn.close()
    assert sockets[0] is not None and sockets[0] is sockets[1]  # one connection for both calls
    assert [r.body for r in tcp_api.requests] == [ASK, ASK]


# --- the dollar cap ----------------------------------------------------------------------------------------------


def test_the_dollar_cap_refuses_calls_without_forwarding_them(tcp_api: FakeAPI, gateway: Opener) -> None:
    left = [0.01]
    tcp_api.script = [streamed(TEXT)]
    gw = gateway(upstream_of(tcp_api), dollars_left=lambda: left[0])
    client = sdk(gw)
    with client.messages.stream(**ASK) as stream:
        stream.get_final_message()
    assert not gw.capped
    left[0] = 0.0
    with pytest.raises(anthropic.BadRequestError, match="dollar cap"):
        client.messages.create(**ASK)
    assert gw.capped and len(tcp_api.requests) == 1 and len(rows(gw)) == 1 and len(gw.refusals) == 1


# --- upstream trouble --------------------------------------------------------------------------------------------


def test_an_upstream_error_is_relayed_and_logged(tcp_api: FakeAPI, gateway: Opener) -> None:
    tcp_api.script = [Reply(500, error_body("api_error", "boom"))]
    gw = gateway(upstream_of(tcp_api))
    with pytest.raises(anthropic.InternalServerError, match="boom"):
        sdk(gw).messages.create(**ASK)
    [row] = rows(gw)
    assert row["error"] == "upstream 500: api_error: boom" and row["response"]["status"] == 500


def test_an_unreachable_upstream_is_a_502_and_a_row(folder: Path, gateway: Opener) -> None:
    gw = gateway(Upstream("http://localhost", "anthropic", REAL_KEY, folder / "nobody.sock"))
    with pytest.raises(anthropic.APIStatusError, match="unreachable") as caught:
        sdk(gw).messages.create(**ASK)
    assert caught.value.status_code == 502
    [row] = rows(gw)
    assert "unreachable" in row["error"] and row["response"] == {"status": 502} and row["usage"]["cost_usd"] == 0


def test_a_gateway_that_closes_mid_stream_fails_the_call_at_once(folder: Path, gateway: Opener) -> None:
    upstream = StallingUpstream(folder / "stall.sock", message_events([TEXT], input_tokens=11))
    gw = gateway(Upstream("http://localhost", "anthropic", REAL_KEY, upstream.path))
    try:
        with raw(gw) as client, client.stream("POST", "/v1/messages", json={**ASK, "stream": True},
                                              headers={"x-api-key": PLACEHOLDER_KEY}) as reply:
            lines = reply.iter_lines()
            assert next(lines) == "event: message_start"  # relayed as it arrived, before the stall
            started = time.monotonic()
            gw.close()
            with pytest.raises(httpx.HTTPError):
                list(lines)
            assert time.monotonic() - started < 1.5
        [row] = rows(gw)
        assert row["error"] == "the gateway closed mid-reply" and row["usage"]["input_tokens"] == 11
        assert not gw.socket_path.exists()
    finally:
        upstream.close()


def test_a_gateway_that_closes_before_the_upstream_answers_fails_the_call_at_once(
        tcp_api: FakeAPI, gateway: Opener) -> None:
    release = threading.Event()
    tcp_api.script = [lambda _: (release.wait(10), ok(TEXT))[1]]
    gw = gateway(upstream_of(tcp_api))
    failed: list[float] = []

    def call() -> None:
        with raw(gw) as client, pytest.raises(httpx.HTTPError):
            client.post("/v1/messages", json=ASK, headers={"x-api-key": PLACEHOLDER_KEY})
        failed.append(time.monotonic())

    caller = threading.Thread(target=call)
    caller.start()
    while not tcp_api.requests:
        time.sleep(0.01)
    started = time.monotonic()
    gw.close()
    caller.join(5)
    release.set()
    assert failed and failed[0] - started < 1.0


def test_a_client_that_leaves_mid_stream_still_leaves_a_row(folder: Path, gateway: Opener) -> None:
    upstream = StallingUpstream(folder / "stall.sock", message_events([TEXT] * 50, input_tokens=11))
    gw = gateway(Upstream("http://localhost", "anthropic", REAL_KEY, upstream.path))
    try:
        with raw(gw) as client, client.stream("POST", "/v1/messages", json={**ASK, "stream": True},
                                              headers={"x-api-key": PLACEHOLDER_KEY}) as reply:
            assert next(reply.iter_lines()) == "event: message_start"
        upstream.release.set()
        deadline = time.monotonic() + 5
        while not rows(gw) and time.monotonic() < deadline:
            time.sleep(0.01)
        [row] = rows(gw)
        assert row["error"] == "the client disconnected mid-reply" and row["usage"]["input_tokens"] == 11
    finally:
        upstream.close()


# --- the turns, the socket, the upstream ------------------------------------------------------------------------


def test_take_turns_returns_the_rows_since_the_last_take(tcp_api: FakeAPI, gateway: Opener) -> None:
    tcp_api.script = [ok(TEXT)] * 3
    gw = gateway(upstream_of(tcp_api))
    client = sdk(gw)
    client.messages.create(**ASK)
    client.messages.create(**ASK)
    assert gw.take_turns() == [1, 2]
    client.messages.create(**ASK)
    assert gw.take_turns() == [3] and gw.take_turns() == []


def test_the_socket_lets_other_uids_connect_and_close_removes_it(tcp_api: FakeAPI, gateway: Opener) -> None:
    gw = gateway(upstream_of(tcp_api))
    assert gw.socket_path.stat().st_mode & 0o777 == 0o666
    if os.geteuid() == 0:
        assert _connects_as_nobody(gw.socket_path)
        gw.socket_path.chmod(0o600)  # the control: without the mode, another uid cannot
        assert not _connects_as_nobody(gw.socket_path)
    gw.close()
    gw.close()
    assert not gw.socket_path.exists()


def _connects_as_nobody(path: Path) -> bool:
    """Whether uid 65534 can connect to the socket (forks; needs root)."""
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, connect, report by exit status
        try:
            os.setgid(65534)
            os.setuid(65534)
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(str(path))
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_an_upstream_is_checked_and_keeps_its_key_out_of_its_repr() -> None:
    assert Upstream("https://api.openai.com/v1/", "openai", "k").base_url == "https://api.openai.com"
    assert Upstream("http://host:8000/prefix", "openai", None).base_url == "http://host:8000/prefix"
    for base_url, protocol in (("ftp://host", "openai"), ("api.anthropic.com", "anthropic"),
                               ("https://api.anthropic.com", "gemini")):
        with pytest.raises(ValueError):
            Upstream(base_url, protocol, None)
    with pytest.raises(ValueError, match="empty key"):
        Upstream("https://api.anthropic.com", "anthropic", "")
    assert REAL_KEY not in repr(Upstream("https://api.anthropic.com", "anthropic", REAL_KEY))

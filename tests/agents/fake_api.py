"""A fake model API: a local HTTP server, on TCP or on a Unix socket, that plays a script of replies and
records requests; with the Anthropic Messages API's bodies (the OpenAI ones are in fake_openai.py).

Tests point the real SDKs (and, in `make clis`, the real CLIs) at it, so retries, timeouts, error mapping,
streaming and the wire format are theirs. A reply is a JSON body, a raw string (a malformed reply), or a
list of server-sent events (a streamed reply).
"""

import json
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP reply: a dict body is sent as JSON, a str body as it is (for malformed replies), a list
    of (event, data) pairs as a text/event-stream (event None: a data-only event, as OpenAI streams)."""

    status: int
    body: dict[str, Any] | str | list[tuple[str | None, dict[str, Any] | str]]
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


Step = Reply | Callable[[Recorded], Reply]


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class FakeAPI:
    """Serves every request from a script, one step per request, and records every request; on 127.0.0.1, or
    on the Unix socket unix_socket. `exhausted` answers requests past the end of the script."""

    def __init__(self, script: list[Step] | None = None, *, unix_socket: Path | None = None,
                 exhausted: Reply | None = None) -> None:
        self.script: list[Step] = list(script or [])
        self.requests: list[Recorded] = []
        self.unix_socket = unix_socket
        self.exhausted = exhausted or Reply(400, error_body("invalid_request_error", "fake: the script is exhausted"))
        self._lock = threading.Lock()
        if unix_socket is None:
            self._server: socketserver.BaseServer = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
            self._server.daemon_threads = True  # type: ignore[attr-defined]
        else:
            self._server = _UnixHTTPServer(str(unix_socket), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self) -> str:
        """The URL to give a client: on a Unix socket the host is only a name (the client connects to the socket)."""
        if self.unix_socket is not None:
            return "http://localhost"
        host, port = self._server.server_address[:2]  # type: ignore[misc]
        return f"http://{host}:{port}"

    def start(self) -> "FakeAPI":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            if not self.script:
                return self.exhausted
            step = self.script.pop(0)
        return step(recorded) if callable(step) else step

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                recorded = Recorded(self.path, {k.lower(): v for k, v in self.headers.items()},
                                    json.loads(raw) if raw else {})
                reply = api._next(recorded)
                time.sleep(reply.delay_s)
                try:
                    if isinstance(reply.body, list):
                        self._stream(reply)
                    else:
                        self._send(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def _send(self, reply: Reply) -> None:
                payload = (json.dumps(reply.body) if isinstance(reply.body, dict) else str(reply.body)).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, reply: Reply) -> None:
                """The events as a text/event-stream, each flushed as it is written; the connection then closes."""
                self.send_response(reply.status)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                for event, data in reply.body:  # type: ignore[union-attr]
                    text = data if isinstance(data, str) else json.dumps(data)
                    self.wfile.write((f"event: {event}\n" if event else "").encode() + f"data: {text}\n\n".encode())
                    self.wfile.flush()
                self.close_connection = True

            def do_GET(self) -> None:  # the SDK's models.retrieve, which the agent's preflight calls
                self.do_POST()

            def address_string(self) -> str:  # a Unix socket's peer has no address
                return "fake-client"

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def error_body(kind: str, message: str) -> dict[str, Any]:
    """The API's error envelope."""
    return {"type": "error", "error": {"type": kind, "message": message}}


def message_body(
    content: list[dict[str, Any]],
    *,
    stop_reason: str = "tool_use",
    input_tokens: int = 100,
    output_tokens: int = 20,
    cache_read: int = 0,
    cache_write: int = 0,
) -> dict[str, Any]:
    """A successful Messages API reply with the given content blocks and usage."""
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": cache_write,
        },
    }


def tool_use(name: str, tool_input: dict[str, Any], use_id: str) -> dict[str, Any]:
    """A tool_use content block."""
    return {"type": "tool_use", "id": use_id, "name": name, "input": tool_input}


def ok(*blocks: dict[str, Any], **fields: Any) -> Reply:
    """A 200 reply carrying these content blocks; fields go to message_body (stop_reason, token counts)."""
    return Reply(200, message_body(list(blocks), **fields))


def message_events(content: list[dict[str, Any]], **fields: Any) -> list[tuple[str | None, dict[str, Any] | str]]:
    """The Messages API's stream of the reply message_body(content, **fields) would give: message_start (usage with
    the input and cache tokens, one output token), per block content_block_start, two deltas (text_delta or
    input_json_delta) and content_block_stop, then message_delta (stop reason, cumulative output tokens) and
    message_stop; a ping after message_start, as the API sends."""
    body = message_body(content, **fields)
    events: list[tuple[str | None, dict[str, Any] | str]] = [
        ("message_start", {"type": "message_start", "message": {
            **body, "content": [], "stop_reason": None, "usage": {**body["usage"], "output_tokens": 1}}}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(content):
        if block["type"] == "tool_use":
            start = {**block, "input": {}}
            text, delta_type, key = json.dumps(block["input"]), "input_json_delta", "partial_json"
        else:
            start, text, delta_type, key = {**block, "text": ""}, block["text"], "text_delta", "text"
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        half = len(text) // 2
        for piece in (text[:half], text[half:]):
            delta = {"type": "content_block_delta", "index": index, "delta": {"type": delta_type, key: piece}}
            events.append(("content_block_delta", delta))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": body["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": body["usage"]["output_tokens"]},
    }))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def streamed(*blocks: dict[str, Any], **fields: Any) -> Reply:
    """A 200 streamed reply carrying these content blocks; fields go to message_body (stop_reason, token counts)."""
    return Reply(200, message_events(list(blocks), **fields))

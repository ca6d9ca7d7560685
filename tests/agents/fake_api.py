"""A fake Anthropic Messages API: a local HTTP server that plays a script of replies and records requests.

Tests point the real `anthropic` SDK at it through `base_url`, so retries, timeouts, error mapping and
the wire format are the SDK's own.
"""

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP reply: a dict body is sent as JSON, a str body as it is (for malformed replies)."""

    status: int
    body: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


Step = Reply | Callable[[Recorded], Reply]


class FakeMessagesAPI:
    """Serves POST /v1/messages from a script, one step per request; records every request."""

    def __init__(self, script: list[Step] | None = None) -> None:
        self.script: list[Step] = list(script or [])
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeMessagesAPI":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            if not self.script:
                return Reply(400, error_body("invalid_request_error", "fake API: the script is exhausted"))
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
                payload = (json.dumps(reply.body) if isinstance(reply.body, dict) else reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def do_GET(self) -> None:  # the SDK's models.retrieve, which the agent's preflight calls
                self.do_POST()

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

"""The gateway: a coding-agent container's only way out, a runner-owned HTTP/1.1 server on a Unix socket.

The agent container has no network; its CLI reaches the model API through this socket alone (Claude Code with
ANTHROPIC_UNIX_SOCKET, Codex through a TCP relay inside the container). The gateway:

- pins the upstream: every request goes to upstream.base_url + its own path and query; the Host header, an
  absolute-URI request line, CONNECT and any method or path outside the protocol's few are refused, never followed;
- swaps keys: with upstream.key set, a request must present the placeholder (x-api-key or Authorization: Bearer);
  every client credential header is dropped and the real key set, which never enters the container and never
  comes back (it is redacted from what the upstream returns, from the refusals and from the logged turns).
  Subscription mode (key None): the client's own credentials (the user's CLAUDE_CODE_OAUTH_TOKEN, in the container
  by the user's choice) pass through unchanged, and the gateway only pins, meters and caps;
- meters: the reply is relayed chunk by chunk as it arrives while its usage is read on the side
  (gateway_usage.py); each forwarded call is one log_turn row (model, tokens, cost, latency, the request body,
  a small summary of the reply, the error);
- caps: once dollars_left() (the store's, so every agent's spending counts) is <= 0, calls are refused with a
  400 invalid_request_error, which the CLIs surface without retrying, and `capped` is set.

Refusals answer a JSON error in the protocol's envelope, close the connection and add one line to `refusals`;
nothing is printed.
"""

import json
import re
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

import httpx2 as httpx  # the HTTP client the anthropic and openai SDKs use (httpx's successor, the same API)

from autoresearch.runner.agents.base import TurnLogger
from autoresearch.runner.agents.gateway_usage import Tokens, UsageMeter, usage_row

PLACEHOLDER_KEY = "sk-autoresearch-placeholder"  # the only key a container ever holds
MAX_BODY_BYTES = 32 * 1024 * 1024  # the APIs' own request limit
CLOSE_GRACE_S = 2.0  # close() waits this long for in-flight calls to log their rows
LINGER_S = 2.0  # after a refusal, how long the rest of the client's request is read and dropped
REDACTED = "[redacted]"
PATHS = {
    "anthropic": frozenset({"/v1/messages", "/v1/messages/count_tokens"}),
    "openai": frozenset({"/v1/responses", "/v1/chat/completions"}),
}
_QUERY = re.compile(r"[A-Za-z0-9_.~=&%-]*")  # Claude Code's ?beta=true
_DECIMAL = re.compile(r"[0-9]{1,12}")  # int() alone would take "+1", "1_0" and "-1"
_HEX = re.compile(rb"[0-9A-Fa-f]{1,12}")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                         "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"})
_NOT_FORWARDED = _HOP_BY_HOP | {"host", "content-length", "accept-encoding", "expect"}
_CREDENTIALS = frozenset({"authorization", "x-api-key", "cookie", "openai-organization", "openai-project"})
_NOT_RELAYED = _HOP_BY_HOP | {"content-length", "content-encoding", "server", "date"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}


@dataclass(frozen=True)
class Upstream:
    """The one API a gateway talks to. base_url is the origin, with any path prefix but without the API version:
    the gateway forwards the request's /v1/... path as is (a trailing /v1, as the OpenAI SDK's base URLs have, is
    dropped). protocol: "anthropic" (key sent as x-api-key) or "openai" (Authorization: Bearer) decides the paths
    allowed and how usage is read. key None: subscription mode. unix_socket: reach the upstream over this socket
    (tests, local servers); base_url's host is then only a name."""

    base_url: str
    protocol: str
    key: str | None = field(repr=False)
    unix_socket: Path | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PATHS:
            raise ValueError(f"unknown upstream protocol {self.protocol!r}: one of {', '.join(PATHS)}")
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
            raise ValueError(f"the upstream's base URL must be http(s)://host[/prefix], not {self.base_url!r}")
        if self.key == "":
            raise ValueError("an empty key: None is subscription mode")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/").removesuffix("/v1"))


class Gateway:
    """A started gateway serves each connection on its own thread; see the module's docstring."""

    def __init__(self, socket_path: Path, upstream: Upstream, *, log_turn: TurnLogger, prices: tuple[float, float],
                 dollars_left: Callable[[], float | None], timeout_s: float = 600.0,
                 placeholder: str = PLACEHOLDER_KEY) -> None:
        self.socket_path = socket_path
        self.upstream = upstream
        self.prices = prices
        self.placeholder = placeholder
        self.capped = False
        self.refusals: list[str] = []
        self._log_turn = log_turn
        self._dollars_left = dollars_left
        self._turns: list[int] = []
        self._failures: list[tuple[int, str]] = []  # (status, error) of upstream replies >= 400, since the last take
        self._lock = threading.Lock()  # guards the state below and serializes log_turn
        self._idle = threading.Condition(self._lock)
        self._connections: set[socket.socket] = set()
        self._streams: set[httpx.Response] = set()
        self._calls = 0
        self._closed = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        timeout = httpx.Timeout(timeout_s)
        if upstream.unix_socket is None:
            self._client = httpx.Client(timeout=timeout)  # honours HTTPS_PROXY and SSL_CERT_FILE
        else:
            self._client = httpx.Client(timeout=timeout, transport=httpx.HTTPTransport(uds=str(upstream.unix_socket)))
        self._redact_bytes = upstream.key.encode() if upstream.key else b""

    def start(self) -> "Gateway":
        """Listen on socket_path (a stale socket there is replaced), mode 0o666 so the container's uid connects."""
        if self.socket_path.is_socket():
            self.socket_path.unlink()
        self._server = _Server(str(self.socket_path), _Handler)
        self._server.gateway = self
        self.socket_path.chmod(0o666)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"gateway {self.socket_path}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop listening, end every connection and in-flight call (their clients see the connection close), wait
        up to CLOSE_GRACE_S for their rows, remove the socket file. Idempotent. A call whose upstream has not
        answered yet ends at the upstream's timeout, and logs its row then."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
            self._server.server_close()
        with self._lock:
            sockets = [*self._connections, *filter(None, map(_socket_of, self._streams))]
        for sock in sockets:
            _shut(sock)
        with self._idle:
            self._idle.wait_for(lambda: self._calls == 0, timeout=CLOSE_GRACE_S)
        self._client.close()
        if self._server is not None:
            self.socket_path.unlink(missing_ok=True)

    def take_turns(self) -> list[int]:
        """The agent_turns row ids logged since the last take."""
        with self._lock:
            turns, self._turns = self._turns, []
        return turns

    def take_failures(self) -> list[tuple[int, str]]:
        """The (status, error) of the upstream's failed replies since the last take (502: unreachable)."""
        with self._lock:
            failures, self._failures = self._failures, []
        return failures

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def redact(self, text: str) -> str:
        """text without the real key."""
        return text.replace(self.upstream.key, REDACTED) if self.upstream.key else text

    def _refused(self, line: str) -> None:
        with self._lock:
            self.refusals.append(self.redact(line))

    def _log(self, *, request: dict[str, Any], meter: UsageMeter | None, status: int, error: str | None,
             latency_s: float) -> None:
        """One forwarded call's row."""
        model = request.get("model")
        if not isinstance(model, str):
            model = meter.model if meter is not None and meter.model else ""
        usage = usage_row(meter.tokens() if meter is not None else Tokens(), self.prices)
        summary = meter.summary(status) if meter is not None else {"status": status}
        with self._lock:
            row = self._log_turn(model=model, usage=usage, latency_s=latency_s, request=request,
                                 response=json.loads(self.redact(json.dumps(summary))),
                                 error=self.redact(error) if error else None)
            self._turns.append(row)
            if status >= 400:
                self._failures.append((status, self.redact(error or "")))

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        """Know every client connection, to end it on close()."""
        with self._lock:
            if not add:
                self._connections.discard(sock)
            elif self._closed:
                _shut(sock)
            else:
                self._connections.add(sock)

    @contextmanager
    def _in_flight(self) -> Iterator[None]:
        """A forwarded call: close() waits for its row."""
        with self._lock:
            self._calls += 1
        try:
            yield
        finally:
            with self._idle:
                self._calls -= 1
                self._idle.notify_all()

    @contextmanager
    def _streaming(self, response: httpx.Response) -> Iterator[None]:
        """An upstream reply being relayed: close() shuts its socket, so a stalled read ends at once."""
        with self._lock:
            self._streams.add(response)
            if self._closed:
                _shut(_socket_of(response))
        try:
            yield
        finally:
            with self._lock:
                self._streams.discard(response)
            response.close()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    gateway: Gateway

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A bug in a handler: one line, no traceback on stderr."""
        self.gateway._refused(f"500 gateway error: {sys.exc_info()[1]!r:.300}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.gateway._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.gateway._track(self.connection, add=False)
        with suppress(OSError):
            super().finish()

    def handle(self) -> None:
        with suppress(OSError):  # the client went away, or close() ended the connection
            super().handle()

    def do_POST(self) -> None:
        self._serve()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_TRACE = do_CONNECT = do_POST

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line or header, an unknown method), as ours."""
        self._refuse(code, message or self.responses.get(code, ("error",))[0])

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: refusals are in gateway.refusals, calls in the store."""

    def address_string(self) -> str:  # a Unix socket's peer has no address
        return "agent"

    def _serve(self) -> None:
        """Check the request, then forward it to the pinned upstream."""
        gateway = self.server.gateway
        upstream = gateway.upstream
        path, _, query = self.path.partition("?")
        if not self.path.startswith("/"):
            return self._refuse(403, "the gateway forwards to its pinned upstream only: origin-form targets only")
        if path not in PATHS[upstream.protocol] or not _QUERY.fullmatch(query):
            return self._refuse(404, f"not allowed through the gateway: {', '.join(sorted(PATHS[upstream.protocol]))}")
        if self.command != "POST":
            return self._refuse(405, f"{self.command} is not allowed: POST only")
        if upstream.key is not None and not self._presents_placeholder():
            return self._refuse(401, "the request does not present the gateway's placeholder key")
        body = self._read_body()
        if body is None:
            return None
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return self._refuse(400, "the body is not a JSON object")
        left = gateway._dollars_left()
        if left is not None and left <= 0:
            gateway.capped = True
            return self._refuse(400, "the run's dollar cap is reached: the gateway refuses further model calls")
        return self._forward(path, query, body, request)

    def _presents_placeholder(self) -> bool:
        placeholder = self.server.gateway.placeholder
        scheme, _, token = (self.headers.get("authorization") or "").partition(" ")
        return self.headers.get("x-api-key") == placeholder or (scheme.lower() == "bearer" and token == placeholder)

    def _read_body(self) -> bytes | None:
        """The request body, by content-length or chunked, at most MAX_BODY_BYTES; None: refused."""
        encoding = (self.headers.get("transfer-encoding") or "").strip().lower()
        if encoding == "chunked":
            return self._read_chunked()
        if encoding:
            return self._refuse(501, f"transfer-encoding {encoding!r} is not supported")
        declared = (self.headers.get("content-length") or "0").strip()
        if not _DECIMAL.fullmatch(declared):
            return self._refuse(400, "a malformed content-length")
        length = int(declared)
        if length > MAX_BODY_BYTES:
            return self._refuse(413, f"the body is over {MAX_BODY_BYTES} bytes")
        body = self.rfile.read(length)
        if len(body) < length:  # the client went away mid-body
            self.close_connection = True
            return None
        return body

    def _read_chunked(self) -> bytes | None:
        body = bytearray()
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            if not _HEX.fullmatch(line):
                return self._refuse(400, "a malformed chunked body")
            size = int(line, 16)
            if len(body) + size > MAX_BODY_BYTES:
                return self._refuse(413, f"the body is over {MAX_BODY_BYTES} bytes")
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers, dropped
                    pass
                return bytes(body)
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.readline(3).strip():
                return self._refuse(400, "a malformed chunked body")
            body += chunk

    def _forward(self, path: str, query: str, body: bytes, request: dict[str, Any]) -> None:
        """Send the call upstream and relay the reply; its row is logged before the reply's last bytes go out, so a
        client that has its whole reply finds the row in the store (and in take_turns)."""
        gateway = self.server.gateway
        url = gateway.upstream.base_url + path + (f"?{query}" if query else "")
        started = time.monotonic()
        logged = False

        def log(status: int, meter: UsageMeter | None, error: str | None) -> None:
            nonlocal logged
            if not logged:
                logged = True
                gateway._log(request=request, meter=meter, status=status, error=error,
                             latency_s=time.monotonic() - started)

        with gateway._in_flight():
            try:
                self._relay(url, body, log)
            finally:
                log(502, None, "the gateway failed during the call")  # only where _relay itself failed

    def _relay(self, url: str, body: bytes, log: Callable[[int, UsageMeter | None, str | None], None]) -> None:
        """The upstream's reply to the client as it arrives, read on the side; log(status, meter, error) once."""
        gateway = self.server.gateway
        client = gateway._client
        try:
            response = client.send(client.build_request("POST", url, headers=self._upstream_headers(), content=body),
                                   stream=True)
        except httpx.HTTPError as exc:
            status = 504 if isinstance(exc, httpx.TimeoutException) else 502
            reason = "the gateway closed" if gateway.closed else f"the upstream is unreachable: {_one_line(exc)}"
            log(status, None, reason)
            with suppress(OSError):
                self._reply_json(status, reason)
            return
        meter = UsageMeter(gateway.upstream.protocol, response.headers.get("content-type", ""))

        def outcome(broke: str | None) -> str | None:
            meter.finish()
            if gateway.closed:
                broke = "the gateway closed mid-reply"
            reported = meter.error and f"upstream error: {meter.error}"
            if response.status_code >= 400:
                reported = f"upstream {response.status_code}: {meter.error or response.reason_phrase}"
            return "; ".join(filter(None, (reported, broke))) or None

        with gateway._streaming(response):
            redactor = _Redactor(gateway._redact_bytes)
            try:
                self.send_response(response.status_code)
                for name, value in response.headers.multi_items():
                    if name.lower() not in _NOT_RELAYED:
                        self.send_header(name, gateway.redact(value))
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for chunk in response.iter_bytes():
                    meter.feed(chunk)
                    self._write_chunk(redactor.feed(chunk))
                log(response.status_code, meter, outcome(None))
                if gateway.closed:  # the reply is cut: never end it as complete
                    self.close_connection = True
                    return
                self._write_chunk(redactor.flush())
                self.wfile.write(b"0\r\n\r\n")
            except httpx.HTTPError as exc:
                self.close_connection = True
                log(response.status_code, meter, outcome(f"the upstream's reply broke off: {_one_line(exc)}"))
            except OSError:
                self.close_connection = True
                log(response.status_code, meter, outcome("the client disconnected mid-reply"))

    def _upstream_headers(self) -> list[tuple[str, str]]:
        """The client's headers minus hop-by-hop ones, and with a key: minus its credentials, plus the real key."""
        upstream = self.server.gateway.upstream
        dropped = _NOT_FORWARDED | (_CREDENTIALS if upstream.key is not None else frozenset())
        headers = [(name, value) for name, value in self.headers.items() if name.lower() not in dropped]
        headers.append(("accept-encoding", "identity"))  # the reply is read on the side: no compression
        if upstream.key is not None:
            credential = ("x-api-key", upstream.key) if upstream.protocol == "anthropic" else \
                ("authorization", f"Bearer {upstream.key}")
            headers.append(credential)
        return headers

    def _write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _refuse(self, status: int, reason: str) -> None:
        """Answer a refusal, close the connection, and record one line."""
        target = getattr(self, "path", "")
        self.server.gateway._refused(f"{status} {self.command or '-'} {target!r:.200}: {reason}")
        self._reply_json(status, reason)

    def _reply_json(self, status: int, message: str) -> None:
        """An error of the gateway's own, in the protocol's envelope; the connection then closes."""
        message = self.server.gateway.redact(message)
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        if self.server.gateway.upstream.protocol == "anthropic":
            body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        payload = json.dumps(body).encode()
        self.close_connection = True
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self._linger()

    def _linger(self) -> None:
        """Before closing, read and drop what the client still sends (a body never read), briefly and bounded, so that
        it reads the answer rather than a reset connection."""
        deadline, left = time.monotonic() + LINGER_S, MAX_BODY_BYTES
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            while left > 0 and (timeout := deadline - time.monotonic()) > 0:
                self.connection.settimeout(timeout)
                data = self.connection.recv(65536)
                if not data:
                    break
                left -= len(data)


class _Redactor:
    """Replaces the key in a byte stream cut anywhere: holds back only a tail that could begin the key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._key:
            return chunk
        data = (self._held + chunk).replace(self._key, REDACTED.encode())
        keep = next((n for n in range(min(len(self._key) - 1, len(data)), 0, -1) if self._key.startswith(data[-n:])), 0)
        self._held = data[len(data) - keep:]
        return data[:len(data) - keep]

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held


def _socket_of(response: httpx.Response) -> socket.socket | None:
    """The socket an upstream reply arrives on."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    return cast(socket.socket, sock) if isinstance(sock, socket.socket) else None


def _shut(sock: socket.socket | None) -> None:
    """End a connection now, both ways: a thread blocked reading or writing it returns."""
    if sock is not None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


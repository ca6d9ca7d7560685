"""What the gateway reads on the side of a reply it relays: the usage, model, id, stop reason and error of one model
API call, from a JSON body or a server-sent event stream, fed in chunks as they arrive.

Understood: Anthropic Messages (message_start's usage, then message_delta's cumulative usage), OpenAI Responses
(the usage of response.completed, .incomplete or .failed) and OpenAI Chat Completions (the chunk carrying usage, with
stream_options.include_usage). Tokens are stored in the store's terms: input_tokens is the uncached input.
"""

import json
from dataclasses import dataclass
from typing import Any

from autoresearch.runner.agents import pricing
from autoresearch.runner.agents.pricing import Prices

MAX_READ = 16 * 1024 * 1024  # a JSON body or one event longer than this is relayed but not read


@dataclass(frozen=True)
class Tokens:
    """One call's tokens: input is the uncached input."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0


def usage_row(tokens: Tokens, prices: Prices) -> dict[str, Any]:
    """The usage argument of log_turn, priced by pricing.py's rule."""
    return pricing.usage_row(prices, input_tokens=tokens.input, output_tokens=tokens.output,
                             cache_read_tokens=tokens.cache_read, cache_write_tokens=tokens.cache_write)


class UsageMeter:
    """Reads one reply as it is relayed: feed() every chunk, then finish(); protocol is "anthropic" or "openai"."""

    def __init__(self, protocol: str, content_type: str) -> None:
        self.protocol = protocol
        self.streamed = content_type.split(";")[0].strip().lower() == "text/event-stream"
        self.id: str | None = None
        self.model: str | None = None
        self.stop_reason: str | None = None
        self.usage: dict[str, Any] = {}  # the upstream's usage object, merged over the stream
        self.error: str | None = None  # an error the reply itself carries (an error body or event)
        self._buffer = bytearray()
        self._event: str | None = None
        self._data: list[bytes] = []
        self._overflow = False

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the body."""
        if self._overflow:
            return
        self._buffer += chunk
        if not self.streamed:
            self._overflow = len(self._buffer) > MAX_READ
            return
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        for line in lines:
            self._line(bytes(line.rstrip(b"\r")))
        self._overflow = len(self._buffer) + sum(map(len, self._data)) > MAX_READ

    def finish(self) -> None:
        """The body ended: read a JSON body, or the last event of a stream that did not end with a blank line."""
        if self._overflow:
            return
        if self.streamed:
            self._line(bytes(self._buffer.rstrip(b"\r")))
            self._line(b"")
        else:
            self._read(bytes(self._buffer), None)
        self._buffer.clear()

    def tokens(self) -> Tokens:
        """The usage seen so far in the store's terms (zeros where the reply said nothing)."""
        usage = self.usage
        if "prompt_tokens" in usage:  # Chat Completions: prompt_tokens includes the cached ones
            cached = _count(_field(usage, "prompt_tokens_details", "cached_tokens"))
            tokens_in, tokens_out = _count(usage["prompt_tokens"]), _count(usage.get("completion_tokens"))
            return Tokens(max(tokens_in - cached, 0), tokens_out, cached)
        if self.protocol == "openai":  # Responses: input_tokens includes the cached ones
            cached = _count(_field(usage, "input_tokens_details", "cached_tokens"))
            tokens_in, tokens_out = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
            return Tokens(max(tokens_in - cached, 0), tokens_out, cached)
        return Tokens(  # Anthropic: input_tokens is already the uncached input
            _count(usage.get("input_tokens")),
            _count(usage.get("output_tokens")),
            _count(usage.get("cache_read_input_tokens")),
            _count(usage.get("cache_creation_input_tokens")),
        )

    def summary(self, status: int) -> dict[str, Any]:
        """A small record of the reply for the store (never the whole stream)."""
        return {"status": status, "id": self.id, "model": self.model, "stop_reason": self.stop_reason,
                "usage": self.usage, "streamed": self.streamed}

    def _line(self, line: bytes) -> None:
        """One line of the event stream; a blank line dispatches the event gathered so far."""
        if not line:
            if self._data:
                self._read(b"\n".join(self._data), self._event)
            self._event, self._data = None, []
        elif line.startswith(b"event:"):
            self._event = line[6:].strip().decode(errors="replace")
        elif line.startswith(b"data:"):
            self._data.append(line[5:].removeprefix(b" "))

    def _read(self, raw: bytes, event: str | None) -> None:
        """One JSON document: a whole body (event None) or one event's data."""
        try:
            data = json.loads(raw)
        except ValueError:  # "[DONE]", a malformed body: relayed all the same
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type") if isinstance(data.get("type"), str) else event
        if isinstance(data.get("error"), dict) or kind == "error":
            self._error(data.get("error") if isinstance(data.get("error"), dict) else data)
        if kind == "message_start":
            self._absorb(data.get("message"))
        elif kind == "message_delta":
            self._merge(data.get("usage"))
            self.stop_reason = _text(_field(data, "delta", "stop_reason")) or self.stop_reason
        elif isinstance(kind, str) and kind.startswith("response."):
            response = data.get("response")
            self._absorb(response)
            if kind == "response.failed" and isinstance(response, dict) and isinstance(response.get("error"), dict):
                self._error(response["error"])
        elif event is None or kind is None:  # a whole body, or a Chat Completions chunk
            self._absorb(data)

    def _absorb(self, obj: Any) -> None:
        """Take id, model, stop reason and usage from a message, a response or a chat completion (chunk)."""
        if not isinstance(obj, dict):
            return
        self.id = _text(obj.get("id")) or self.id
        self.model = _text(obj.get("model")) or self.model
        choices = obj.get("choices")
        finish = _text(choices[0].get("finish_reason")) if choices and isinstance(choices[0], dict) else None
        reason = _text(obj.get("stop_reason")) or finish or _text(_field(obj, "incomplete_details", "reason"))
        self.stop_reason = reason or _text(obj.get("status")) or self.stop_reason
        self._merge(obj.get("usage"))

    def _merge(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.usage.update({name: value for name, value in usage.items() if value is not None})

    def _error(self, error: dict[str, Any]) -> None:
        kind, message = _text(error.get("code")) or _text(error.get("type")), _text(error.get("message"))
        self.error = ": ".join(part for part in (kind, message) if part) or "an error without a message"


def _field(obj: dict[str, Any], *names: str) -> Any:
    """obj[names[0]][names[1]]..., None where any level is missing or not an object."""
    value: Any = obj
    for name in names:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _count(value: Any) -> int:
    """A token count: a non-negative int, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None

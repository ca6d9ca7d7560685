"""The claude agent: a tool-use conversation with the Anthropic Messages API that edits train.py in memory.

One proposal is one conversation: the model reads and edits its copy of train.py through the tools in
`tools.py` and ends by calling submit. Every API call, failed or not, is logged through log_turn with its
tokens and cost. The SDK retries transient failures itself (settings.max_retries); what still fails becomes
AgentError (the loop retries, bounded), except a refused key, a missing permission, an exhausted credit
or an unknown model, which no retry can fix: AgentFatal. With base_url set (an Anthropic-compatible server), a
preflight the server does not implement is a warning, not a stop.
"""

import os
import time
from dataclasses import dataclass, field
from typing import Any

import anthropic
from anthropic.types import Message, Usage

from autoresearch.runner.agents.base import (
    BILLING_PHRASES,
    KEY_ENVS,
    UNIMPLEMENTED_STATUSES,
    AgentError,
    AgentFatal,
    AgentHost,
    AgentSettings,
    Outcome,
    Proposal,
    ProposalContext,
    TurnLogger,
)
from autoresearch.runner.agents.pricing import prices, usage_row
from autoresearch.runner.agents.prompt import first_message, system_blocks
from autoresearch.runner.agents.tools import TOOLS, WorkingCopy

DEFAULT_MODEL = "claude-sonnet-4-5"
KEY_ENV = KEY_ENVS["claude"]


@dataclass
class _Spend:
    """The turns logged for one proposal (what they cost is in the store: agent_turns, store.spent_usd)."""

    turn_ids: list[int] = field(default_factory=list)


class ClaudeAgent:
    """Proposes train.py edits by talking to Claude; see the module docstring.

    warnings: what preflight noticed but did not stop for, one line each, for the loop to print.
    """

    name = "claude"

    def __init__(self, settings: AgentSettings, log_turn: TurnLogger, host: AgentHost | None = None) -> None:
        key_env = settings.key_env or KEY_ENV
        key = os.environ.get(key_env)
        if not key:
            raise AgentFatal(f'{key_env} is not set: export it, or set agent = "sweep" to run offline')
        self.model = settings.model or DEFAULT_MODEL
        self._settings = settings
        self._log_turn = log_turn
        self._host = host
        self.warnings: list[str] = []
        self._client = anthropic.Anthropic(
            api_key=key, base_url=settings.base_url, max_retries=settings.max_retries, timeout=settings.timeout_s
        )

    def propose(self, context: ProposalContext) -> Proposal:
        """Run one conversation until the model submits a changed, parseable train.py."""
        copy = WorkingCopy(context.train_py, {"prepare.py": context.prepare_py, "program.md": context.program_md},
                           context.notes)
        system = system_blocks(context)
        messages = [first_message(context, self._settings.memory_tokens)]
        spend = _Spend()
        for _ in range(self._settings.max_turns):
            message = self._send(system, messages, spend)
            blocks = _reply_blocks(message)
            messages.append({"role": "assistant", "content": blocks})
            uses = [block for block in blocks if block["type"] == "tool_use"]
            if not uses:
                messages.append(_nudge(message.stop_reason))
                continue
            results = []
            for use in uses:
                result = copy.run(use["name"], use["input"])
                if copy.description is not None:  # submitted: later calls in the same reply are not run
                    return Proposal(copy.train_py, copy.description, spend.turn_ids, copy.new_notes())
                results.append(result.block(use["id"]))
            messages.append({"role": "user", "content": results})
        raise AgentError(f"claude did not submit a train.py within {self._settings.max_turns} turns")

    def preflight(self) -> None:
        """Ask the API about the model (free, GET /v1/models/{model}): a refused key or unknown model stops
        the run before its baseline; an outage now is left to the proposals' own retries. A compatible server
        (base_url set) that lacks the endpoint (404, 405, 501, a reply that is not JSON) adds a warning instead."""
        try:
            self._client.models.retrieve(self.model)
        except (anthropic.APIError, ValueError) as exc:  # ValueError: a reply body that is not JSON
            error = _one_line(exc)
            unimplemented = not isinstance(exc, anthropic.APIError) or (
                isinstance(exc, anthropic.APIStatusError) and exc.status_code in UNIMPLEMENTED_STATUSES)
            if self._settings.base_url and unimplemented:
                self.warnings.append(f"{self._settings.base_url} does not serve GET /v1/models/{self.model} "
                                     f"({error}): the key and model are checked by the first proposal instead")
                return
            translated = _translate(exc, error, self.model)
            if isinstance(translated, AgentFatal):
                raise translated from exc

    def observe(self, outcome: Outcome) -> None:
        """Nothing to do: the outcome reaches the model through the history of the next context."""

    def _send(self, system: list[dict[str, Any]], messages: list[dict[str, Any]], spend: _Spend) -> Message:
        """One API call, logged; its cost is added to spend."""
        request = {
            "model": self.model,
            "max_tokens": self._settings.max_tokens,
            "system": system,
            "tools": TOOLS,
            "messages": _with_cache_marker(messages),
        }
        if self._host is not None:
            self._host.require_budget()
        started = time.monotonic()
        try:
            message = self._client.messages.create(**request)
        except (anthropic.APIError, ValueError) as exc:  # ValueError: a reply body that is not JSON
            error = _one_line(exc)
            status = isinstance(exc, anthropic.APIStatusError)
            response = {"status_code": exc.status_code, "body": exc.body} if status else {}
            spend.turn_ids.append(
                self._log_turn(
                    model=self.model, usage=_usage_dict(None, self._settings), latency_s=time.monotonic() - started,
                    request=request, response=response, error=error,
                )
            )
            raise _translate(exc, error, self.model) from exc
        usage = _usage_dict(message.usage, self._settings)
        spend.turn_ids.append(
            self._log_turn(
                model=self.model, usage=usage, latency_s=time.monotonic() - started,
                request=request, response=message.model_dump(mode="json", warnings=False), error=None,
            )
        )
        return message


def _usage_dict(usage: Usage | None, settings: AgentSettings) -> dict[str, Any]:
    """The usage of one call in the store's terms, with its cost at settings' prices; zeros for a failed call."""
    return usage_row(
        prices(settings),
        input_tokens=getattr(usage, "input_tokens", None) or 0,
        output_tokens=getattr(usage, "output_tokens", None) or 0,
        cache_read_tokens=getattr(usage, "cache_read_input_tokens", None) or 0,
        cache_write_tokens=getattr(usage, "cache_creation_input_tokens", None) or 0,
    )


def _reply_blocks(message: Message) -> list[dict[str, Any]]:
    """The reply's text and tool_use blocks, as they are sent back; AgentError when it has neither."""
    blocks: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text" and isinstance(block.text, str) and block.text:
            blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use" and isinstance(block.id, str) and isinstance(block.name, str):
            blocks.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
    if not blocks:
        raise AgentError(f"claude replied with neither text nor a tool call (stop_reason {message.stop_reason})")
    return blocks


def _nudge(stop_reason: str | None) -> dict[str, Any]:
    """The user turn that answers a reply without tool calls."""
    cut = " Your reply was cut at max_tokens: make smaller edits." if stop_reason == "max_tokens" else ""
    text = f"Use the tools: edit train.py, then call submit with a one-line description.{cut}"
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def _with_cache_marker(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """messages with a cache breakpoint on the last block, so each turn reads the conversation so far from cache.

    The marker is added to copies: earlier messages must not keep theirs (the API allows four breakpoints).
    """
    last = messages[-1]
    content = [*last["content"][:-1], {**last["content"][-1], "cache_control": {"type": "ephemeral"}}]
    return [*messages[:-1], {**last, "content": content}]


def _one_line(exc: Exception) -> str:
    """The error's own message (the API's, when it sent one) on one line."""
    message = getattr(exc, "api_message", None) or getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())


def _translate(exc: Exception, error: str, model: str) -> Exception:
    """AgentFatal for what no retry can fix, AgentError for the rest."""
    if isinstance(exc, anthropic.AuthenticationError):
        return AgentFatal(f"the API key was refused ({exc.status_code}): {error}")
    if isinstance(exc, anthropic.PermissionDeniedError):
        return AgentFatal(f"the API key lacks permission ({exc.status_code}): {error}")
    if isinstance(exc, anthropic.NotFoundError):
        return AgentFatal(f"not found ({exc.status_code}); check the agent's model {model!r} and base_url: {error}")
    billing = isinstance(exc, anthropic.BadRequestError) and any(p in error.lower() for p in BILLING_PHRASES)
    if billing or (isinstance(exc, anthropic.APIStatusError) and exc.status_code == 402):
        return AgentFatal(f"the API refused to bill this request ({exc.status_code}): {error}")
    if isinstance(exc, anthropic.APIStatusError):
        return AgentError(f"the API answered {exc.status_code}: {error}")
    if isinstance(exc, anthropic.APITimeoutError):
        return AgentError(f"the API call timed out: {error}")
    if isinstance(exc, anthropic.APIConnectionError):
        return AgentError(f"cannot reach the API: {error}")
    return AgentError(f"malformed reply from the API: {error}")

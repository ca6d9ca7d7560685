"""The openai agent: a function-calling conversation over the OpenAI SDK that edits train.py in memory.

api = "chat" (the default) speaks Chat Completions, which vLLM, Ollama, llama.cpp's server and LM Studio serve as
well as OpenAI; api = "responses" speaks OpenAI's Responses API, statelessly (store=False, the whole conversation
sent each turn, reasoning carried as encrypted content). The tools, the working copy and the prompt are the claude
agent's. Every API call, failed or not, is logged through log_turn with its tokens and cost. The SDK retries
transient failures itself (settings.max_retries); what still fails becomes AgentError (the loop retries, bounded),
except a refused key, a missing permission, an exhausted quota or an unknown model: AgentFatal.
"""

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai

from autoresearch.runner.agents.base import (
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
from autoresearch.runner.agents.tools import TOOLS, ToolResult, WorkingCopy

DEFAULT_MODEL = "gpt-5"
KEY_ENV = KEY_ENVS["openai"]
LOCAL_KEY = "not-needed"  # sent to a base_url server when the key's variable is unset: local servers want none
# The 400 of a model that cannot return its reasoning encrypted, which a stateless Responses conversation needs.
NO_ENCRYPTED_REASONING = "encrypted content is not supported"


@dataclass(frozen=True)
class _Call:
    """One function call of a reply: its id, the tool's name and its arguments as the model wrote them (JSON)."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class _Reply:
    """One reply as the conversation needs it: the model's turn to send back, its calls, whether max tokens cut it."""

    said: list[dict[str, Any]]
    calls: list[_Call]
    cut: bool


class OpenAIAgent:
    """Proposes train.py edits through the OpenAI SDK; see the module docstring.

    warnings: what preflight noticed but did not stop for, one line each, for the loop to print.
    """

    name = "openai"

    def __init__(self, settings: AgentSettings, log_turn: TurnLogger, host: AgentHost | None = None) -> None:
        self._key_env = settings.key_env or KEY_ENV
        self._secret = os.environ.get(self._key_env) or None
        if self._secret is None and not settings.base_url:
            raise AgentFatal(f"{self._key_env} is not set: export it, or set base_url to a local server (vLLM, "
                             'Ollama, llama.cpp, LM Studio) that needs no key, or agent = "sweep" to run offline')
        self.model = settings.model or DEFAULT_MODEL
        self.warnings: list[str] = []
        self._settings = settings
        self._log_turn = log_turn
        self._host = host
        self._client = openai.OpenAI(
            api_key=self._secret or LOCAL_KEY, base_url=settings.base_url, max_retries=settings.max_retries,
            timeout=settings.timeout_s,
        )

    def propose(self, context: ProposalContext) -> Proposal:
        """Run one conversation until the model submits a changed, parseable train.py."""
        readonly = {"prepare.py": context.prepare_py, "program.md": context.program_md}
        copy = WorkingCopy(context.train_py, readonly, context.notes)
        system = _joined(system_blocks(context))
        opening = {"role": "user", "content": _joined(first_message(context, self._settings.memory_tokens)["content"])}
        chat = self._settings.api == "chat"
        conversation: list[dict[str, Any]] = [{"role": "system", "content": system}, opening] if chat else [opening]
        turn_ids: list[int] = []
        for _ in range(self._settings.max_turns):
            reply = self._chat(conversation, turn_ids) if chat else self._responses(system, conversation, turn_ids)
            conversation.extend(reply.said)
            if not reply.calls:
                conversation.append(_nudge(reply.cut))
                continue
            for call in reply.calls:
                result = _run(copy, call)
                if copy.description is not None:  # submitted: later calls in the same reply are not run
                    return Proposal(copy.train_py, copy.description, turn_ids, copy.new_notes())
                text = f"ERROR: {result.text}" if result.is_error else result.text
                conversation.append({"role": "tool", "tool_call_id": call.call_id, "content": text} if chat
                                    else {"type": "function_call_output", "call_id": call.call_id, "output": text})
        raise AgentError(f"openai did not submit a train.py within {self._settings.max_turns} turns")

    def preflight(self) -> None:
        """Ask the API about the model (free, GET models/{model}): a refused key or unknown model stops the run
        before its baseline; an outage now is left to the proposals' own retries. A compatible server (base_url
        set) that lacks the endpoint (404, 405, 501, a reply that is not JSON) adds a warning instead."""
        try:
            self._client.models.retrieve(self.model)
        except (openai.APIError, ValueError) as exc:  # ValueError: a reply body that is not JSON
            error = self._one_line(exc)
            unimplemented = not isinstance(exc, openai.APIError) or (
                isinstance(exc, openai.APIStatusError) and exc.status_code in UNIMPLEMENTED_STATUSES)
            if self._settings.base_url and unimplemented:
                self.warnings.append(f"{self._settings.base_url} does not serve GET models/{self.model} "
                                     f"({error}): the key and model are checked by the first proposal instead")
                return
            translated = self._translate(exc, error)
            if isinstance(translated, AgentFatal):
                raise translated from exc

    def observe(self, outcome: Outcome) -> None:
        """Nothing to do: the outcome reaches the model through the history of the next context."""

    def _chat(self, messages: list[dict[str, Any]], turn_ids: list[int]) -> _Reply:
        """One Chat Completions call."""
        tools = [{"type": "function", "function": _function(tool)} for tool in TOOLS]
        request = {"model": self.model, "messages": list(messages), "tools": tools,
                   "max_completion_tokens": self._settings.max_tokens}
        completion = self._send(self._client.chat.completions.create, request, turn_ids)
        choice = (getattr(completion, "choices", None) or [None])[0]
        message = getattr(choice, "message", None)
        text = _str(getattr(message, "content", None))
        calls = []
        for n, call in enumerate(getattr(message, "tool_calls", None) or []):
            function = getattr(call, "function", None)
            call_id = _str(getattr(call, "id", None)) or f"call_unnamed_{n}"
            calls.append(_Call(call_id, _str(getattr(function, "name", None)),
                               _str(getattr(function, "arguments", None))))
        said: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            said["tool_calls"] = [{"id": c.call_id, "type": "function",
                                   "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
        cut = getattr(choice, "finish_reason", None) == "length"
        return _Reply([said] if text or calls else [], calls, cut)

    def _responses(self, instructions: str, items: list[dict[str, Any]], turn_ids: list[int]) -> _Reply:
        """One Responses call; the model's output items are sent back as they came (the API expects them)."""
        request = {"model": self.model, "instructions": instructions, "input": list(items),
                   "tools": [{"type": "function", **_function(tool)} for tool in TOOLS],
                   "max_output_tokens": self._settings.max_tokens, "store": False,
                   "include": ["reasoning.encrypted_content"]}
        response = self._send(self._client.responses.create, request, turn_ids)
        said, calls = [], []
        for item in getattr(response, "output", None) or []:
            if not isinstance(item, openai.BaseModel):
                continue
            output = item.to_dict(mode="json")
            if output.get("type") == "function_call":
                call = _Call(_str(output.get("call_id")) or f"call_unnamed_{len(calls)}", _str(output.get("name")),
                             _str(output.get("arguments")))
                output["call_id"] = call.call_id
                calls.append(call)
            said.append(output)
        cut = getattr(getattr(response, "incomplete_details", None), "reason", None) == "max_output_tokens"
        return _Reply(said, calls, cut)

    def _send(self, create: Callable[..., Any], request: dict[str, Any], turn_ids: list[int]) -> Any:
        """One API call, logged (failed or not) with its usage and cost; the row's id goes to turn_ids."""
        if self._host is not None:
            self._host.require_budget()
        started = time.monotonic()
        try:
            reply = create(**request)
            if not isinstance(reply, openai.BaseModel):  # JSON, but not an object: a list, a string, null
                raise ValueError(f"the reply is a JSON {type(reply).__name__}, not an object")
        except (openai.APIError, ValueError) as exc:  # ValueError: a reply body that is not a JSON object
            error = self._one_line(exc)
            status = isinstance(exc, openai.APIStatusError)
            response = {"status_code": exc.status_code, "body": self._scrub(exc.body)} if status else {}
            turn_ids.append(self._log_turn(
                model=self.model, usage=usage_row(prices(self._settings)), latency_s=time.monotonic() - started,
                request=request, response=response, error=error,
            ))
            raise self._translate(exc, error) from exc
        turn_ids.append(self._log_turn(
            model=self.model, usage=_usage(getattr(reply, "usage", None), self._settings),
            latency_s=time.monotonic() - started, request=request,
            response=reply.model_dump(mode="json", warnings=False), error=None,
        ))
        return reply

    def _one_line(self, exc: Exception) -> str:
        """The error's own message (the API's, when it sent one) on one line, without the key."""
        body = getattr(exc, "body", None)
        message = body.get("message") if isinstance(body, dict) else body if isinstance(body, str) else None
        if not isinstance(message, str) or not message.strip():
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        line = " ".join(str(message).split())[:300]
        return line.replace(self._secret, "<key>") if self._secret else line

    def _scrub(self, value: object) -> object:
        """value (a JSON-able error body) with the key, should a server echo it, replaced by <key>."""
        if not self._secret:
            return value
        return json.loads(json.dumps(value).replace(self._secret, "<key>"))

    def _translate(self, exc: Exception, error: str) -> Exception:
        """AgentFatal for what no retry can fix, AgentError for the rest."""
        if isinstance(exc, openai.AuthenticationError):
            return AgentFatal(f"the API key from {self._key_env} was refused ({exc.status_code}): {error}")
        if isinstance(exc, openai.PermissionDeniedError):
            return AgentFatal(f"the API key from {self._key_env} lacks permission ({exc.status_code}): {error}")
        if isinstance(exc, openai.NotFoundError):
            where = self._settings.base_url or "the SDK's default"
            return AgentFatal(f"not found ({exc.status_code}); check the agent's model {self.model!r} and base_url "
                              f"({where}): {error}")
        if isinstance(exc, openai.APIStatusError) and (exc.status_code == 402 or exc.code == "insufficient_quota"):
            return AgentFatal(f"the API refused to bill this request ({exc.status_code}): {error}")
        if isinstance(exc, openai.BadRequestError) and NO_ENCRYPTED_REASONING in error.lower():
            return AgentFatal(f'{self.model!r} cannot carry its reasoning across a stateless Responses conversation: '
                              f'set api = "chat" for it ({error})')
        if isinstance(exc, openai.APIStatusError):
            return AgentError(f"the API answered {exc.status_code}: {error}")
        if isinstance(exc, openai.APITimeoutError):
            return AgentError(f"the API call timed out: {error}")
        if isinstance(exc, openai.APIConnectionError):
            return AgentError(f"cannot reach the API: {error}")
        return AgentError(f"malformed reply from the API: {error}")


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool of tools.TOOLS (Anthropic's shape) as an OpenAI function definition."""
    return {"name": tool["name"], "description": tool["description"], "parameters": tool["input_schema"]}


def _run(copy: WorkingCopy, call: _Call) -> ToolResult:
    """Run one call on the working copy; arguments that are not JSON come back as an error the model can fix."""
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except json.JSONDecodeError as exc:
        return ToolResult(f"the arguments of {call.name} are not valid JSON ({exc}): send one JSON object",
                          is_error=True)
    return copy.run(call.name, arguments)


def _usage(usage: object, settings: AgentSettings) -> dict[str, Any]:
    """The usage of one reply in the store's terms; Chat counts prompt/completion tokens, Responses input/output,
    both with the cached part of the input inside it. No usage counts zeros."""
    prompt = _count(usage, "prompt_tokens") or _count(usage, "input_tokens")
    details = getattr(usage, "prompt_tokens_details", None) or getattr(usage, "input_tokens_details", None)
    cached = min(_count(details, "cached_tokens"), prompt)
    completion = _count(usage, "completion_tokens") or _count(usage, "output_tokens")
    return usage_row(prices(settings), input_tokens=prompt - cached, output_tokens=completion, cache_read_tokens=cached)


def _count(source: object, name: str) -> int:
    """A token count of source, 0 when it is missing or not a count."""
    value = getattr(source, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _joined(blocks: list[dict[str, Any]]) -> str:
    """The text of Anthropic-shaped content blocks (the shared prompt's), as one string without cache markers."""
    return "\n\n".join(block["text"] for block in blocks if block.get("type") == "text")


def _str(value: object) -> str:
    """value when it is a string, else the empty string (a field a lenient server left out or mistyped)."""
    return value if isinstance(value, str) else ""


def _nudge(cut: bool) -> dict[str, Any]:
    """The user turn that answers a reply without tool calls."""
    more = " Your reply was cut at max_tokens: make smaller edits." if cut else ""
    text = f"Use the tools: edit train.py, then call submit with a one-line description.{more}"
    return {"role": "user", "content": text}

"""OpenAI bodies for the fake API (fake_api.FakeAPI): Chat Completions and Responses, whole and streamed, and the
error envelope.

Fields and event sequences follow the OpenAI API reference (and the SDK's types, generated from it), so the real
SDK reads them as it reads the service, and so does Codex, which speaks only streamed POST /v1/responses. A
streamed Chat Completion is data-only events ending with [DONE]; a streamed Response is named events (each data's
"type" repeats the name, with a sequence_number): response.created, response.in_progress, per output item
response.output_item.added, its deltas and .done events, response.output_item.done, then response.completed
(or response.incomplete / response.failed) carrying the whole response with its usage.
"""

import json
from typing import Any

from tests.agents.fake_api import Reply

MODEL = "gpt-fake"
CREATED = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed clock
PIECE_CHARS = 16  # streamed text and arguments come in pieces of this size
Events = list[tuple[str | None, dict[str, Any] | str]]


def error_body(kind: str, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope, e.g. ("invalid_request_error", "...", "model_not_found")."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# Chat Completions


def tool_call(name: str, arguments: dict[str, Any] | str, call_id: str) -> dict[str, Any]:
    """A function tool call of an assistant message; arguments as a dict (sent as JSON text) or as raw text."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def chat_usage(prompt_tokens: int = 100, completion_tokens: int = 20, cached_tokens: int = 0) -> dict[str, Any]:
    """A Chat Completion's usage: prompt_tokens includes the cached ones."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


def chat_body(*tool_calls: dict[str, Any], content: str | None = None, finish_reason: str | None = None,
              **tokens: int) -> dict[str, Any]:
    """A chat.completion with one choice; finish_reason defaults to tool_calls or stop; tokens go to chat_usage."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    finish = finish_reason or ("tool_calls" if tool_calls else "stop")
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": chat_usage(**tokens),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def chat_chunks(*tool_calls: dict[str, Any], content: str | None = None, finish_reason: str | None = None,
                **tokens: int) -> Events:
    """chat_body as chat.completion.chunk events: the role, the content in pieces, each tool call (its id and name,
    then its arguments in pieces), the finish reason, the usage chunk (what stream_options.include_usage asks
    for: no choices), then [DONE]."""
    head = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
            "service_tier": "default", "system_fingerprint": "fp_fake"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[None, dict[str, Any]]:
        return None, {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    events: Events = [chunk({"role": "assistant", "content": "" if content else None, "refusal": None})]
    events += [chunk({"content": piece}) for piece in _pieces(content or "")]
    for index, call in enumerate(tool_calls):
        function = call["function"]
        events.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                             "function": {"name": function["name"], "arguments": ""}}]}))
        events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                   for piece in _pieces(function["arguments"])]
    events.append(chunk({}, finish_reason or ("tool_calls" if tool_calls else "stop")))
    events.append((None, {**head, "choices": [], "usage": chat_usage(**tokens)}))
    events.append((None, "[DONE]"))
    return events


def chat_reply(*tool_calls: dict[str, Any], stream: bool = False, **fields: Any) -> Reply:
    """A 200 reply: chat_body, or chat_chunks when stream."""
    return Reply(200, chat_chunks(*tool_calls, **fields) if stream else chat_body(*tool_calls, **fields))


# Responses


def message_item(text: str, item_id: str = "msg_fake") -> dict[str, Any]:
    """An assistant message output item with one output_text part."""
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}


def function_call_item(name: str, arguments: dict[str, Any] | str, call_id: str,
                       item_id: str | None = None) -> dict[str, Any]:
    """A function_call output item; arguments as a dict (sent as JSON text) or as raw text."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": item_id or f"fc_{call_id}", "type": "function_call", "status": "completed", "call_id": call_id,
            "name": name, "arguments": text}


def reasoning_item(summary: str = "", item_id: str = "rs_fake") -> dict[str, Any]:
    """A reasoning output item, with the encrypted_content that include=["reasoning.encrypted_content"] asks for."""
    parts = [{"type": "summary_text", "text": summary}] if summary else []
    return {"id": item_id, "type": "reasoning", "summary": parts, "encrypted_content": f"gAAAAB-fake-{item_id}"}


def responses_usage(input_tokens: int = 100, output_tokens: int = 20, cached_tokens: int = 0) -> dict[str, Any]:
    """A Response's usage: input_tokens includes the cached ones."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def response_body(*items: dict[str, Any], status: str = "completed", incomplete_reason: str | None = None,
                  error: dict[str, Any] | None = None, response_id: str = "resp_fake", **tokens: int) -> dict[str, Any]:
    """A response object with these output items; status completed, incomplete (with incomplete_reason, e.g.
    max_output_tokens) or failed (with error {"code", "message"}); tokens go to responses_usage."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": None,
        "max_output_tokens": None,
        "model": MODEL,
        "output": list(items),
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": responses_usage(**tokens),
        "user": None,
        "metadata": {},
    }


def response_events(*items: dict[str, Any], **fields: Any) -> Events:
    """response_body as the Responses API streams it (fields as response_body's)."""
    final = response_body(*items, **fields)
    started = {**final, "status": "in_progress", "error": None, "incomplete_details": None, "output": [],
               "usage": None}
    events: Events = []

    def emit(kind: str, **data: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": len(events), **data}))

    emit("response.created", response=started)
    emit("response.in_progress", response=started)
    for index, item in enumerate(items):
        emit("response.output_item.added", output_index=index, item=_in_progress(item))
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            for content_index, part in enumerate(item["content"]):
                emit("response.content_part.added", **at, content_index=content_index, part={**part, "text": ""})
                for piece in _pieces(part["text"]):
                    emit("response.output_text.delta", **at, content_index=content_index, delta=piece, logprobs=[])
                emit("response.output_text.done", **at, content_index=content_index, text=part["text"], logprobs=[])
                emit("response.content_part.done", **at, content_index=content_index, part=part)
        elif item["type"] == "function_call":
            for piece in _pieces(item["arguments"]):
                emit("response.function_call_arguments.delta", **at, delta=piece)
            emit("response.function_call_arguments.done", **at, arguments=item["arguments"])
        emit("response.output_item.done", output_index=index, item=item)
    emit(f"response.{final['status']}", response=final)
    return events


def responses_reply(*items: dict[str, Any], stream: bool = False, **fields: Any) -> Reply:
    """A 200 reply: response_body, or response_events when stream."""
    return Reply(200, response_events(*items, **fields) if stream else response_body(*items, **fields))


def _in_progress(item: dict[str, Any]) -> dict[str, Any]:
    """An output item as response.output_item.added shows it: before its content."""
    empty = {"message": {"content": []}, "function_call": {"arguments": ""},
             "reasoning": {"summary": [], "encrypted_content": None}}.get(item["type"], {})
    return {**item, **empty, **({"status": "in_progress"} if "status" in item else {})}


def _pieces(text: str) -> list[str]:
    return [text[i : i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)]

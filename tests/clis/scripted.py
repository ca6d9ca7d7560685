"""Scripted models for the real coding-agent CLIs: each answers the CLI's main conversation with the next of its
actions (a tool call), then ends the turn; any other request (a side call the CLI makes) gets a short text.

Claude Code speaks the Anthropic Messages API, streamed; Codex the Responses API, streamed, with its "code mode"
tool `exec` (JavaScript that calls nested tools such as `tools.exec_command({cmd})`).
"""

import json
from dataclasses import dataclass, field
from typing import Any

from tests.agents.fake_api import Recorded, Reply, message_events
from tests.agents.fake_openai import message_item, response_events


@dataclass
class ClaudeScript:
    """Tool calls (name, input) for Claude Code, one per model turn, then a final text."""

    actions: list[tuple[str, dict[str, Any]]]
    seen: list[Recorded] = field(default_factory=list)

    def __call__(self, request: Recorded) -> Reply:
        self.seen.append(request)
        tools = {tool.get("name") for tool in request.body.get("tools", [])}
        if "Edit" not in tools:  # a side call
            return Reply(200, message_events([{"type": "text", "text": "ok"}], stop_reason="end_turn"))
        # Counted in tool_use blocks: Claude Code sends consecutive assistant turns merged into one message.
        step = sum(1 for message in request.body.get("messages", []) if message.get("role") == "assistant"
                   for block in message.get("content") or [] if isinstance(block, dict) and block["type"] == "tool_use")
        if step >= len(self.actions):
            return Reply(200, message_events([{"type": "text", "text": "done"}], stop_reason="end_turn"))
        name, tool_input = self.actions[step]
        block = {"type": "tool_use", "id": f"toolu_{step}", "name": name, "input": tool_input}
        return Reply(200, message_events([block], stop_reason="tool_use"))

    def tool_results(self) -> str:
        """Everything the CLI sent back to the model as tool results (what the model could read)."""
        return json.dumps([m for r in self.seen for m in r.body.get("messages", []) if m.get("role") == "user"])


def apply_patch(path: str, old: str, new: str) -> str:
    """The JavaScript for Codex's exec tool that edits path with its apply_patch tool (old line to new)."""
    patch = f"*** Begin Patch\n*** Update File: {path}\n@@\n-{old}\n+{new}\n*** End Patch\n"
    return f"const r = await tools.apply_patch({json.dumps(patch)});\ntext(JSON.stringify(r));"


@dataclass
class CodexScript:
    """Actions for Codex, one per model turn (through its exec tool), then a final message: a shell command, or
    JavaScript for the exec tool when it starts with "js:"."""

    commands: list[str]
    seen: list[Recorded] = field(default_factory=list)

    def __call__(self, request: Recorded) -> Reply:
        self.seen.append(request)
        step = sum(1 for item in request.body.get("input", [])
                   if item.get("type") in ("custom_tool_call_output", "function_call_output"))
        if step >= len(self.commands):
            return Reply(200, response_events(message_item("done")))
        action = self.commands[step]
        source = action.removeprefix("js:") if action.startswith("js:") else (
            f"const r = await tools.exec_command({{cmd: {json.dumps(action)}}});\ntext(JSON.stringify(r));")
        call = {"type": "custom_tool_call", "id": f"ctc_{step}", "call_id": f"call_{step}", "name": "exec",
                "input": source, "status": "completed"}
        return Reply(200, response_events(call))

    def tool_results(self) -> str:
        return json.dumps([i for r in self.seen for i in r.body.get("input", [])
                           if i.get("type") in ("custom_tool_call_output", "function_call_output")])

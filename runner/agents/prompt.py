"""The in-process agents' prompt: a cached system part (instructions, program.md, prepare.py) and a user message
with the current best train.py, in full, and the research memory (runner/agents/memory.py), within its budget.

The memory quotes what earlier candidates printed and what the agent wrote: it enters the prompt as data
(runner/record/untrusted.py), so a log cannot pass for a history row or a line of the instructions.
"""

from typing import Any

from autoresearch.runner.agents.base import AgentSettings, ProposalContext
from autoresearch.runner.agents.memory import FAILURE_TAIL_CHARS, history_table, render_memory
from autoresearch.runner.record.store import NOTES_CHARS

__all__ = ["FAILURE_TAIL_CHARS", "INSTRUCTIONS", "first_message", "history_table", "system_blocks"]

INSTRUCTIONS = f"""\
You are an ML researcher running one experiment at a time to lower val_bpb. The rules are in program.md.
Each turn, propose exactly one new train.py: read with view_file, edit with replace_in_train_py (or
rewrite_train_py for large changes), then call submit with a one-line description of the idea and what you
expect from it. prepare.py and program.md are read-only. Learn from the history: do not repeat experiments
that were discarded, and fix the cause when the last one failed. Keep notes across experiments with
update_notes before you submit (the whole text, at most {NOTES_CHARS} characters, replacing the old): what you
learned and what to try next. They are shown to you at every proposal; view_file notes.md shows them whole."""


def system_blocks(context: ProposalContext) -> list[dict[str, Any]]:
    """The system prompt: constant for a run, so it is marked for prompt caching."""
    text = (
        f"{INSTRUCTIONS}\n\n<program.md>\n{context.program_md}\n</program.md>\n\n"
        f"<prepare.py read-only>\n{context.prepare_py}\n</prepare.py>"
    )
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


def first_message(context: ProposalContext, memory_tokens: int = AgentSettings.memory_tokens) -> dict[str, Any]:
    """The user message that opens a proposal's conversation: train.py in full, then the memory in memory_tokens."""
    parts = [
        f"The current best train.py (the parent of your experiment):\n<train.py>\n{context.train_py}\n</train.py>",
        render_memory(context, memory_tokens),
        "Propose the next experiment: edit train.py with the tools, then call submit.",
    ]
    return {"role": "user", "content": [{"type": "text", "text": "\n\n".join(parts)}]}

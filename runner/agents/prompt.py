"""The claude agent's prompt: a cached system part (instructions, program.md, prepare.py) and a user message
with the current best train.py, the history, the best score and the last failure.

The history and the failure quote what earlier candidates printed and what the agent wrote: they enter the
prompt as data (runner/record/untrusted.py), so a log cannot pass for a history row or a line of the instructions.
"""

from typing import Any

from autoresearch.runner.agents.base import HistoryRow, ProposalContext
from autoresearch.runner.record.untrusted import DESCRIPTION_CHARS, as_data, escaped, tail_as_data

FAILURE_TAIL_CHARS = 4000

INSTRUCTIONS = """\
You are an ML researcher running one experiment at a time to lower val_bpb. The rules are in program.md.
Each turn, propose exactly one new train.py: read with view_file, edit with replace_in_train_py (or
rewrite_train_py for large changes), then call submit with a one-line description of the idea and what you
expect from it. prepare.py and program.md are read-only. Learn from the history: do not repeat experiments
that were discarded, and fix the cause when the last one failed."""


NEAR_MISS_DIFF_CHARS = 3000


def system_blocks(context: ProposalContext) -> list[dict[str, Any]]:
    """The system prompt: constant for a run, so it is marked for prompt caching."""
    text = (
        f"{INSTRUCTIONS}\n\n<program.md>\n{context.program_md}\n</program.md>\n\n"
        f"<prepare.py read-only>\n{context.prepare_py}\n</prepare.py>"
    )
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


def first_message(context: ProposalContext) -> dict[str, Any]:
    """The user message that opens a proposal's conversation."""
    best = "none yet" if context.best_val_bpb is None else f"{context.best_val_bpb:.6f}"
    parts = [
        f"The current best train.py (the parent of your experiment):\n<train.py>\n{context.train_py}\n</train.py>",
        f"History, oldest first:\n{history_table(context.history)}",
        f"Best val_bpb so far: {best}",
    ]
    if context.in_flight:
        parts.append("Training now (do not propose these again; their results come later):\n"
                     + history_table(context.in_flight))
    for miss in context.near_misses:
        diff = tail_as_data(miss.diff, NEAR_MISS_DIFF_CHARS).replace("</diff", "<\\/diff")
        parts.append(f"Near miss #{miss.seq} ({as_data(miss.description, DESCRIPTION_CHARS)}) beat its parent by "
                     f"{miss.gain:.6f} bpb, but the best moved on meanwhile; consider porting it:\n"
                     f"<diff>\n{diff}\n</diff>")
    if context.last_failure:
        # The log is the candidate's text: it must not be able to close the <log> block and speak as us.
        failure = tail_as_data(context.last_failure, FAILURE_TAIL_CHARS).replace("</log", "<\\/log")
        parts.append(f"The last experiment failed; the end of its log:\n<log>\n{failure}\n</log>")
    parts.append("Propose the next experiment: edit train.py with the tools, then call submit.")
    return {"role": "user", "content": [{"type": "text", "text": "\n\n".join(parts)}]}


def history_table(rows: list[HistoryRow]) -> str:
    """The history as tab-separated lines under a header, like results.tsv; '(none yet)' when empty."""
    if not rows:
        return "(none yet)"
    lines = ["seq\tcommit\tval_bpb\tstatus\tdescription"]
    for row in rows:
        bpb = "-" if row.val_bpb is None else f"{row.val_bpb:.6f}"
        description = as_data(row.description, DESCRIPTION_CHARS)
        lines.append(f"{row.seq}\t{escaped(row.commit)}\t{bpb}\t{escaped(row.status)}\t{description}")
    return "\n".join(lines)

"""The research memory: what an LLM agent knows of its run besides the current train.py, bounded in tokens.

`render_memory(context, budget_tokens)` writes it as one text, the same for every agent: the in-process agents
put it in their first message (runner/agents/prompt.py), the coding-agent CLIs read it from a file. Its
sections, in the order they claim the budget:

1. the best val_bpb, the last experiment's summary and, when it failed, the end of its log;
2. what is training now (several slots), or proposed and waiting for a slot;
3. the history, newest first: seq, commit, val_bpb, delta (val_bpb minus the best's when it was judged; negative
   is better), status, description. Cut, it keeps the newest FIRST_ROWS rows, every keep, then the newest of the
   others that fit, and counts the rows it leaves out by status in one line;
4. the recent changes: the diffs of recent keeps and near misses against their parents, newest first;
5. the agent's notes, which it keeps between proposals.

Each section is cut to what is left of the budget, the history and the changes first to at most SHARES of it
(so that a long run still leaves room for the notes); what the sections leave over then goes, in the same
order, to the ones that were cut. Tokens are estimated, not counted (a tokenizer such as tiktoken would
download its vocabulary): `estimate_tokens` counts one token per 3 bytes of UTF-8, rounded up, more than real
tokenizers need for English and code (about 4 characters a token), so the text stays within its budget.

The summary is what the store recorded of the experiment, nothing measured anew: the final training loss is
its last progress point's; tokens/s and MFU are the medians over its progress points (the median passes over
the first step's compile); the peak memory is train.py's report, else the host's measure. The loss curve
flattened at the first progress point after which the best loss so far fell by less than FLAT_FRACTION of its
whole fall (from the first point's loss to the lowest). A figure the store lacks reads "not recorded".

Everything a candidate or an agent wrote (descriptions, diffs, the log, the notes) enters as data
(runner/record/untrusted.py), with every `</` in it written `<\\/`: the log, the diffs and the notes are quoted
in blocks (<log>, <diff>, <notes>) that nothing in them can close.
"""

import itertools
import math
import statistics
from collections import Counter
from collections.abc import Callable, Sequence

from autoresearch.runner.agents.base import Change, ExperimentSummary, HistoryRow, ProposalContext
from autoresearch.runner.record import store, views
from autoresearch.runner.record.status import Status
from autoresearch.runner.record.untrusted import DESCRIPTION_CHARS, as_data, escaped, tail_as_data

FAILURE_TAIL_CHARS = 4000  # the end of the last failed experiment's log, at most
CHANGE_DIFF_CHARS = 3000  # one change's diff, at most
MIN_CUT_CHARS = 200  # a log, diff or notes that would be cut shorter than this is left out instead
FLAT_FRACTION = 0.05  # the loss curve flattened once the best loss fell by less than this of its whole fall after
FLAT_MIN_POINTS = 3  # progress points with a loss needed to say where the curve flattened
FIRST_ROWS = 10  # the newest rows of a table, shown before the history's keeps claim the rest
SHARES = {"history": 0.35, "changes": 0.35}  # the most of the budget these sections take before the rest had theirs
SEPARATOR = "\n\n"
MISSING = "not recorded"
TABLE_HEADER = "seq\tcommit\tval_bpb\tdelta\tstatus\tdescription"


def estimate_tokens(text: str) -> int:
    """A conservative estimate of text's tokens: one per 3 bytes of UTF-8, rounded up."""
    return math.ceil(len(text.encode()) / 3)


def render_memory(context: ProposalContext, budget_tokens: int) -> str:
    """The memory as text, at most budget_tokens by estimate_tokens (see the module docstring)."""
    sections: dict[str, Callable[[ProposalContext, int], str]] = {
        "summary": _summary_section, "in flight": _in_flight_section, "history": _history_section,
        "changes": _changes_section, "notes": _notes_section}
    room = budget_tokens - estimate_tokens(SEPARATOR) * (len(sections) - 1)
    texts: dict[str, str] = {}
    for name, render in sections.items():
        left = room - sum(map(estimate_tokens, texts.values()))
        texts[name] = render(context, min(left, math.floor(budget_tokens * SHARES.get(name, 1.0))))
    for name, render in sections.items():  # what is left over, to the sections their share cut
        left = room - sum(map(estimate_tokens, texts.values()))
        if left <= 0:
            break
        texts[name] = render(context, estimate_tokens(texts[name]) + left)
    return SEPARATOR.join(text for text in texts.values() if text)


# --- what the loop reads from the record --------------------------------------------------------------------


def history_row(experiment: store.Experiment) -> HistoryRow:
    """An experiment as a history row, with its delta from the best when it was judged (its judge_json)."""
    best = (experiment.judge_json or {}).get("best_bpb")
    judged = isinstance(best, int | float) and experiment.val_bpb is not None
    return HistoryRow(experiment.seq, (experiment.commit_sha or "-")[:7], experiment.val_bpb, experiment.status,
                      experiment.description, experiment.val_bpb - best if judged else None)  # type: ignore[operator]


def change(experiment: store.Experiment, diff: str) -> Change:
    """A kept or near-miss experiment as a change, with its diff against its parent."""
    near = views.near_miss(experiment)
    gain = (experiment.judge_json or {}).get("gain_over_parent" if near else "gain")
    return Change(experiment.seq, experiment.description, near, gain if isinstance(gain, int | float) else None,
                  diff)


def summarize(experiment: store.Experiment, points: Sequence[store.MetricPoint]) -> ExperimentSummary:
    """What the store recorded of an experiment's training (its row and its progress points)."""
    flat = flattened(points)
    return ExperimentSummary(
        seq=experiment.seq, status=experiment.status, description=experiment.description, val_bpb=experiment.val_bpb,
        final_loss=next((p.loss for p in reversed(points) if p.loss is not None), None),
        tok_per_s=_median([p.tok_per_s for p in points]), mfu_percent=_median([p.mfu for p in points]),
        peak_memory_mb=views.memory_mb(experiment), training_seconds=experiment.training_seconds, steps=len(points),
        flat_step=flat.step if flat else None, flat_elapsed=flat.elapsed if flat else None)


def flattened(points: Sequence[store.MetricPoint]) -> store.MetricPoint | None:
    """The first progress point after which the best loss so far fell by less than FLAT_FRACTION of its whole fall
    (the first point's loss minus the lowest); None with fewer than FLAT_MIN_POINTS losses, or no fall at all."""
    scored = [p for p in points if p.loss is not None]
    if len(scored) < FLAT_MIN_POINTS:
        return None
    lowest = min(p.loss for p in scored)  # type: ignore[type-var]
    fall = scored[0].loss - lowest  # type: ignore[operator]
    if fall <= 0:
        return None
    bests = itertools.accumulate((p.loss for p in scored), min)  # type: ignore[type-var]
    return next(p for p, best in zip(scored, bests, strict=True) if best - lowest <= FLAT_FRACTION * fall)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# --- the sections -------------------------------------------------------------------------------------------


def _summary_section(context: ProposalContext, tokens: int) -> str:
    best = "none yet" if context.best_val_bpb is None else f"{context.best_val_bpb:.6f}"
    lines = [f"Best val_bpb so far: {best}"]
    if context.last_summary is not None:
        lines += summary_lines(context.last_summary)
    text = _lines_fitting(lines, tokens)
    if text and context.last_failure:
        failure = context.last_failure

        def block(limit: int) -> str:
            log = _quoted(tail_as_data(failure, limit))
            return f"\nThe last experiment failed; the end of its log:\n<log>\n{log}\n</log>"

        text += _largest_fitting(block, FAILURE_TAIL_CHARS, tokens - estimate_tokens(text))
    return text


def summary_lines(summary: ExperimentSummary) -> list[str]:
    """The last experiment's figures, one a line ("not recorded" where the store has none)."""
    bpb = MISSING if summary.val_bpb is None else f"{summary.val_bpb:.6f}"
    if summary.flat_step is None:
        flat = f"{MISSING} (fewer than {FLAT_MIN_POINTS} progress points, or the loss never fell)"
    else:
        of = "" if summary.training_seconds is None else f" of {summary.training_seconds:.1f} s"
        at = "" if summary.flat_elapsed is None else f", {summary.flat_elapsed:.1f} s{of} into training"
        flat = (f"flattened at step {summary.flat_step}{at}: after it the best loss fell by less than "
                f"{FLAT_FRACTION:.0%} of its whole fall")
    return [
        f"The last experiment: #{summary.seq}, {escaped(summary.status)}, val_bpb {bpb}: "
        f"{_description(summary.description)}",
        f"  final training loss: {_number(summary.final_loss, '{:.6f}')}",
        f"  tokens/s: {_number(summary.tok_per_s, f'{{:,.0f}} (median of {summary.steps} progress points)')}",
        f"  MFU: {_number(summary.mfu_percent, '{:.1f}% (median)')}",
        f"  peak memory: {_number(summary.peak_memory_mb, '{:,.0f} MB')}",
        f"  loss curve: {flat}",
    ]


def _in_flight_section(context: ProposalContext, tokens: int) -> str:
    if not context.in_flight:
        return ""
    return _table_fitting("Training now (do not propose these again; their results come later):",
                          context.in_flight, tokens)


def _history_section(context: ProposalContext, tokens: int) -> str:
    title = "History, newest first (delta: val_bpb minus the best's when it was judged; negative is better):"
    if not context.history:
        return _lines_fitting([title, history_table([])], tokens)
    return _table_fitting(title, list(reversed(context.history)), tokens, pinned=lambda row: row.status == Status.KEEP)


def _changes_section(context: ProposalContext, tokens: int) -> str:
    text = "Recent changes, newest first: each one's train.py against its parent."
    if not context.recent_changes or estimate_tokens(text) > tokens:
        return ""
    shown = 0
    for item in context.recent_changes:
        block = _largest_fitting(lambda limit, c=item: _change_block(c, limit), CHANGE_DIFF_CHARS,
                                 tokens - estimate_tokens(text))
        if not block:
            break
        text, shown = text + block, shown + 1
    return text if shown else ""


def _change_block(item: Change, limit: int) -> str:
    description = _description(item.description)
    gain = "" if item.gain is None else f" by {item.gain:.6f} bpb"
    if item.near_miss:
        head = (f"Near miss #{item.seq} ({description}) beat its parent{gain}, but the best moved on meanwhile; "
                "consider porting it:")
    else:
        head = f"Kept #{item.seq} ({description}): it beat the best before it{gain}:"
    diff = _quoted(as_data(item.diff.rstrip("\n"), limit, keep_newlines=True))
    return f"\n\n{head}\n<diff>\n{diff}\n</diff>"


def _notes_section(context: ProposalContext, tokens: int) -> str:
    if not context.notes:
        return _lines_fitting(["Your notes: (none yet)"], tokens)
    notes = context.notes

    def block(limit: int) -> str:
        text = _quoted(as_data(notes, limit, keep_newlines=True))
        return f"Your notes, kept between proposals:\n<notes>\n{text}\n</notes>"

    return _largest_fitting(block, store.NOTES_CHARS, tokens)


# --- fitting text into tokens -------------------------------------------------------------------------------


def _lines_fitting(lines: list[str], tokens: int) -> str:
    """The first of lines that fit in tokens together, one a line."""
    text = ""
    for line in lines:
        longer = f"{text}\n{line}" if text else line
        if estimate_tokens(longer) > tokens:
            break
        text = longer
    return text


def _table_fitting(title: str, rows: list[HistoryRow], tokens: int,
                   pinned: Callable[[HistoryRow], bool] = lambda row: False) -> str:
    """title and rows (newest first) as a table in tokens: the first FIRST_ROWS rows, then the pinned ones, then the
    others in order while they fit; the rows left out are counted by status in a last line. "" when no row fits."""
    lines = [history_line(row) for row in rows]
    left = tokens - estimate_tokens(f"{title}\n{TABLE_HEADER}") - estimate_tokens("\n" + _left_out(rows))
    if left < 0:
        return ""
    ranks = [0 if i < FIRST_ROWS else 1 if pinned(row) else 2 for i, row in enumerate(rows)]
    shown: set[int] = set()
    for index in sorted(range(len(rows)), key=lambda i: (ranks[i], i)):
        cost = estimate_tokens("\n" + lines[index])
        if cost > left:
            if ranks[index] == 2:  # the others are left out from the first that does not fit: the older ones
                break
            continue
        shown.add(index)
        left -= cost
    if not shown:
        return ""
    dropped = [row for i, row in enumerate(rows) if i not in shown]
    table = [title, history_table([rows[i] for i in sorted(shown)])]
    return "\n".join(table + ([_left_out(dropped)] if dropped else []))


def _left_out(rows: list[HistoryRow]) -> str:
    counts = ", ".join(f"{n} {escaped(status)}" for status, n in Counter(row.status for row in rows).items())
    return f"({len(rows)} more not shown: {counts})"


def history_table(rows: list[HistoryRow]) -> str:
    """rows as tab-separated lines under a header, like results.tsv; '(none yet)' when empty."""
    if not rows:
        return "(none yet)"
    return "\n".join([TABLE_HEADER, *map(history_line, rows)])


def history_line(row: HistoryRow) -> str:
    """One row of the history table, its agent-written text as data."""
    bpb = "-" if row.val_bpb is None else f"{row.val_bpb:.6f}"
    delta = "-" if row.delta is None else f"{row.delta:+.6f}"
    description = _description(row.description)
    return f"{row.seq}\t{escaped(row.commit)}\t{bpb}\t{delta}\t{escaped(row.status)}\t{description}"


def _largest_fitting(render: Callable[[int], str], most: int, tokens: int) -> str:
    """render(limit) for the largest limit up to most whose text fits in tokens; "" when not even MIN_CUT_CHARS
    (or most, when smaller) does."""
    if estimate_tokens(render(most)) <= tokens:
        return render(most)
    low, high = MIN_CUT_CHARS, most - 1
    if low > high or estimate_tokens(render(low)) > tokens:
        return ""
    while low < high:  # render(low) fits, render(high + 1) does not
        middle = (low + high + 1) // 2
        if estimate_tokens(render(middle)) <= tokens:
            low = middle
        else:
            high = middle - 1
    return render(low)


def _quoted(text: str) -> str:
    """Text to quote in a block: no closing tag in it can end its block, or another one."""
    return text.replace("</", "<\\/")


def _description(text: str) -> str:
    """An experiment's description on one line, as data, with no closing tag in it."""
    return as_data(_quoted(text), DESCRIPTION_CHARS)


def _number(value: float | None, form: str) -> str:
    return MISSING if value is None else form.format(value)

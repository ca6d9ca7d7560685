"""What the drill-down shows about one experiment, read in one go (from a worker thread).

- the diff of train.py against the experiment's parent commit, from git;
- the agent's turns for its proposal (from agent_turns): what the model said and which tools it called;
- its training log: the head and the tail when the file is long (a log holds at most what the runner's
  capped log kept, but only LOG_PART_BYTES of each end are read here);
- its metric points, the best kept experiment's for comparison, and its findings;
- the notes the agent kept when it proposed it (agent_notes: those its proposal left, else an earlier one's).

The store hands out its untrusted text as data already; what is read here besides (the model's replies, the
log) is escaped on its way to the screen (runner/record/untrusted.py), and all of it is drawn as Text, not markup.
"""

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch.runner.errors import UserError
from autoresearch.runner.record import gitrepo, store
from autoresearch.runner.record.untrusted import as_data, escaped
from autoresearch.runner.workspace import Workspace
from autoresearch.tui import queries

LOG_PART_BYTES = 64 * 1024
TOOL_INPUT_CHARS = 300


@dataclass(frozen=True)
class Detail:
    """Everything the drill-down shows; each `*_note` says why its part is empty, when it is."""

    experiment: store.Experiment
    diff: str = ""
    diff_note: str = ""
    turns: tuple[queries.AgentTurn, ...] = ()
    log_lines: tuple[str, ...] = ()
    log_note: str = ""
    points: tuple[store.MetricPoint, ...] = ()
    best_points: tuple[store.MetricPoint, ...] = ()
    findings: tuple[store.StoredFinding, ...] = field(default_factory=tuple)
    notes: str = ""
    notes_note: str = ""


def load_detail(ws: Workspace, experiment: store.Experiment, best_id: int | None) -> Detail:
    """Read the experiment again, with its diff, turns, log, points, findings and the agent's notes."""
    conn = store.open_store(ws.store_path, readonly=True)
    try:
        experiment = store.get_experiment(conn, experiment.id) or experiment  # it may have moved on
        diff, diff_note = read_diff(ws.root, experiment)
        log_lines, log_note = read_log(experiment)
        notes, notes_note = read_notes(conn, experiment)
        return Detail(
            experiment=experiment, diff=diff, diff_note=diff_note,
            turns=tuple(queries.agent_turns(conn, experiment.id)), log_lines=log_lines, log_note=log_note,
            points=tuple(store.metric_points(conn, experiment.id, since_step=-(2**63))),
            best_points=tuple(store.metric_points(conn, best_id, since_step=-(2**63))) if best_id else (),
            findings=tuple(store.list_findings(conn, experiment.id)), notes=notes, notes_note=notes_note,
        )
    finally:
        conn.close()


def read_diff(root: Path, experiment: store.Experiment) -> tuple[str, str]:
    """The unified diff of train.py from the parent commit, or ("", why there is none)."""
    if not experiment.commit_sha:
        return "", "Never committed: the policy blocked this candidate before it ran (see its findings)."
    if not experiment.parent_sha:
        return "", f"Commit {experiment.commit_sha[:8]} has no recorded parent."
    try:
        diff = gitrepo.diff_text(gitrepo.open_repo(root), experiment.parent_sha, experiment.commit_sha)
    except UserError as exc:
        return "", f"Cannot read the diff: {exc}"
    return diff, "" if diff else "train.py is unchanged from its parent (the baseline, or a re-run)."


def read_notes(conn: sqlite3.Connection, experiment: store.Experiment) -> tuple[str, str]:
    """The notes the agent kept when it proposed the experiment and where they come from, or ("", why none)."""
    kept = store.notes_at(conn, experiment.id)
    if kept is None:
        return "", "The agent had kept no notes by then."
    if kept.experiment_id == experiment.id:
        return kept.text, "as its proposal left them" if kept.text else "its proposal cleared them"
    earlier = store.get_experiment(conn, kept.experiment_id)
    since = f"#{earlier.seq}" if earlier else "an earlier proposal"
    return kept.text, f"unchanged since {since}" if kept.text else f"cleared since {since}"


def read_log(experiment: store.Experiment) -> tuple[tuple[str, ...], str]:
    """The log's lines (head and tail when long, with a marker between), or ((), why there are none)."""
    if not experiment.log_path:
        return (), "No training log: the experiment never started a container."
    path = Path(experiment.log_path)
    try:
        with path.open("rb") as log:
            size = log.seek(0, 2)
            log.seek(0)
            if size <= 2 * LOG_PART_BYTES:
                return tuple(log.read().decode(errors="replace").splitlines()), ""
            head = log.read(LOG_PART_BYTES).decode(errors="replace").splitlines()[:-1]
            log.seek(size - LOG_PART_BYTES)
            tail = log.read().decode(errors="replace").splitlines()[1:]
    except OSError as exc:
        return (), f"Cannot read the log {path}: {exc.strerror}"
    skipped = size - 2 * LOG_PART_BYTES
    return (*head, f"[… {skipped:,} bytes not shown …]", *tail), ""


def turn_lines(turn: queries.AgentTurn) -> list[tuple[str, str]]:
    """(style, text) lines of one model call: its usage, what the model wrote, the tools it called."""
    tokens = f"{turn.input_tokens or 0:,} in / {turn.output_tokens or 0:,} out"
    cost = f"${turn.cost_usd:.4f}" if turn.cost_usd is not None else "–"
    latency = f"{turn.latency_s:.1f} s" if turn.latency_s is not None else "–"
    lines = [("bold", f"{turn.model} · {tokens} · {cost} · {latency}")]
    if turn.error:
        lines.append(("red", f"error: {as_data(turn.error)}"))
    content = turn.response_json.get("content") if isinstance(turn.response_json, dict) else None
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            lines.append(("", escaped(str(block.get("text", "")), keep_newlines=True)))
        elif block.get("type") == "tool_use":
            arguments = escaped(json.dumps(block.get("input"), ensure_ascii=False))
            if len(arguments) > TOOL_INPUT_CHARS:
                arguments = arguments[:TOOL_INPUT_CHARS] + f"… ({len(arguments):,} characters)"
            lines.append(("cyan", f"→ {escaped(str(block.get('name')))}({arguments})"))
    return lines

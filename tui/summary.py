"""The header: the run (tag, state, elapsed, agent, spend), its counts, and the best val_bpb with its gain.

A run whose experiments ran without isolation (the process sandbox) says so right after its state, in
red, before anything that may be cut to fit.

Its state is worked out at each redraw from the run's heartbeat and the injected clock, so a runner that
dies shows as dead even though the store, with nobody writing, stays the same. It redraws once a second
while a run is live (for the elapsed time), and otherwise only when the snapshot changes.
"""

from collections import Counter
from collections.abc import Callable

from rich.text import Text
from textual.widget import Widget

from autoresearch.runner.record.status import CRASHED, DEAD, LIVE, OPEN, RunState, Status
from autoresearch.runner.record.views import heartbeat_age, run_state
from autoresearch.tui import format as fmt
from autoresearch.tui.snapshot import Snapshot

TICK_S = 1.0


def header_text(snapshot: Snapshot | None, now: float, width: int) -> Text:
    """Two lines: run, state, elapsed, agent and dollars, then the best val_bpb; then the counts."""
    if snapshot is None:
        return Text("reading the store…", style="dim")
    if snapshot.error or not snapshot.store_exists or snapshot.run is None:
        word = "store unreadable" if snapshot.error else "no run yet"
        return Text.assemble(("autoresearch ", "bold"), (word, "bold red" if snapshot.error else "dim"))
    return _line(_run_parts(snapshot, now), _best(snapshot), width) + Text("\n") + _counts(snapshot, now, width)


def _run_parts(snapshot: Snapshot, now: float) -> list[Text]:
    run = snapshot.run
    assert run is not None
    state = run_state(run, now)
    end = run.ended_at if state not in LIVE and state != DEAD else None
    end = end or (run.heartbeat_at if state == DEAD else None) or now
    agent = snapshot.model or f"{run.agent} agent"
    warning = fmt.sandbox_warning(run.sandbox)
    return [Text(run.tag, style="bold"), Text(state, style=fmt.RUN_STATE_STYLES.get(state, "bold")),
            *([warning] if warning else []), Text(fmt.duration(end - run.started_at)),
            Text(f"${snapshot.spent_usd:.2f}"), Text(agent, style="cyan")]


def _best(snapshot: Snapshot) -> Text:
    best, baseline = snapshot.best, snapshot.baseline
    if best is None or best.val_bpb is None:
        return Text("best val_bpb –", style="dim")
    text = Text("best ").append(fmt.bpb(best.val_bpb), style="bold green")
    if baseline is not None and baseline.val_bpb is not None and baseline.id != best.id:
        text.append(f" {fmt.gain(baseline.val_bpb - best.val_bpb)}", style="green")
    return text


def _line(parts: list[Text], right: Text, width: int) -> Text:
    """parts joined by two spaces on the left, right on the right; trailing parts dropped to fit."""
    while parts:
        left = Text("  ").join(parts)
        if left.cell_len + right.cell_len + 2 <= width or len(parts) == 1:
            return left + Text(" " * max(width - left.cell_len - right.cell_len, 2)) + right
        parts = parts[:-1]
    return right


def _counts(snapshot: Snapshot, now: float, width: int) -> Text:
    """Why the run is not going (when it is not), then the counts by outcome; cut to width."""
    statuses = Counter(snapshot.counts)
    active = sum(statuses[s] for s in OPEN)
    violations = statuses[Status.VIOLATION]
    counts = (("done", len(snapshot.experiments) - active, "bold"), ("kept", statuses[Status.KEEP], "green"),
              ("discarded", statuses[Status.DISCARD], ""), ("crashed", sum(statuses[s] for s in CRASHED), "red"),
              ("blocked", statuses[Status.BLOCKED], "magenta"),
              ("violation" if violations == 1 else "violations", violations, "bold red"))
    text = _note(snapshot, now)
    for index, (label, count, style) in enumerate(counts):
        if count or index < 2:
            text.append(" · " if text else "").append(str(count), style=style if count else "").append(f" {label}")
    text.truncate(width, overflow="ellipsis")
    return text


def _note(snapshot: Snapshot, now: float) -> Text:
    """Why the run is not going: dead (and how long since its heartbeat), or the note it ended with."""
    run = snapshot.run
    assert run is not None
    state = run_state(run, now)
    if state == DEAD:
        age = heartbeat_age(run, now)
        since = f" {fmt.duration(age)} ago" if age is not None else ""
        return Text(f"runner died (last heartbeat{since}): n resumes it", style="bold red")
    if state == RunState.RUNNING or not run.note:
        return Text()
    return Text(f"{state}: {run.note}", style="dim")


class SummaryBar(Widget):
    """The two header lines."""

    DEFAULT_CSS = "SummaryBar { height: 2; padding: 0 1; background: $panel; }"

    def __init__(self, clock: Callable[[], float], **kwargs) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self._snapshot: Snapshot | None = None

    def on_mount(self) -> None:
        self.set_interval(TICK_S, self._tick)

    def show(self, snapshot: Snapshot) -> None:
        if snapshot is not self._snapshot:
            self._snapshot = snapshot
            self.refresh()

    def _tick(self) -> None:
        run = self._snapshot.run if self._snapshot else None
        if run is not None and run.state in LIVE:
            self.refresh()

    def render(self) -> Text:
        return header_text(self._snapshot, self.clock(), self.content_region.width)

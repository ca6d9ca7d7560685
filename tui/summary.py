"""The summary bar at the top: which workspace, how its experiments ended, the best trusted score."""

from rich.text import Text
from textual.widgets import Static

from autoresearch.runner.workspace import Workspace
from autoresearch.tui import format as fmt
from autoresearch.tui.snapshot import Snapshot, summarize


def summary_text(ws: Workspace, snapshot: Snapshot | None, width: int) -> Text:
    """Two lines: the workspace and the best trusted val_bpb (6 decimals); then the counts."""
    best = _best(snapshot)
    scratch = " (scratch)" if ws.is_scratch else ""
    room = max(width - len("autoresearch ") - len(scratch) - best.cell_len - 2, 10)
    text = Text()
    text.append("autoresearch ", style="bold")
    text.append(fmt.short_path(ws.root, room) + scratch)
    text.append(" " * max(width - text.cell_len - best.cell_len, 2))
    text.append_text(best)
    text.append("\n")
    if snapshot is None:
        return text.append("reading the store…", style="dim")
    if snapshot.error:
        return text.append("store unreadable", style="bold red")
    s = summarize(snapshot.experiments)
    counts = (("done", s.done, "bold"), ("ok", s.ok, "green"), ("crashed", s.crashed, "red"),
              ("blocked", s.blocked, "magenta"), ("violation", s.violation, "bold red"),
              ("running", s.running, "bold yellow"))
    for index, (label, count, style) in enumerate(counts):
        text.append(" · " if index else "")
        text.append(f"{label} ")
        text.append(str(count), style=style if count else "")
    return text


def _best(snapshot: Snapshot | None) -> Text:
    """`best val_bpb 0.997900 (#7)`: the lowest trusted score of an ok or kept experiment."""
    best = summarize(snapshot.experiments).best if snapshot is not None else None
    text = Text("best val_bpb ")
    if best is None:
        return text.append(fmt.MISSING, style="dim")
    return text.append(fmt.bpb(best.val_bpb), style="bold green").append(f" (#{best.id})", style="dim")


class SummaryBar(Static):
    """The two header lines."""

    DEFAULT_CSS = "SummaryBar { height: 2; padding: 0 1; background: $panel; }"

    def __init__(self, ws: Workspace, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ws = ws
        self._snapshot: Snapshot | None = None

    def show(self, snapshot: Snapshot) -> None:
        if snapshot != self._snapshot:
            self._snapshot = snapshot
            self.update(summary_text(self.ws, snapshot, self.size.width - 2))

    def on_resize(self) -> None:
        self.update(summary_text(self.ws, self._snapshot, self.size.width - 2))

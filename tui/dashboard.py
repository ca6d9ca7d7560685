"""The dashboard: header, loss and GPU panels, and the history, leaderboard, progress and fleet views.

At 80x24 (compact) one view shows at a time, switched with 1, 2, 3 and 4; from FULL_SIZE on, the first
three show at once, and a run on several slots (or nodes) shows its fleet above them: a lane per slot and
a nodes panel (4 shows it for a one-slot run too). Steering keys queue commands in the store for the
runner (see runner/control.py) from a worker thread, since the runner's acknowledgement takes up to a
second; the ones that end or kill something ask first, and none of them exists in a read-only viewer.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from autoresearch.runner import control
from autoresearch.runner.errors import UserError
from autoresearch.runner.record.status import LIVE
from autoresearch.runner.record.store import Experiment, Run, open_store
from autoresearch.runner.record.views import run_state, shown_name
from autoresearch.runner.report.queries import first_line
from autoresearch.runner.workspace import Workspace
from autoresearch.tui.checks import DOCTOR_ARGV
from autoresearch.tui.confirm import ConfirmScreen
from autoresearch.tui.editor import edit
from autoresearch.tui.export import export_train_py
from autoresearch.tui.gpu import GpuPanel
from autoresearch.tui.history import HistoryTable
from autoresearch.tui.lanes import LaneTable
from autoresearch.tui.leaderboard import LeaderboardTable
from autoresearch.tui.loss import LossPanel
from autoresearch.tui.nodes import NodesPanel
from autoresearch.tui.progress import ProgressChart
from autoresearch.tui.rows import RowTable
from autoresearch.tui.snapshot import Snapshot
from autoresearch.tui.start import DEFAULT_TAG, StartRunScreen
from autoresearch.tui.summary import SummaryBar

FULL_SIZE = (150, 40)
VIEWS = {"history": "1 history", "leaderboard": "2 leaderboard", "progress": "3 val_bpb progress",
         "fleet": "4 slots"}
FLEET_MAX_HEIGHT = 14  # the fleet row at full size: its lanes (or nodes) and borders, up to this many lines
CONFIRMED = {"stop", "skip"}  # the steering commands that end or kill something
# Actions a read-only viewer does not have: steering, and writing files into the workspace.
WRITES = {"steer", "start_run", "edit_program", "export", "write_progress"}
PROGRESS_PNG = "progress.png"  # what w writes, in the workspace folder
NO_RUN = ("No run in this workspace yet.\n\nPress n to start the research loop in the background "
          "(`autoresearch run --detach`); it goes on after you quit this view.")
NO_RUN_READONLY = "No run in this workspace yet.\n\nStart one with `autoresearch run --detach`."


class DashboardScreen(Screen[None]):
    """The live view of one run."""

    DEFAULT_CSS = """
    DashboardScreen #notice { height: 1fr; content-align: center middle; text-align: center; padding: 1 4; }
    DashboardScreen #live { height: 10; }
    DashboardScreen #loss { width: 2fr; }
    DashboardScreen #gpu { width: 1fr; min-width: 28; }
    DashboardScreen #views { height: 1fr; }
    DashboardScreen .view { border: round $secondary; border-title-color: $text; height: 1fr; }
    DashboardScreen .view:focus-within { border: round $accent; }
    DashboardScreen #progress-view { padding: 0 1; }
    DashboardScreen.-compact .view { display: none; }
    DashboardScreen.-compact .view.-current { display: block; }
    DashboardScreen.-full #live { height: 2fr; }
    DashboardScreen.-full #views { height: 3fr; layout: grid; grid-size: 2 2; grid-columns: 3fr 2fr; }
    DashboardScreen.-full #history-view { row-span: 2; }
    DashboardScreen.-empty #live, DashboardScreen.-empty #views, DashboardScreen.-empty #fleet-view {
        display: none; }
    DashboardScreen #fleet-view { display: none; }
    DashboardScreen.-compact #fleet-view.-current { display: block; layout: vertical; }
    DashboardScreen.-compact.-fleet-current #views { display: none; }
    DashboardScreen #lanes-pane { height: 1fr; }
    DashboardScreen #nodes-pane { height: auto; max-height: 6; border-top: solid $secondary;
        border-title-color: $text-muted; }
    DashboardScreen.-full.-fleet-shown #fleet-view { display: block; layout: horizontal; border: none; }
    DashboardScreen.-full #lanes-pane { width: 2fr; height: 1fr; border: round $secondary;
        border-title-color: $text; }
    DashboardScreen.-full #lanes-pane:focus-within { border: round $accent; }
    DashboardScreen.-full #nodes-pane { width: 1fr; min-width: 40; height: 1fr; max-height: 100%;
        border: round $secondary; border-title-color: $text; }
    DashboardScreen #notice { display: none; }
    DashboardScreen.-empty #notice { display: block; }
    """
    BINDINGS: list[BindingType] = [  # noqa: RUF012 (Textual's own declaration style)
        Binding("p", "steer('pause')", "Pause", tooltip="Pause the run after the current experiment",
                id="dashboard.pause"),
        Binding("r", "steer('resume')", "Resume", tooltip="Resume a paused run", id="dashboard.resume"),
        Binding("s", "steer('stop')", "Stop", tooltip="Stop the run after the current experiment (asks first)",
                id="dashboard.stop"),
        Binding("k", "steer('skip')", "Skip",
                tooltip="Skip: kill the running experiment, record it and go on (asks first)", id="dashboard.skip"),
        Binding("n", "start_run", "Start run", tooltip="Start the run, or resume a stopped or dead one (asks first)",
                id="dashboard.start"),
        Binding("e", "edit_program", "Edit program.md", show=False,
                tooltip="Edit program.md in $EDITOR: the agent reads it at its next proposal", id="dashboard.edit"),
        Binding("x", "export", "Export", show=False,
                tooltip="Export the selected experiment's train.py to .autoresearch/exports/", id="dashboard.export"),
        Binding("a", "audit", "Audit", show=False, tooltip="All findings of the run, with evidence",
                id="dashboard.audit"),
        Binding("w", "write_progress", "Write progress.png", show=False,
                tooltip=f"Write the run's progress chart to {PROGRESS_PNG} in the workspace folder",
                id="dashboard.plot"),
        Binding("1", "view('history')", "History", show=False, tooltip="Every experiment, newest first",
                id="dashboard.history"),
        Binding("2", "view('leaderboard')", "Leaderboard", show=False, tooltip="Kept commits, best first",
                id="dashboard.leaderboard"),
        Binding("3", "view('progress')", "Progress", show=False,
                tooltip="val_bpb of every experiment, the kept frontier as a step line, failures marked above it",
                id="dashboard.progress"),
        Binding("4", "view('fleet')", "Slots", show=False,
                tooltip="A lane per slot (what it runs, its live loss) and the nodes", id="dashboard.fleet"),
    ]

    class Open(Message):
        """Open the drill-down of an experiment."""

        def __init__(self, experiment: Experiment) -> None:
            super().__init__()
            self.experiment = experiment

    class Follow(Message):
        """Show the run with this tag from now on."""

        def __init__(self, tag: str) -> None:
            super().__init__()
            self.tag = tag

    class Audit(Message):
        """Open the audit view of the shown run."""

    def __init__(self, ws: Workspace, clock: Callable[[], float], readonly: bool,
                 doctor: Sequence[str] | None = DOCTOR_ARGV) -> None:
        """doctor: the command whose checks the offer to start a run shows (None: none)."""
        super().__init__()
        self.ws, self.clock, self.readonly, self.doctor = ws, clock, readonly, doctor
        self.snapshot: Snapshot | None = None
        self.view = "history"
        self._shown_state: str | None = None
        self._slot_source: tuple[Experiment, ...] = ()
        self._slot_map: dict[int, str] = {}

    def compose(self) -> ComposeResult:
        yield SummaryBar(self.clock, id="summary")
        yield Static(id="notice", markup=False)
        with Horizontal(id="live"):
            yield LossPanel(id="loss")
            yield GpuPanel(self.clock, id="gpu")
        with Container(id="fleet-view", classes="view"):
            with Vertical(id="lanes-pane"):
                yield LaneTable(self.clock, id="fleet")
            with Vertical(id="nodes-pane"):
                yield NodesPanel(self.clock, id="nodes")
        with Container(id="views"):
            with Vertical(id="history-view", classes="view -current"):
                yield HistoryTable(id="history")
            with Vertical(id="leaderboard-view", classes="view"):
                yield LeaderboardTable(id="leaderboard")
            with Vertical(id="progress-view", classes="view"):
                yield ProgressChart(id="progress")
        yield Footer()

    def on_mount(self) -> None:
        self.notice("Reading the store…")
        self.set_interval(1.0, self._check_state)
        self._fit()
        self.query_one(HistoryTable).focus()

    def on_resize(self) -> None:
        self._fit()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Writes do not exist in a read-only viewer; steering is greyed out while no runner is alive."""
        if self.readonly and action in WRITES:
            return False
        if action == "steer":
            return True if self._state() in LIVE else None
        if action == "start_run":
            return True if self._state() not in LIVE else None
        return True

    def _check_state(self) -> None:
        """Grey out or enable the steering keys when the run's state changed (a runner also dies silently)."""
        state = self._state()
        if state != self._shown_state:
            self._shown_state = state
            self.refresh_bindings()

    def _state(self) -> str | None:
        run = self.snapshot.run if self.snapshot else None
        return run_state(run, self.clock()) if run else None

    # --- showing ----------------------------------------------------------------------------------

    def notice(self, text: str | Text) -> None:
        """Show text instead of the panels (no run, an unreadable store, not a workspace)."""
        self.add_class("-empty")
        self.query_one("#notice", Static).update(text)

    def show(self, snapshot: Snapshot) -> None:
        """Show a snapshot; each panel redraws only what changed in it."""
        self.snapshot = snapshot
        self._check_state()
        self.query_one(SummaryBar).show(snapshot)
        if snapshot.error:
            self.notice(Text(f"Cannot read the store.\n\n{snapshot.error}", style="bold red"))
            return
        if snapshot.run is None:
            self.notice(NO_RUN_READONLY if self.readonly else NO_RUN)
            return
        self.remove_class("-empty")
        live = snapshot.live
        if live is None:
            self.query_one(LossPanel).waiting("waiting for the first experiment (the runner prepares the data)…")
        else:
            self.query_one(LossPanel).show(live, snapshot.live_points, snapshot.best, snapshot.best_points,
                                           snapshot.budget_s)
        self.query_one(GpuPanel).show(snapshot.gpu, self._slots_of(snapshot))
        self.query_one(HistoryTable).show(snapshot.experiments)
        self.query_one(LeaderboardTable).show(snapshot.experiments)
        self.query_one(ProgressChart).show(snapshot.experiments)
        self.query_one(LaneTable).show(snapshot.lanes, snapshot.gpu, snapshot.nodes, snapshot.budget_s)
        self.query_one(NodesPanel).show(snapshot.run, snapshot.nodes, snapshot.gpu)
        self._fit()

    def _slots_of(self, snapshot: Snapshot) -> dict[int, str]:
        """The slot of each experiment of a run on several slots (the GPU panel groups samples by it)."""
        if not snapshot.multi_slot:
            return {}
        if snapshot.experiments is not self._slot_source:
            self._slot_source = snapshot.experiments
            self._slot_map = {e.id: shown_name(e.slot) for e in snapshot.experiments if e.slot is not None}
        return self._slot_map

    def _fit(self) -> None:
        full = self.size.width >= FULL_SIZE[0] and self.size.height >= FULL_SIZE[1]
        self.set_class(full, "-full")
        self.set_class(not full, "-compact")
        multi = self.snapshot is not None and self.snapshot.multi_slot
        self.set_class(full and (multi or self.view == "fleet"), "-fleet-shown")
        self.set_class(self.view == "fleet", "-fleet-current")
        fleet = self.query_one("#fleet-view")
        if full and self.snapshot is not None:
            rows = max(len(self.snapshot.lanes) + 1, len(self.snapshot.nodes), 1)
            fleet.styles.height = min(rows + 2, FLEET_MAX_HEIGHT)
        else:
            fleet.styles.height = "1fr"
        self._titles()

    def _titles(self) -> None:
        compact = self.has_class("-compact")
        for name, label in VIEWS.items():
            if compact:
                title = " · ".join(f"[b reverse] {text} [/]" if key == name else text for key, text in VIEWS.items())
            else:
                title = label
            self.query_one(f"#{name}-view").border_title = title
        self.query_one("#lanes-pane").border_title = None if compact else VIEWS["fleet"]
        self.query_one("#nodes-pane").border_title = "nodes"

    # --- choosing ---------------------------------------------------------------------------------

    def action_view(self, name: str) -> None:
        self.view = name
        for key in VIEWS:
            self.query_one(f"#{key}-view").set_class(key == name, "-current")
        self._fit()
        if name != "progress":
            self.query_one(f"#{name}", RowTable).focus()

    def selected(self) -> Experiment | None:
        """The experiment under the cursor of the focused table (the history's when neither is focused)."""
        if self.snapshot is None:
            return None
        leaderboard = self.query_one(LeaderboardTable)
        if leaderboard.has_focus and leaderboard.cursor_key is not None:
            return next((e for e in self.snapshot.experiments if e.seq == leaderboard.cursor_key), None)
        lanes = self.query_one(LaneTable)
        if lanes.has_focus:
            lane = lanes.selected
            return lane.experiment if lane is not None else None
        key = self.query_one(HistoryTable).cursor_key
        return next((e for e in reversed(self.snapshot.experiments) if e.id == key), None)

    @on(RowTable.Chosen)
    def _chosen(self, event: RowTable.Chosen) -> None:
        event.stop()
        experiment = self.selected()
        if experiment is not None:
            self.post_message(self.Open(experiment))

    def action_audit(self) -> None:
        if self.snapshot is None or self.snapshot.run is None:
            self.notify("No run yet: nothing to audit.")
            return
        self.post_message(self.Audit())

    # --- steering ---------------------------------------------------------------------------------

    def action_steer(self, kind: str) -> None:
        run = self.snapshot.run if self.snapshot else None
        if run is None:
            self.notify(f"No run to {kind}.", severity="warning")
            return
        if kind not in CONFIRMED:
            self._send(kind, run.tag)
            return
        question = f"{kind.capitalize()} run {run.tag}?\n\nIf you confirm, {control.WHAT_HAPPENS[kind]}."
        self.app.push_screen(ConfirmScreen(question, kind.capitalize()),
                             callback=lambda yes: self._send(kind, run.tag) if yes else None)

    @work(thread=True, group="steer")
    def _send(self, kind: str, tag: str) -> None:
        try:
            message = control.send(self.ws, kind, tag)
        except UserError as exc:
            self.app.call_from_thread(self.notify, str(exc), title=kind, severity="warning")
            return
        self.app.call_from_thread(self.notify, message, title=kind)

    def action_start_run(self) -> None:
        """Offer to start (or resume) a run: only while none is alive (see check_action)."""
        run = self.snapshot.run if self.snapshot else None
        screen = StartRunScreen(self.ws, run.tag if run else DEFAULT_TAG, resumes=run is not None, doctor=self.doctor)
        self.app.push_screen(screen, callback=lambda tag: self._start(tag) if tag else None)

    @work(thread=True, exclusive=True, group="start")
    def _start(self, tag: str) -> None:
        try:
            pid, log = control.detach(self.ws, ["--tag", tag])
        except (UserError, OSError) as exc:
            self.app.call_from_thread(self.notify, str(exc), title="Cannot start the run", severity="error")
            return
        self.post_message(self.Follow(tag))
        self.app.call_from_thread(self.notify, f"Runner started (pid {pid}); its log: {log}", title=f"run {tag}")

    def action_edit_program(self) -> None:
        changed, message = edit(self.app, self.ws.root / "program.md")
        self.notify(message, severity="information" if changed else "warning")

    def action_export(self) -> None:
        experiment = self.selected()
        run = self.snapshot.run if self.snapshot else None
        if experiment is None or run is None:
            self.notify("No experiment selected.", severity="warning")
            return
        try:
            path = export_train_py(self.ws, run.tag, experiment)
        except (UserError, OSError) as exc:
            self.notify(str(exc), title="Cannot export", severity="error")
            return
        self.notify(f"train.py of #{experiment.seq} written to {path}", title="Exported")

    def action_write_progress(self) -> None:
        run = self.snapshot.run if self.snapshot else None
        if run is None:
            self.notify("No run yet: no progress to plot.", severity="warning")
            return
        self._write_progress(run, self.ws.root / PROGRESS_PNG)

    @work(thread=True, exclusive=True, group="progress_png")
    def _write_progress(self, run: Run, path: Path) -> None:
        """Draw the chart with matplotlib, imported here (seconds of start-up the dashboard never pays)."""
        try:
            from autoresearch.runner.report.progress_png import write_progress_png

            conn = open_store(self.ws.store_path, readonly=True)
            try:
                written = write_progress_png(conn, run, path)
            finally:
                conn.close()
        except Exception as exc:  # a worker's error would end the app: whatever it is, it is one line here
            self.app.call_from_thread(self.notify, _one_line(exc), title=f"Cannot write {PROGRESS_PNG}",
                                      severity="error", markup=False)
            return
        self.app.call_from_thread(self.notify, f"{PROGRESS_PNG} written to {written}", title=f"run {run.tag}",
                                  markup=False)


def _one_line(exc: BaseException) -> str:
    """An error as one line: a UserError's or OSError's own message, else its type and first line."""
    first = first_line(str(exc))
    if isinstance(exc, UserError | OSError) and first:
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__

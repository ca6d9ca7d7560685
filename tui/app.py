"""`autoresearch-tui`: the live dashboard of a workspace's research run, and its steering wheel.

The app only reads the store and queues commands in it; the loop itself runs in a detached
`autoresearch run` (started from here or not), so quitting the TUI never stops a run, starting it again
re-attaches, and any number of viewers may watch the same run. A thread polls the store four times a
second (see snapshot.py) and posts a snapshot only when something changed; each panel redraws only
when its own part did. Outside a workspace it offers to create one, then to start a run in it; both
offers show the checks of `autoresearch doctor`, run in the background (checks.py).
"""

import argparse
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import get_current_worker

from autoresearch.runner.workspace import Workspace, find_workspace
from autoresearch.tui.audit import AuditScreen
from autoresearch.tui.checks import DOCTOR_ARGV
from autoresearch.tui.dashboard import WRITES, DashboardScreen
from autoresearch.tui.experiment import ExperimentScreen
from autoresearch.tui.help import HelpScreen
from autoresearch.tui.rows import RowTable
from autoresearch.tui.snapshot import Snapshot, StorePoller
from autoresearch.tui.welcome import DEFAULT_FOLDER, WelcomeScreen

POLL_INTERVAL_S = 0.25
MIN_SIZE = (80, 24)
NOT_A_WORKSPACE = "Not in an autoresearch workspace, and this viewer is read-only: nothing to show."


class SnapshotReady(Message):
    """The poller read a changed store."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class TooSmallScreen(Screen[None]):
    """Covers everything while the terminal is smaller than MIN_SIZE."""

    DEFAULT_CSS = "TooSmallScreen { align: center middle; } TooSmallScreen Static { width: auto; }"

    def compose(self) -> ComposeResult:
        yield Static(id="too-small")

    def on_resize(self, event: events.Resize) -> None:
        self.query_one(Static).update(
            f"This terminal is {event.size.width}x{event.size.height}.\nautoresearch-tui needs at least "
            f"{MIN_SIZE[0]}x{MIN_SIZE[1]}: make the window larger.")


class AutoresearchApp(App[None]):
    """The dashboard of one workspace."""

    TITLE = "autoresearch"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: list[BindingType] = [  # noqa: RUF012 (Textual's own declaration style)
        Binding("question_mark", "help", "Help", key_display="?", tooltip="This list of keys", id="app.help"),
        Binding("q", "quit", "Quit", tooltip="Quit this view; the run goes on", id="app.quit"),
    ]

    def __init__(self, workspace: Workspace, *, tag: str | None = None, readonly: bool = False,
                 clock: Callable[[], float] = time.time, new_folder: Path = Path(DEFAULT_FOLDER),
                 poll_interval_s: float = POLL_INTERVAL_S, doctor: Sequence[str] | None = DOCTOR_ARGV) -> None:
        """tag: the run to show (None: the latest); clock: the time in the header and panels (tests freeze
        it); new_folder: what the offer to create a workspace proposes, outside one; doctor: the command
        whose checks the offers to create a workspace and to start a run show (`autoresearch doctor --json`;
        None: no checks, which tests use so a screen does not depend on the machine it is drawn on)."""
        super().__init__()
        self.workspace, self.tag, self.readonly, self.clock = workspace, tag, readonly, clock
        self.new_folder, self.poll_interval_s, self.doctor = new_folder, poll_interval_s, doctor
        self.snapshot: Snapshot | None = None
        self.dashboard: DashboardScreen | None = None
        self._offered_start = False
        self._follow: str | None = None
        self._stop_polling = threading.Event()

    def on_mount(self) -> None:
        if not self.workspace.is_scratch:
            self._attach(self.workspace)
        elif self.readonly:
            self._show_dashboard().notice(NOT_A_WORKSPACE)
        else:
            self.push_screen(WelcomeScreen(self.new_folder, self.doctor), callback=self._created)
        self._fit(self.size.width, self.size.height)

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width, event.size.height)  # self.size is updated only after this handler

    def on_unmount(self) -> None:
        self._stop_polling.set()

    # --- workspace and run ------------------------------------------------------------------------

    def _created(self, root: Path | None) -> None:
        if root is None:
            self.exit()
            return
        self.notify(f"Workspace created in {root}", title="autoresearch init")
        self._attach(find_workspace(root))

    def _attach(self, ws: Workspace) -> None:
        self.workspace = ws
        self._show_dashboard()
        self._poll_store(ws.store_path, self.tag)

    def _show_dashboard(self) -> DashboardScreen:
        self.dashboard = DashboardScreen(self.workspace, self.clock, self.readonly, self.doctor)
        self.push_screen(self.dashboard)
        return self.dashboard

    @work(thread=True, exclusive=True, group="poll", name="store poller")
    def _poll_store(self, path: Path, tag: str | None) -> None:
        """Poll the store from this thread until the app ends; post each changed snapshot."""
        worker = get_current_worker()
        poller = StorePoller(path, tag)
        try:
            while not worker.is_cancelled and not self._stop_polling.is_set():
                if self._follow is not None:
                    poller.follow(self._follow)
                    self._follow = None
                snapshot = poller.poll()
                if snapshot is not None:
                    try:
                        self.post_message(SnapshotReady(snapshot))
                    except RuntimeError:  # the event loop has closed: the app is gone
                        return
                self._stop_polling.wait(self.poll_interval_s)
        finally:
            poller.close()

    @on(SnapshotReady)
    def _on_snapshot(self, message: SnapshotReady) -> None:
        self.snapshot = snapshot = message.snapshot
        if self.dashboard is None:
            return
        self.dashboard.show(snapshot)
        if snapshot.run is None and not snapshot.error and not self.readonly and not self._offered_start:
            self._offered_start = True
            self.dashboard.action_start_run()

    @on(DashboardScreen.Follow)
    def _follow_run(self, message: DashboardScreen.Follow) -> None:
        if self.tag is not None:
            self.tag = self._follow = message.tag

    # --- other screens ----------------------------------------------------------------------------

    @on(DashboardScreen.Open)
    def _open(self, message: DashboardScreen.Open) -> None:
        self._open_experiment(message.experiment.seq)

    @on(AuditScreen.Open)
    def _open_from_audit(self, message: AuditScreen.Open) -> None:
        self._open_experiment(message.seq)

    def _open_experiment(self, seq: int) -> None:
        snapshot = self.snapshot
        if snapshot is None or snapshot.run is None:
            return
        experiment = next((e for e in snapshot.experiments if e.seq == seq), None)
        if experiment is not None:
            best = snapshot.best.id if snapshot.best else None
            self.push_screen(ExperimentScreen(self.workspace, snapshot.run, experiment, best, self.readonly))

    @on(DashboardScreen.Audit)
    def _audit(self) -> None:
        if self.snapshot is not None and self.snapshot.run is not None:
            self.push_screen(AuditScreen(self.workspace, self.snapshot.run))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        dashboard = [b for b in DashboardScreen.BINDINGS if isinstance(b, Binding)
                     and not (self.readonly and b.action.split("(")[0] in WRITES)]
        sections = [("Dashboard", dashboard),
                    ("Tables", [b for b in RowTable.BINDINGS if isinstance(b, Binding)]),
                    ("Everywhere", [b for b in self.BINDINGS if isinstance(b, Binding)])]
        self.push_screen(HelpScreen(sections))

    def _fit(self, width: int, height: int) -> None:
        """Below MIN_SIZE, cover everything with a message instead of drawing a broken layout."""
        small = width < MIN_SIZE[0] or height < MIN_SIZE[1]
        covered = isinstance(self.screen, TooSmallScreen)
        if small and not covered:
            self.push_screen(TooSmallScreen())
        elif covered and not small:
            self.pop_screen()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `autoresearch-tui`."""
    parser = argparse.ArgumentParser(prog="autoresearch-tui", description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=None,
                        help="a folder in the workspace to show (default: the current folder)")
    parser.add_argument("--tag", help="the run to show (default: the latest)")
    parser.add_argument("--readonly", action="store_true",
                        help="watch only: no steering keys (for a shared session)")
    args = parser.parse_args(argv)
    folder = args.workspace if args.workspace is not None else Path(DEFAULT_FOLDER)
    AutoresearchApp(find_workspace(args.workspace), tag=args.tag, readonly=args.readonly, new_folder=folder).run()
    return 0

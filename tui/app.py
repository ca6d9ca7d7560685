"""`autoresearch-tui`: a live view of one workspace's store, and the way to start an experiment.

The app reads the store and nothing else. A thread polls it about twice a second (see snapshot.py)
and posts a snapshot only when something changed; each panel redraws only when its own part did.
Experiments are started as detached `autoresearch` processes (see launch.py), so quitting the TUI
never stops one.
"""

import argparse
import shlex
import threading
from pathlib import Path

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from autoresearch.runner.workspace import Workspace, find_workspace
from autoresearch.tui import launch
from autoresearch.tui.confirm import ConfirmScreen
from autoresearch.tui.findings import FindingsPanel
from autoresearch.tui.format import short_path
from autoresearch.tui.loss import LossPanel
from autoresearch.tui.snapshot import ACTIVE_STATUSES, Snapshot, StorePoller
from autoresearch.tui.summary import SummaryBar
from autoresearch.tui.table import ExperimentTable

POLL_INTERVAL_S = 0.5
LAUNCH_CHECK_INTERVAL_S = 1.0
MIN_SIZE = (80, 24)
EMPTY_MESSAGE = "No experiments yet. Press n to run the baseline train.py (about 2 minutes on CPU)."
HINT = "↑↓ pick an experiment (the top row follows the newest) · experiments go on after q"


class SnapshotReady(Message):
    """The poller read a changed store."""

    def __init__(self, snapshot: Snapshot, pick: int | None) -> None:
        super().__init__()
        self.snapshot, self.pick = snapshot, pick


class AutoresearchApp(App[None]):
    """The dashboard of one workspace."""

    TITLE = "autoresearch"
    CSS = """
    #dashboard { height: 1fr; }
    #notice { height: 1fr; content-align: center middle; text-align: center; padding: 1 4; }
    #experiments { height: auto; max-height: 45%; border: round $primary; border-title-color: $text; }
    #experiments:focus { border: round $accent; }
    #details { height: 1fr; }
    #loss { width: 2fr; }
    #findings { width: 1fr; }
    #status { height: 1; padding: 0 1; color: $text-muted; }
    #too-small { height: 1fr; content-align: center middle; text-align: center; display: none; }
    """
    BINDINGS: list[BindingType] = [  # noqa: RUF012 (Textual's own declaration style)
        Binding("n", "new_experiment", "New baseline", id="autoresearch.new_experiment"),
        Binding("r", "refresh", "Refresh", id="autoresearch.refresh"),
        Binding("q", "quit", "Quit", id="autoresearch.quit"),
    ]

    def __init__(self, workspace: Workspace, command: launch.CommandFactory | None = None,
                 budget_s: float | None = None) -> None:
        """workspace: what to show; command: builds the argv that `n` starts (default: the baseline
        `autoresearch try`); budget_s: the training seconds it passes (default: by GPU presence)."""
        super().__init__()
        self.workspace = workspace
        self.command = command or launch.baseline_command
        self.budget_s = budget_s
        self.snapshot: Snapshot | None = None
        self.launches: list[launch.Launch] = []
        self._launch_experiments: dict[int, float] = {}  # experiment id -> budget it was launched with
        self._pick: int | None = None  # None: follow the newest (running) experiment
        self._wake = threading.Event()
        self._force = threading.Event()

    def compose(self) -> ComposeResult:
        with Vertical(id="dashboard"):
            yield SummaryBar(self.workspace, id="summary")
            yield Static(EMPTY_MESSAGE, id="notice")
            yield ExperimentTable(id="experiments")
            with Horizontal(id="details"):
                yield LossPanel(id="loss")
                yield FindingsPanel(id="findings")
            yield Static(HINT, id="status", markup=False)
            yield Footer()
        yield Static(id="too-small")

    def on_mount(self) -> None:
        self.query_one("#experiments").border_title = "experiments"
        self._show_body(False)
        self._poll_store()
        if self.budget_s is None:
            self._detect_budget()
        self.set_interval(LAUNCH_CHECK_INTERVAL_S, self._check_launches)
        self._fit(self.size.width, self.size.height)

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width, event.size.height)  # self.size is updated only after this handler

    def on_unmount(self) -> None:
        self._wake.set()

    # --- reading the store -------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="poll", name="store poller")
    def _poll_store(self) -> None:
        """Poll the store from this thread until the app ends; post each changed snapshot."""
        worker = get_current_worker()
        poller = StorePoller(self.workspace.store_path)
        try:
            while not worker.is_cancelled:
                force = self._force.is_set()
                self._force.clear()
                pick = self._pick
                snapshot = poller.poll(pick, force=force)
                if snapshot is not None:
                    try:
                        self.post_message(SnapshotReady(snapshot, pick))
                    except RuntimeError:  # the event loop has closed: the app is gone
                        return
                self._wake.wait(POLL_INTERVAL_S)
                self._wake.clear()
        finally:
            poller.close()

    @on(SnapshotReady)
    def _on_snapshot(self, message: SnapshotReady) -> None:
        if message.pick != self._pick:
            return  # read for an earlier pick; the poller is already reading the current one
        self.snapshot = snapshot = message.snapshot
        self._match_launches(snapshot)
        self.query_one(SummaryBar).show(snapshot)
        notice = self.query_one("#notice", Static)
        if snapshot.error:
            notice.update(Text(f"Cannot read the store.\n\n{snapshot.error}", style="bold red"))
        elif not snapshot.experiments:
            notice.update(EMPTY_MESSAGE)
        self._show_body(snapshot.selected is not None)
        if snapshot.selected is None:
            return
        selected = snapshot.selected
        self.query_one(ExperimentTable).show(snapshot.experiments, selected.id)
        budget = snapshot.budget_s or self._launch_experiments.get(selected.id)
        self.query_one(LossPanel).show(selected, snapshot.points, budget, snapshot.following)
        self.query_one(FindingsPanel).show(selected, snapshot.findings)

    @on(ExperimentTable.Picked)
    def _on_picked(self, message: ExperimentTable.Picked) -> None:
        if message.experiment_id != self._pick:
            self._pick = message.experiment_id
            self._wake.set()

    def action_refresh(self) -> None:
        """Read the store again now, whatever changed."""
        self._force.set()
        self._wake.set()

    # --- starting experiments ----------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="gpu", name="gpu check")
    def _detect_budget(self) -> None:
        self.budget_s = launch.default_budget()

    def action_new_experiment(self) -> None:
        """Ask, then start the baseline train.py as a detached `autoresearch try`."""
        running = next((item for item in self.launches if item.process.poll() is None), None)
        if running is not None:
            self.notify(f"The experiment started from here is still running (pid {running.pid}).",
                        severity="warning")
            return
        if self.snapshot is not None and self.snapshot.error:
            self.notify(self.snapshot.error, title="Cannot start", severity="error")
            return
        if self.budget_s is None:
            self.notify("Still checking for a GPU; press n again in a moment.")
            return
        train_py = self.workspace.task_dir / "train.py"
        if not train_py.is_file():
            self.notify(f"There is no {train_py}.", title="Cannot start", severity="error")
            return
        budget = self.budget_s
        argv = self.command(self.workspace, budget)
        self.push_screen(ConfirmScreen(self._question(argv, budget)),
                         callback=lambda confirmed: self._start(argv, budget) if confirmed else None)

    def _question(self, argv: list[str], budget: float) -> str:
        busy = [e for e in (self.snapshot.experiments if self.snapshot else ()) if e.status in ACTIVE_STATUSES]
        warning = f"\n\nExperiment #{busy[-1].id} is running too; both will share this machine." if busy else ""
        where = "CPU" if budget == launch.CPU_BUDGET_S else "GPU"
        return (
            f"Start a new baseline experiment?\n\nIt trains {self.workspace.task_dir / 'train.py'} for "
            f"{budget:g} s ({where} budget) in a container, scores it, and records it here. It runs in the "
            f"background: quitting this view does not stop it.\n\n$ {shlex.join(argv)}{warning}"
        )

    def _start(self, argv: list[str], budget: float) -> None:
        try:
            started = launch.launch_detached(self.workspace, argv, budget)
        except OSError as exc:
            self.notify(f"{argv[0]}: {exc.strerror}", title="Cannot start", severity="error")
            return
        self.launches.append(started)
        self._set_status(f"started pid {started.pid} · log {self._relative(started.log_path)}")
        self.notify(f"Started (pid {started.pid}). It appears here once it is recorded.", title="Experiment")

    def _check_launches(self) -> None:
        """Reap launched processes that ended, and say how each ended."""
        for item in list(self.launches):
            returncode = item.process.poll()
            if returncode is None:
                continue
            self.launches.remove(item)
            summary = launch.exit_summary(item, returncode)
            self._set_status(summary)
            if returncode not in (0, 1):  # 1: the experiment ran and did not end ok, which the table shows
                self.notify(summary, title="The experiment did not start", severity="error", timeout=15)

    def _match_launches(self, snapshot: Snapshot) -> None:
        """Tie each launch to the first run-less experiment recorded after it started (for its budget)."""
        for item in self.launches:
            if item.experiment_id is not None:
                continue
            match = next((e for e in snapshot.experiments if e.run_id is None and e.started_at >= item.started_at - 1.0
                          and e.id not in self._launch_experiments), None)
            if match is not None:
                item.experiment_id = match.id
                self._launch_experiments[match.id] = item.budget_s

    # --- layout ------------------------------------------------------------------------------------

    def _relative(self, path: Path) -> str:
        """path relative to the workspace when inside it, else shortened."""
        return str(path.relative_to(self.workspace.root)) if path.is_relative_to(self.workspace.root) \
            else short_path(path, 60)

    def _set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    def _show_body(self, has_experiments: bool) -> None:
        self.query_one("#notice").display = not has_experiments
        self.query_one(ExperimentTable).display = has_experiments
        self.query_one("#details").display = has_experiments

    def _fit(self, width: int, height: int) -> None:
        """Below 80x24, say so instead of drawing a broken layout."""
        small = width < MIN_SIZE[0] or height < MIN_SIZE[1]
        self.query_one("#dashboard").display = not small
        too_small = self.query_one("#too-small", Static)
        too_small.display = small
        if small:
            too_small.update(f"This terminal is {width}x{height}.\nautoresearch-tui needs at least "
                             f"{MIN_SIZE[0]}x{MIN_SIZE[1]}: make the window larger.")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `autoresearch-tui`."""
    parser = argparse.ArgumentParser(prog="autoresearch-tui", description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=None,
                        help="a folder in the workspace to show (default: the current folder)")
    args = parser.parse_args(argv)
    AutoresearchApp(find_workspace(args.workspace)).run()
    return 0

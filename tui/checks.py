"""What this machine needs before a run starts: `autoresearch doctor --json`, run aside, one line per check.

The TUI never loads docker-py or anthropic, and the doctor talks to Docker, so it runs as a subprocess
(DOCTOR_ARGV, in the folder the checks are about) from a thread worker of MachineChecks, bounded by
DOCTOR_TIMEOUT_S and killed when the widget goes away. Its report is one JSON object,
`{"ok": bool, "checks": [{"name", "status": ok|warn|fail|skip, "detail", "fix": str|null}, ...]}`;
parse_doctor_json turns it into Checks, and anything else (no report, garbage, a crash, a timeout) into
one Unavailable reason: the screen then says "checks unavailable: <reason>" and goes on.

Every string from the report is escaped (it may name paths or echo Docker's errors) and drawn as Text
(the cells of a grid, so a long detail wraps in its own column), never as markup: `[Errno 2]` shows as
written. The report's own `ok` is not read: the headline counts the failed checks.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.css.scalar import Scalar
from textual.widget import Widget
from textual.widgets import Static
from textual.worker import get_current_worker

from autoresearch.runner.doctor_report import FAIL, MARKS, OK, SKIP, WARN, Check
from autoresearch.runner.record.untrusted import as_data

DOCTOR_ARGV: tuple[str, ...] = (sys.executable, "-m", "autoresearch.runner.cli", "doctor", "--json")
DOCTOR_TIMEOUT_S = 60.0
REASON_CHARS = 300  # an unavailable reason (e.g. the last line of a traceback), as shown

COLOURS = {OK: "green", WARN: "yellow", FAIL: "red", SKIP: "dim"}  # beside the doctor's marks
UNKNOWN_MARK = ("?", "")  # a status this TUI does not know (a newer doctor): shown, not refused
NAME_WIDTH = 20  # the name column's widest (a longer name is cut with an ellipsis)
RUNNING = "checking this machine…"


@dataclass(frozen=True)
class Unavailable:
    """Why there is no report to show."""

    reason: str


DoctorResult = list[Check] | Unavailable


def parse_doctor_json(text: str) -> DoctorResult:
    """The checks of the doctor's JSON report, or why text is not one."""
    try:
        report = json.loads(text)
    except ValueError:
        lines = text.strip().splitlines()  # tolerate chatter before the report: the report is its last line
        try:
            report = json.loads(lines[-1]) if len(lines) > 1 else None
        except ValueError:
            report = None
        if report is None:
            return Unavailable("the doctor printed no report" if not text.strip()
                               else f"the doctor's output is not JSON: {as_data(text.strip(), 80)}")
    if not isinstance(report, dict) or not isinstance(report.get("checks"), list):
        return Unavailable("the doctor's report has no list of checks")
    checks = []
    for number, item in enumerate(report["checks"], 1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("status"), str):
            return Unavailable(f"check {number} of the doctor's report has no name or status")
        detail, fix = item.get("detail"), item.get("fix")
        checks.append(Check(as_data(item["name"], 60), as_data(item["status"], 20),
                            as_data(detail) if isinstance(detail, str) else "",
                            as_data(fix) if isinstance(fix, str) and fix.strip() else None))
    if not checks:
        return Unavailable("the doctor reported no checks")
    return checks


def run_doctor(cwd: Path, argv: Sequence[str] = DOCTOR_ARGV, timeout_s: float = DOCTOR_TIMEOUT_S,
               cancelled: Callable[[], bool] = lambda: False) -> DoctorResult | None:
    """Run the doctor in cwd and parse its report; None when cancelled() turned true first.

    Exit 0 (all passed) and 1 (a check failed) carry a report; without one (2: bad input, a crash), the
    last line on stderr says why. Past timeout_s, or once cancelled, the doctor and anything it started
    (its own process group) are killed.
    """
    try:
        process = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    except OSError as exc:
        return Unavailable(as_data(f"cannot run the doctor: {exc}", REASON_CHARS))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                stdout, stderr = process.communicate(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if cancelled():
                    return None
                if time.monotonic() > deadline:
                    return Unavailable(f"the doctor did not finish within {timeout_s:g} s")
    finally:
        if process.returncode is None:
            _kill(process)
    report = parse_doctor_json(stdout) if process.returncode in (0, 1) else None
    if isinstance(report, list):
        return report
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    if last:  # a one-line error, or the last line of a traceback
        return Unavailable(as_data(last, REASON_CHARS))
    return report or Unavailable(f"the doctor exited with status {process.returncode}")


def _kill(process: subprocess.Popen[str]) -> None:
    """End the doctor's process group (it is its own session) and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    process.wait()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


def headline(checks: list[Check]) -> Text:
    """`ready to run` (with its warnings counted), or how many checks failed."""
    failed = sum(check.status == FAIL for check in checks)
    if failed:
        problems = "1 problem" if failed == 1 else f"{failed} problems"
        return Text(f"{problems}: the run cannot start until they are fixed", style="bold red")
    text = Text("ready to run", style="bold green")
    warned = sum(check.status == WARN for check in checks)
    if warned:
        text.append(f" ({warned} warning{'s' if warned > 1 else ''})", style="yellow")
    return text


def render(result: DoctorResult | None) -> Group | Text:
    """The headline and one row per check: its mark, name and detail, and a dim `fix:` row under it when
    it has one (a long detail wraps in its own column). While result is None, that the checks are
    running; for Unavailable, one line saying why there are none."""
    if result is None:
        return Text(RUNNING, style="dim")
    if isinstance(result, Unavailable):
        return Text(f"checks unavailable: {result.reason}", style="dim")
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, max_width=NAME_WIDTH, overflow="ellipsis")
    table.add_column(ratio=1, overflow="fold")
    for check in result:
        mark, style = (MARKS[check.status], COLOURS[check.status]) if check.status in MARKS else UNKNOWN_MARK
        table.add_row(Text(mark, style=style), Text(check.name, style=style if check.status == FAIL else ""),
                      Text(check.detail, style="dim" if check.status == SKIP else ""))
        if check.fix:
            table.add_row("", "", Text(f"fix: {check.fix}", style="dim"))
    return Group(headline(result), table)


class MachineChecks(VerticalScroll):
    """The doctor's checks of cwd, run once when mounted, in a box of the dialog that holds it (a container
    of auto height): the box takes the rows the screen leaves beside the rest of the dialog, and scrolls
    when the checks need more (at 80x24, the welcome screen leaves it a few)."""

    DEFAULT_CSS = """
    MachineChecks { height: auto; }
    MachineChecks > Static { width: 1fr; }
    """
    MIN_ROWS = 3

    def __init__(self, cwd: Path | None, argv: Sequence[str] = DOCTOR_ARGV,
                 timeout_s: float = DOCTOR_TIMEOUT_S) -> None:
        """cwd: the folder whose configuration the doctor checks (None: the current folder, when it runs)."""
        super().__init__(id="checks")
        self.cwd, self.argv, self.timeout_s = cwd, argv, timeout_s
        self.result: DoctorResult | None = None

    def compose(self) -> ComposeResult:
        yield Static(render(None))

    def on_mount(self) -> None:
        self.screen.screen_layout_refresh_signal.subscribe(self, lambda _screen: self._fit())
        self._check()

    def _fit(self) -> None:
        """Cap the box's height at the screen's rows less those the dialog's other parts take."""
        dialog, rows = self.parent, self.screen.size.height
        if not isinstance(dialog, Widget) or not rows:
            return
        used, margin_below = dialog.styles.gutter.height + dialog.styles.margin.height, 0
        for child in dialog.children:
            if child.display:  # a vertical layout collapses adjacent margins into the larger one
                used += max(margin_below, child.styles.margin.top)
                margin_below = child.styles.margin.bottom
                used += 0 if child is self else child.outer_size.height
        cap = max(self.MIN_ROWS, rows - used - margin_below)
        if self.styles.max_height != Scalar.from_number(cap):
            self.styles.max_height = cap

    @work(thread=True, exclusive=True, group="doctor", name="autoresearch doctor")
    def _check(self) -> None:
        worker = get_current_worker()
        try:
            cwd = self.cwd or Path.cwd()
        except OSError as exc:  # the current folder was deleted
            result: DoctorResult | None = Unavailable(as_data(str(exc), REASON_CHARS))
        else:
            result = run_doctor(cwd, self.argv, self.timeout_s, cancelled=lambda: worker.is_cancelled)
        if result is None or worker.is_cancelled:
            return
        try:
            self.app.call_from_thread(self._show, result)
        except RuntimeError:  # the app has closed meanwhile
            return

    def _show(self, result: DoctorResult) -> None:
        self.result = result
        self.query_one(Static).update(render(result))

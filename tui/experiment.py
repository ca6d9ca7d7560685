"""The drill-down of one experiment: its diff, the agent's reasoning and notes, its log, its metrics and findings."""

import time

from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from autoresearch.runner.errors import UserError
from autoresearch.runner.record.store import Experiment, Run
from autoresearch.runner.record.untrusted import escaped
from autoresearch.runner.record.views import memory_mb
from autoresearch.runner.workspace import Workspace
from autoresearch.tui import format as fmt
from autoresearch.tui.details import Detail, load_detail, turn_lines
from autoresearch.tui.export import export_train_py
from autoresearch.tui.findings import findings_text
from autoresearch.tui.logview import LogPane
from autoresearch.tui.loss import LossPlot


def title_text(run: Run, e: Experiment) -> Text:
    """`main #3 ★ keep  val_bpb 0.991004  1a2b3c4  description`, warning first when the run was not isolated."""
    warning = fmt.sandbox_warning(e.sandbox or run.sandbox)
    text = Text.assemble((f"{run.tag} #{e.seq} ", "bold"), *((warning, " ") if warning else ()),
                         fmt.status_text(e.status), "  val_bpb ", (fmt.bpb(e.val_bpb), "bold"),
                         f"  {fmt.short_sha(e.commit_sha)}  ")
    return text.append(" ".join(e.description.split()), style="italic")


def agent_text(run: Run, detail: Detail) -> Text:
    """The description, the model's turns for the proposal, then the notes the agent kept (all drawn as data)."""
    text = Text.assemble(("description  ", "dim"), detail.experiment.description, "\n")
    if not detail.turns:
        text.append(f"\nNo model call is linked to this experiment: the {run.agent} agent proposed it "
                    "without one (the baseline, a sweep step or a replayed edit).\n", style="dim")
    for number, turn in enumerate(detail.turns, start=1):
        text.append(f"\nturn {number} · ", style="bold")
        for style, line in turn_lines(turn):
            text.append(f"{line}\n", style=style)
    text.append("\nagent notes", style="bold").append(f"  {detail.notes_note}\n", style="dim")
    return text.append(detail.notes)


def diff_view(detail: Detail) -> Syntax | Text:
    """The diff, highlighted, with the control characters the agent's train.py may hold escaped; or why none."""
    if not detail.diff:
        return Text(detail.diff_note, style="dim")
    return Syntax(escaped(detail.diff, keep_newlines=True), "diff", theme="ansi_dark", background_color="default")


def metrics_table(e: Experiment, detail: Detail) -> Table:
    """The experiment's numbers, with what each one is (cut, not wrapped, when narrow)."""
    def when(value: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value)) if value else fmt.MISSING

    rows = [
        ("val_bpb", fmt.bpb(e.val_bpb), "trusted: the scoring container's"),
        ("test_bpb", fmt.bpb(e.test_bpb), "held-out split, kept commits only"),
        ("reported", fmt.bpb(fmt.reported_val_bpb(e)), "what train.py printed: advisory"),
        ("training", f"{fmt.seconds(e.training_seconds)} s", ""),
        ("total", f"{fmt.seconds(e.total_seconds)} s", "wall time, containers included"),
        ("GPU busy", f"{fmt.seconds(e.gpu_busy_seconds)} s", ""),
        ("memory", fmt.megabytes(memory_mb(e)), "peak VRAM, or host RSS on CPU"),
        ("steps", str(len(detail.points)), "progress lines recorded"),
        ("started", when(e.started_at), ""),
        ("ended", when(e.ended_at), ""),
    ]
    rows += [(f"  {phase}", f"{seconds:.1f} s", "time spent") for phase, seconds in (e.timings_json or {}).items()
             if isinstance(seconds, int | float) and seconds]
    table = Table(box=None, show_header=False, padding=(0, 1, 0, 0), expand=True)
    table.add_column("label", style="dim", no_wrap=True)
    table.add_column("value", no_wrap=True)
    table.add_column("note", style="dim", no_wrap=True, overflow="ellipsis", ratio=1)
    for row in rows:
        table.add_row(*row)
    return table


class ExperimentScreen(Screen[None]):
    """Tabs on one experiment; loads in a worker thread, r reloads (a running experiment goes on)."""

    DEFAULT_CSS = """
    ExperimentScreen #title { height: 1; padding: 0 1; background: $panel; }
    ExperimentScreen TabbedContent, ExperimentScreen ContentSwitcher, ExperimentScreen TabPane { height: 1fr; }
    ExperimentScreen TabPane { padding: 0; }
    ExperimentScreen VerticalScroll { padding: 0 1; }
    ExperimentScreen #metrics-plot { width: 1fr; border: round $secondary; }
    ExperimentScreen #metrics-scroll { width: 1fr; }
    """
    BINDINGS: list[BindingType] = [  # noqa: RUF012 (Textual's own declaration style)
        Binding("escape", "app.pop_screen", "Back", id="experiment.back"),
        Binding("d", "tab('diff')", "Diff", id="experiment.diff"),
        Binding("a", "tab('agent')", "Agent", id="experiment.agent"),
        Binding("l", "tab('log')", "Log", id="experiment.log"),
        Binding("m", "tab('metrics')", "Metrics", id="experiment.metrics"),
        Binding("slash", "search_log", "Search log", show=False, id="experiment.search"),
        Binding("r", "reload", "Reload", id="experiment.reload"),
        Binding("x", "export", "Export train.py", id="experiment.export"),
    ]

    def __init__(self, ws: Workspace, run: Run, experiment: Experiment, best_id: int | None,
                 readonly: bool = False) -> None:
        super().__init__()
        self.ws, self.run, self.experiment, self.best_id, self.readonly = ws, run, experiment, best_id, readonly

    def compose(self) -> ComposeResult:
        yield Static(title_text(self.run, self.experiment), id="title")
        with TabbedContent(initial="diff"):
            with TabPane("Diff", id="diff"), VerticalScroll():
                yield Static("loading…", id="diff-text")
            with TabPane("Agent", id="agent"), VerticalScroll():
                yield Static("loading…", id="agent-text")
            with TabPane("Log", id="log"):
                yield LogPane(id="log-pane")
            with TabPane("Metrics", id="metrics"), Horizontal():
                with VerticalScroll(id="metrics-scroll"):
                    yield Static("loading…", id="metrics-text")
                    yield Static("", id="findings-text")
                yield LossPlot(id="metrics-plot")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#metrics-plot").border_title = "loss (green: best kept)"
        self.action_reload()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (self.readonly and action == "export")

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        focus = {"log": "#log-lines", "metrics": "#metrics-scroll"}.get(tab, f"#{tab} VerticalScroll")
        self.query_one(focus).focus()

    def action_search_log(self) -> None:
        self.action_tab("log")
        self.query_one(LogPane).action_search()

    @work(thread=True, exclusive=True, group="detail")
    def action_reload(self) -> None:
        try:
            detail = load_detail(self.ws, self.experiment, self.best_id)
        except (UserError, OSError) as exc:
            self.app.call_from_thread(self.notify, str(exc), title="Cannot read the experiment", severity="error")
            return
        self.app.call_from_thread(self._show, detail)

    def _show(self, detail: Detail) -> None:
        self.experiment = experiment = detail.experiment
        self.query_one("#title", Static).update(title_text(self.run, experiment))
        self.query_one("#diff-text", Static).update(diff_view(detail))
        self.query_one("#agent-text", Static).update(agent_text(self.run, detail))
        self.query_one(LogPane).show(detail.log_lines, detail.log_note)
        self.query_one("#metrics-text", Static).update(metrics_table(experiment, detail))
        self.query_one("#findings-text", Static).update(Text("\n").append_text(findings_text(experiment,
                                                                                           detail.findings)))
        best = detail.best_points if self.best_id != experiment.id else None
        self.query_one(LossPlot).plot(detail.points, best, experiment.training_seconds, "no progress recorded")

    def action_export(self) -> None:
        try:
            path = export_train_py(self.ws, self.run.tag, self.experiment)
        except (UserError, OSError) as exc:
            self.notify(str(exc), title="Cannot export", severity="error")
            return
        self.notify(f"train.py of #{self.experiment.seq} written to {path}", title="Exported")

"""The audit view: every policy finding of the run, with the highlighted one's evidence under the list."""

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from autoresearch.runner.errors import UserError
from autoresearch.runner.record import store
from autoresearch.runner.record.store import Run, StoredFinding
from autoresearch.runner.workspace import Workspace
from autoresearch.tui import format as fmt
from autoresearch.tui import queries
from autoresearch.tui.findings import finding_text
from autoresearch.tui.rows import Column, RowTable

COLUMNS = (
    Column("#", 5, right=True),
    Column("severity", 8),
    Column("action", 7),
    Column("rule", 24, hide_below=70),
    Column("message", None),
)
Row = tuple[int, StoredFinding]


def audit_cells(row: Row) -> list[Text]:
    seq, stored = row
    finding = stored.finding
    return [Text(str(seq)), Text(finding.severity, style=fmt.SEVERITY_STYLES.get(finding.severity, "")),
            Text(finding.action, style="bold" if finding.action == "block" else ""),
            Text(finding.rule_id, style="cyan"), Text(" ".join(finding.message.split()))]


class AuditScreen(Screen[None]):
    """All findings of one run; Enter opens the experiment of the highlighted finding."""

    DEFAULT_CSS = """
    AuditScreen #audit-title { height: 1; padding: 0 1; background: $panel; }
    AuditScreen RowTable { height: 2fr; border: round $secondary; }
    AuditScreen #evidence-scroll { height: 1fr; border: round $secondary; padding: 0 1; }
    """
    BINDINGS: list[BindingType] = [  # noqa: RUF012 (Textual's own declaration style)
        Binding("escape", "app.pop_screen", "Back", id="audit.back"),
    ]

    class Open(Message):
        """Open the drill-down of the run's experiment with this seq."""

        def __init__(self, seq: int) -> None:
            super().__init__()
            self.seq = seq

    def __init__(self, ws: Workspace, run: Run) -> None:
        super().__init__()
        self.ws, self.run = ws, run

    def compose(self) -> ComposeResult:
        yield Static(f"audit · run {self.run.tag} · reading the findings…", id="audit-title", markup=False)
        yield RowTable(COLUMNS, audit_cells, lambda row: row[1].id, placeholder="no findings in this run",
                       id="findings")
        with VerticalScroll(id="evidence-scroll"):
            yield Static("", id="evidence")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#evidence-scroll").border_title = "evidence"
        self.query_one(RowTable).focus()
        self._load()

    @work(thread=True, exclusive=True, group="audit")
    def _load(self) -> None:
        try:
            conn = store.open_store(self.ws.store_path, readonly=True)
        except UserError as exc:
            self.app.call_from_thread(self.notify, str(exc), title="Cannot read the findings", severity="error")
            return
        try:
            rows = queries.run_findings(conn, self.run.id)
        finally:
            conn.close()
        self.app.call_from_thread(self._show, rows)

    def _show(self, rows: list[Row]) -> None:
        blocks = sum(stored.finding.action == "block" for _, stored in rows)
        warning = fmt.sandbox_warning(self.run.sandbox)
        self.query_one("#audit-title", Static).update(Text.assemble(
            f"audit · run {self.run.tag} · ", *((warning, " · ") if warning else ()),
            f"{len(rows)} findings, {blocks} blocking · enter: open the experiment"))
        table = self.query_one(RowTable)
        table.set_rows(rows)
        self._evidence(table)

    @on(RowTable.Highlighted)
    def _highlighted(self, event: RowTable.Highlighted) -> None:
        self._evidence(event.table)

    @on(RowTable.Chosen)
    def _chosen(self, event: RowTable.Chosen) -> None:
        table = event.table
        self.post_message(self.Open(table.rows[table.cursor][0]))

    def _evidence(self, table: RowTable) -> None:
        row = table.rows[table.cursor] if table.rows else None
        text = finding_text(row[1], evidence_chars=20_000) if row else Text("")
        self.query_one("#evidence", Static).update(text)

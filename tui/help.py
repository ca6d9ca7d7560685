"""The help screen: every key of the dashboard and of the tables, from their own bindings."""

from collections.abc import Iterable

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

INTRO = ("autoresearch-tui watches one run of the workspace's research loop. Quitting it never stops the "
         "run; start it again to re-attach. Several viewers may watch at once.")


def keys_table(sections: Iterable[tuple[str, Iterable[Binding]]]) -> Table:
    """A table of key, what it does, and the binding's id, per section."""
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
    table.add_column("key", style="bold yellow", no_wrap=True)
    table.add_column("action", ratio=1)
    table.add_column("id", style="dim", no_wrap=True)
    for title, bindings in sections:
        table.add_row("", f"[bold]{title}[/]", "")
        for binding in bindings:
            key = ", ".join(binding.key_display or k for k in binding.key.split(","))
            table.add_row(key, binding.tooltip or binding.description, binding.id or "")
        table.add_row("", "", "")
    return table


class HelpScreen(ModalScreen[None]):
    """Lists the keys; any of escape, q or ? closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 96; max-width: 100%; height: auto; max-height: 100%; border: thick $primary;
        background: $surface; padding: 1 2;
    }
    """
    BINDINGS: list[BindingType] = [  # noqa: RUF012 (Textual's own declaration style)
        Binding("escape,q,question_mark", "app.pop_screen", "Close", id="help.close"),
    ]

    def __init__(self, sections: list[tuple[str, list[Binding]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(INTRO + "\n")
            yield Static(keys_table(self.sections))

"""A table that draws only the rows on screen, so 10,000 experiments cost what 20 do.

Textual's DataTable builds every row up front (about half a second for 10,000, and as much again at
each rebuild); this table keeps a reference to the caller's sequence of rows and turns a row into cells
only when it is drawn. The first line is the header; the cursor row is what Enter chooses. The cursor
follows its row's key when the rows change (a new experiment arriving at the top does not move it
off the experiment the user is looking at), except on the top row, which stays on top: the newest.
"""

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

GAP = 1  # spaces between columns


@dataclass(frozen=True)
class Column:
    """One column: a fixed width, or None for the one column that takes the room left."""

    label: str
    width: int | None
    right: bool = False
    hide_below: int = 0  # the column is left out when the table is narrower than this


class RowTable(ScrollView, can_focus=True):
    """A virtual table over a sequence of rows; `cells(row)` gives a row's cells, `key(row)` its identity."""

    DEFAULT_CSS = """
    RowTable { scrollbar-size-vertical: 1; overflow-x: hidden; background: $surface; padding: 0 0 0 1; }
    RowTable > .rowtable--header { text-style: bold; color: $text-muted; }
    RowTable > .rowtable--cursor { background: $block-cursor-blurred-background; }
    RowTable:focus > .rowtable--cursor { background: $block-cursor-background; color: $block-cursor-foreground;
        text-style: bold; }
    """
    COMPONENT_CLASSES = {"rowtable--header", "rowtable--cursor"}  # noqa: RUF012 (Textual's declaration style)
    BINDINGS: list[BindingType] = [  # noqa: RUF012
        Binding("up", "cursor(-1)", "Up", show=False, id="rows.up"),
        Binding("down", "cursor(1)", "Down", show=False, id="rows.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="rows.page_up"),
        Binding("pagedown", "page(1)", "Page down", show=False, id="rows.page_down"),
        Binding("home", "jump(0)", "First", show=False, id="rows.first"),
        Binding("end", "jump(-1)", "Last", show=False, id="rows.last"),
        Binding("enter", "choose", "Open", id="rows.open"),
    ]

    class Highlighted(Message):
        """The cursor moved to the row with this key."""

        def __init__(self, table: "RowTable", key: Hashable) -> None:
            super().__init__()
            self.table, self.key = table, key

    class Chosen(Message):
        """Enter (or a click on the cursor row) chose the row with this key."""

        def __init__(self, table: "RowTable", key: Hashable) -> None:
            super().__init__()
            self.table, self.key = table, key

    def __init__(self, columns: Sequence[Column], cells: Callable[[Any], Sequence[Text]],
                 key: Callable[[Any], Hashable], placeholder: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.columns = tuple(columns)
        self.cells, self.key = cells, key
        self.placeholder = placeholder
        self.rows: Sequence[Any] = ()
        self.cursor = 0
        self.hidden: frozenset[str] = frozenset()  # labels of columns left out whatever the width

    # --- data -------------------------------------------------------------------------------------

    def set_rows(self, rows: Sequence[Any]) -> None:
        """Show rows; the cursor stays on its row's key (or on the top row when it was there)."""
        if rows is self.rows:
            return
        kept = self.cursor_key if self.cursor > 0 else None
        self.rows = rows
        self.cursor = next((i for i, row in enumerate(rows) if self.key(row) == kept), 0) if kept is not None else 0
        self.virtual_size = Size(self.size.width, len(rows) + 1)
        self._show_cursor()
        self.refresh()

    @property
    def cursor_key(self) -> Hashable | None:
        return self.key(self.rows[self.cursor]) if 0 <= self.cursor < len(self.rows) else None

    # --- keys and mouse ---------------------------------------------------------------------------

    def action_cursor(self, delta: int) -> None:
        self._set_cursor(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._set_cursor(self.cursor + direction * max(self.size.height - 2, 1))

    def action_jump(self, index: int) -> None:
        self._set_cursor(index if index >= 0 else len(self.rows) - 1)

    def action_choose(self) -> None:
        if self.cursor_key is not None:
            self.post_message(self.Chosen(self, self.cursor_key))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        index = int(self.scroll_offset.y) + offset.y - 1
        if index == self.cursor:
            self.action_choose()
        elif 0 <= index < len(self.rows):
            self._set_cursor(index)

    def _set_cursor(self, index: int) -> None:
        index = min(max(index, 0), max(len(self.rows) - 1, 0))
        if index == self.cursor or not self.rows:
            return
        self.cursor = index
        self._show_cursor()
        self.refresh()
        self.post_message(self.Highlighted(self, self.cursor_key))

    def _show_cursor(self) -> None:
        """Scroll so that the cursor row is on screen (under the header)."""
        visible = max(self.size.height - 1, 1)
        top = int(self.scroll_offset.y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False, immediate=True)

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, len(self.rows) + 1)
        self._show_cursor()

    # --- drawing ----------------------------------------------------------------------------------

    def layout(self, width: int) -> list[tuple[int, Column, int]]:
        """(index, column, width) of the columns shown at this width (the flexible one gets the rest)."""
        shown = [(i, c) for i, c in enumerate(self.columns) if width >= c.hide_below and c.label not in self.hidden]
        fixed = sum(c.width or 0 for _, c in shown) + GAP * (len(shown) - 1)
        return [(i, c, c.width if c.width is not None else max(width - fixed, 4)) for i, c in shown]

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            header = [Text(c.label) for c in self.columns]
            return self._strip(header, width, base + self.get_component_rich_style("rowtable--header"))
        index = int(self.scroll_offset.y) + y - 1
        if not self.rows:
            text = Text(self.placeholder if y == 1 else "", style="dim")
            return self._strip_text(text, width, base)
        if index >= len(self.rows):
            return Strip.blank(width, base)
        style = base + self.get_component_rich_style("rowtable--cursor") if index == self.cursor else base
        return self._strip(list(self.cells(self.rows[index])), width, style)

    def _strip(self, cells: list[Text], width: int, style: Any) -> Strip:
        line = Text(no_wrap=True, overflow="crop")
        for number, (index, column, column_width) in enumerate(self.layout(width)):
            if number:
                line.append(" " * GAP)
            cell = cells[index].copy()
            cell.truncate(column_width, overflow="ellipsis")
            cell.align("right" if column.right else "left", column_width)
            line.append_text(cell)
        return self._strip_text(line, width, style)

    def _strip_text(self, text: Text, width: int, style: Any) -> Strip:
        segments = list(text.render(self.app.console, end=""))
        return Strip(Segment.apply_style(segments, style)).crop_extend(0, width, style)

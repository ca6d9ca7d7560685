"""A searchable log: only the lines on screen are drawn; `/` searches, `n` and `N` go to the next and
previous match (case-insensitive), each match highlighted and the current one's line marked.

A log is what a candidate printed: each line is shown (and searched) as data, its control characters
escaped, and drawn as a Text, never as markup.
"""

import re

from rich.segment import Segment
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static

from autoresearch.runner.record.untrusted import escaped

MATCH_STYLE = "black on yellow"
CURRENT_LINE_STYLE = "on grey23"


class LogLines(ScrollView, can_focus=True):
    """The log's lines, with the search matches highlighted."""

    DEFAULT_CSS = "LogLines { background: $surface; scrollbar-size-vertical: 1; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lines: tuple[str, ...] = ()
        self.query = ""
        self.pattern: re.Pattern[str] | None = None
        self.matches: list[int] = []
        self.current = -1

    def set_lines(self, lines: tuple[str, ...]) -> None:
        self.lines = tuple(escaped(line.expandtabs()) for line in lines)
        self.virtual_size = Size(max((len(line) for line in self.lines), default=0), len(self.lines))
        self.search(self.query)

    def search(self, query: str) -> None:
        """Highlight query's matches and go to the first one below the top of the screen."""
        self.query = query
        self.pattern = re.compile(re.escape(query), re.IGNORECASE) if query else None
        self.matches = [i for i, line in enumerate(self.lines) if self.pattern and self.pattern.search(line)]
        top = int(self.scroll_offset.y)
        self.current = next((n for n, i in enumerate(self.matches) if i >= top), 0) if self.matches else -1
        self._show_current()

    def step(self, direction: int) -> None:
        """Go to the next (1) or previous (-1) match, wrapping around."""
        if self.matches:
            self.current = (self.current + direction) % len(self.matches)
            self._show_current()

    def _show_current(self) -> None:
        if self.current >= 0:
            self.scroll_to(y=max(self.matches[self.current] - self.size.height // 2, 0), animate=False)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        if index >= len(self.lines):
            return Strip.blank(width, self.rich_style)
        text = Text(self.lines[index], no_wrap=True)
        if self.pattern is not None:
            text.highlight_regex(self.pattern, MATCH_STYLE)
        if self.current >= 0 and self.matches[self.current] == index:
            text.stylize(CURRENT_LINE_STYLE)
        segments = Segment.apply_style(list(text.render(self.app.console, end="")), self.rich_style)
        return Strip(segments).crop_extend(scroll_x, scroll_x + width, self.rich_style)


class LogPane(Vertical):
    """The log, a search box and what the search found."""

    DEFAULT_CSS = """
    LogPane #search { display: none; }
    LogPane.-searching #search { display: block; }
    LogPane #found { height: 1; color: $text-muted; }
    """
    BINDINGS: list[BindingType] = [  # noqa: RUF012 (Textual's own declaration style)
        Binding("slash", "search", "Search", id="log.search"),
        Binding("n", "step(1)", "Next match", id="log.next"),
        Binding("N", "step(-1)", "Previous match", id="log.previous"),
    ]

    def compose(self) -> ComposeResult:
        yield LogLines(id="log-lines")
        yield Input(placeholder="search the log (enter: done, esc: close)", id="search")
        yield Static("", id="found", markup=False)

    def show(self, lines: tuple[str, ...], note: str) -> None:
        self.query_one(LogLines).set_lines(lines)
        self._found(note)

    def action_search(self) -> None:
        self.add_class("-searching")
        self.query_one("#search", Input).focus()

    def action_step(self, direction: int) -> None:
        self.query_one(LogLines).step(direction)
        self._found()

    @on(Input.Changed, "#search")
    def _changed(self, event: Input.Changed) -> None:
        self.query_one(LogLines).search(event.value)
        self._found()

    @on(Input.Submitted, "#search")
    def _done(self) -> None:
        self.query_one(LogLines).focus()

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape" and self.has_class("-searching"):
            self.remove_class("-searching")
            self.query_one(LogLines).focus()
            event.stop()

    def _found(self, note: str = "") -> None:
        lines = self.query_one(LogLines)
        if note or not lines.pattern:
            text = note or f"{len(lines.lines):,} lines · / search"
        elif lines.matches:
            text = f"match {lines.current + 1} of {len(lines.matches)} for {lines.query!r} · n next · N previous"
        else:
            text = "no match"
        self.query_one("#found", Static).update(text)

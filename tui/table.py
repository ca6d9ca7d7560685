"""The experiments table: newest first, one row per experiment, its cursor the user's pick.

The table tells apart the cursor moves the user makes (keys, clicks), which it reports as `Picked`,
from those the app makes to keep the cursor on the shown experiment, which it does not: a pick on
the top row means "follow the newest", any other row pins that experiment.
"""

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from autoresearch.runner.store import Experiment
from autoresearch.tui import format as fmt

# (key, label, width, right-aligned); the description takes what is left.
COLUMNS: tuple[tuple[str, str, int, bool], ...] = (
    ("id", "id", 5, True),
    ("status", "status", 9, False),
    ("val_bpb", "val_bpb", 8, True),
    ("reported", "reported", 8, True),
    ("training", "train s", 7, True),
    ("total", "total s", 7, True),
)
CELL_PADDING = 1
SCROLLBAR = 2
MIN_DESCRIPTION = 12


class ExperimentTable(DataTable):
    """Experiments, newest first; row keys are experiment ids."""

    BINDINGS: list[BindingType] = [  # noqa: RUF012 (Textual's own declaration style)
        Binding("up", "cursor_up", "Up", show=False, id="experiments.up"),
        Binding("down", "cursor_down", "Down", show=False, id="experiments.down"),
        Binding("pageup", "page_up", "Page up", show=False, id="experiments.page_up"),
        Binding("pagedown", "page_down", "Page down", show=False, id="experiments.page_down"),
        Binding("home", "scroll_top", "Newest", show=False, id="experiments.newest"),
        Binding("end", "scroll_bottom", "Oldest", show=False, id="experiments.oldest"),
        Binding("enter", "select_cursor", "Select", show=False, id="experiments.select"),
    ]

    class Picked(Message):
        """The user put the cursor on an experiment; None: on the top row, i.e. follow the newest."""

        def __init__(self, experiment_id: int | None) -> None:
            super().__init__()
            self.experiment_id = experiment_id

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", cell_padding=CELL_PADDING, **kwargs)
        self._rows: dict[int, Experiment] = {}
        self._order: list[int] = []  # ids, newest first
        self._description_width = 0

    def show(self, experiments: tuple[Experiment, ...], selected_id: int | None) -> None:
        """Show experiments (oldest first, as the store lists them) with the cursor on selected_id."""
        order = [e.id for e in reversed(experiments)]
        if order != self._order or self._description_width != self._wanted_description_width():
            self._rebuild(experiments)
        else:
            for experiment in experiments:
                if self._rows[experiment.id] != experiment:
                    self._update_row(experiment)
        if selected_id in self._rows:
            row = self._order.index(selected_id)
            if row != self.cursor_row:
                self.move_cursor(row=row, animate=False)

    def on_resize(self, event: events.Resize) -> None:
        if self._order and self._description_width != self._wanted_description_width():
            selected = self._order[self.cursor_row] if 0 <= self.cursor_row < len(self._order) else None
            self.show(tuple(self._rows[i] for i in reversed(self._order)), selected)

    def _wanted_description_width(self) -> int:
        fixed = sum(width + 2 * CELL_PADDING for _, _, width, _ in COLUMNS) + 2 * CELL_PADDING + SCROLLBAR
        return max(self.size.width - fixed, MIN_DESCRIPTION)

    def _rebuild(self, experiments: tuple[Experiment, ...]) -> None:
        self._description_width = self._wanted_description_width()
        self.clear(columns=True)
        for key, label, width, right in COLUMNS:
            self.add_column(Text(label, justify="right" if right else "left"), width=width, key=key)
        self.add_column("description", width=self._description_width, key="description")
        self._rows = {e.id: e for e in experiments}
        self._order = [e.id for e in reversed(experiments)]
        for experiment in reversed(experiments):
            self.add_row(*self._cells(experiment), key=str(experiment.id))

    def _update_row(self, experiment: Experiment) -> None:
        self._rows[experiment.id] = experiment
        keys = [key for key, *_ in COLUMNS] + ["description"]
        for key, cell in zip(keys, self._cells(experiment), strict=True):
            self.update_cell(str(experiment.id), key, cell)

    def _cells(self, e: Experiment) -> list[Text]:
        right = {"justify": "right"}
        return [
            Text(str(e.id), **right),
            fmt.status_text(e.status),
            Text(fmt.bpb(e.val_bpb), **right),
            Text(fmt.bpb(fmt.reported_val_bpb(e)), style="dim", **right),
            Text(fmt.seconds(e.training_seconds), **right),
            Text(fmt.seconds(e.total_seconds), **right),
            Text(fmt.clip(e.description, self._description_width)),
        ]

    # The user's moves: each is the DataTable's own, then reported as a pick.

    def _picked(self) -> None:
        if 0 <= self.cursor_row < len(self._order):
            self.post_message(self.Picked(None if self.cursor_row == 0 else self._order[self.cursor_row]))

    def action_cursor_up(self) -> None:
        super().action_cursor_up()
        self._picked()

    def action_cursor_down(self) -> None:
        super().action_cursor_down()
        self._picked()

    def action_page_up(self) -> None:
        super().action_page_up()
        self._picked()

    def action_page_down(self) -> None:
        super().action_page_down()
        self._picked()

    def action_scroll_top(self) -> None:
        super().action_scroll_top()
        self._picked()

    def action_scroll_bottom(self) -> None:
        super().action_scroll_bottom()
        self._picked()

    def action_select_cursor(self) -> None:
        super().action_select_cursor()
        self._picked()

    async def _on_click(self, event: events.Click) -> None:
        await super()._on_click(event)
        self._picked()

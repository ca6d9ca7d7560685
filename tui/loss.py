"""The loss panel: the shown experiment's training loss against time, and its time budget's progress.

The x axis is training seconds (train.py's own clock, `elapsed`), from 0 to the budget when the
budget is known, so the curve fills the plot as the budget runs out; without elapsed values it is the
step number. The numbers are what train.py printed: advisory, like everything it prints.
"""

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget

from autoresearch.runner.store import Experiment, MetricPoint
from autoresearch.tui.plot import braille_rows, column_spans, padded_range

Y_LABEL_WIDTH = 7
LABEL_EVERY = 4  # rows between y labels
LINE_STYLE = "bold cyan"


def curve(points: tuple[MetricPoint, ...]) -> tuple[list[float], list[float], str]:
    """The points' (x, loss) values and the x unit: elapsed seconds when train.py gave them, else steps."""
    usable = [p for p in points if p.loss is not None]
    if usable and all(p.elapsed is not None for p in usable):
        return [p.elapsed for p in usable], [p.loss for p in usable], "s"  # type: ignore[misc]
    return [float(p.step) for p in usable], [p.loss for p in usable], "step"  # type: ignore[misc]


def x_label(value: float, unit: str) -> str:
    """An x-axis label: `0 s`, `14.9 s`, `300 s`, `step 1200`."""
    if unit != "s":
        return f"step {value:.0f}"
    return f"{value:.1f} s" if 0 < abs(value) < 100 and value != int(value) else f"{value:.0f} s"


class LossPlot(Widget):
    """A braille line plot of loss, with y labels on the left and x labels underneath."""

    DEFAULT_CSS = "LossPlot { height: 1fr; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._points: tuple[MetricPoint, ...] = ()
        self._x_max: float | None = None
        self._placeholder = ""

    def plot(self, points: tuple[MetricPoint, ...], x_max: float | None, placeholder: str) -> None:
        """Draw points on an x axis from 0 to x_max (None: to the last point); placeholder: when none."""
        if (points, x_max, placeholder) != (self._points, self._x_max, self._placeholder):
            self._points, self._x_max, self._placeholder = points, x_max, placeholder
            self.refresh()

    def render(self) -> Text:
        width, height = self.size.width - Y_LABEL_WIDTH - 1, self.size.height - 1
        xs, ys, unit = curve(self._points)
        y_range = padded_range(ys)
        if width < 4 or height < 2 or y_range is None:
            return Text(self._placeholder, style="dim", justify="center")
        x_lo = 0.0 if unit == "s" else min(xs)
        x_hi = max(self._x_max or 0.0, max((x for x in xs if math.isfinite(x)), default=0.0))
        x_range = (x_lo, x_hi if x_hi > x_lo else x_lo + 1.0)
        rows = braille_rows(column_spans(xs, ys, x_range, width * 2), y_range, height)
        text = Text(no_wrap=True, overflow="crop")
        for index, row in enumerate(rows):
            y = y_range[1] - (y_range[1] - y_range[0]) * index / max(height - 1, 1)
            label = f"{y:.3f}" if index == height - 1 or (index % LABEL_EVERY == 0 and index < height - 2) else ""
            text.append(f"{label:>{Y_LABEL_WIDTH - 1}} ", style="dim")
            text.append("│", style="dim")
            text.append(row, style=LINE_STYLE)
            text.append("\n")
        left, right = x_label(x_range[0], unit), x_label(x_range[1], unit)
        gap = max(width - len(left) - len(right), 1)
        text.append(" " * Y_LABEL_WIDTH + "└" + left + " " * gap + right, style="dim")
        return text


class BudgetGauge(Widget):
    """One line: the shown experiment's training time against its budget."""

    DEFAULT_CSS = "BudgetGauge { height: 1; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._state: tuple[Experiment | None, MetricPoint | None, float | None] = (None, None, None)

    def gauge(self, experiment: Experiment, last: MetricPoint | None, budget_s: float | None) -> None:
        if (experiment, last, budget_s) != self._state:
            self._state = (experiment, last, budget_s)
            self.refresh()

    def render(self) -> Text:
        experiment, last, budget_s = self._state
        return Text() if experiment is None else budget_line(experiment, last, budget_s, self.size.width)


class LossPanel(Vertical):
    """The plot of the shown experiment, with its budget gauge under it."""

    DEFAULT_CSS = """
    LossPanel { border: round $secondary; border-title-color: $text; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield LossPlot(id="plot")
        yield BudgetGauge(id="budget")

    def show(self, experiment: Experiment, points: tuple[MetricPoint, ...], budget_s: float | None,
             following: bool) -> None:
        """Show the experiment's points; budget_s: its time budget, when known."""
        mode = "following the newest" if following else "picked"
        self.border_title = f"loss · #{experiment.id} {experiment.status} · {mode}"
        active = experiment.status in ("pending", "running")
        placeholder = "waiting for the first progress line…" if active else "no progress recorded"
        self.query_one(LossPlot).plot(points, budget_s or experiment.training_seconds, placeholder)
        self.query_one(BudgetGauge).gauge(experiment, points[-1] if points else None, budget_s)


def budget_line(experiment: Experiment, last: MetricPoint | None, budget_s: float | None, width: int) -> Text:
    """`step N · loss L · 34.2 s of 60 s ━━━━━━━━━━  57%`: training time against the budget."""
    elapsed = experiment.training_seconds
    if elapsed is None and last is not None:
        elapsed = last.elapsed
    loss = f" · loss {last.loss:.4f}" if last is not None and last.loss is not None else ""
    if last is not None and width < 60:  # keep room for the gauge
        loss = ""
    head = f"step {last.step}{loss} · " if last is not None else ""
    if elapsed is None:
        return Text(f"{head}not training yet" + (f" · budget {budget_s:g} s" if budget_s else ""), style="dim")
    if not budget_s:
        return Text(f"{head}{elapsed:.1f} s (budget unknown)", style="dim")
    label = f"{head}{elapsed:.1f} s of {budget_s:g} s "
    fraction = min(max(elapsed / budget_s, 0.0), 1.0)
    bar_width = max(width - len(label) - 5, 0)
    done = round(fraction * bar_width)
    text = Text(label)
    text.append("━" * done, style="bold green" if fraction >= 1 else "bold yellow")
    text.append("━" * (bar_width - done), style="grey23")
    text.append(f" {fraction:4.0%}")
    return text

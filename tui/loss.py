"""The loss panel: the followed experiment's training loss against time, the best kept experiment's
curve under it for comparison, and the time budget's progress.

The x axis is training seconds (train.py's own clock, `elapsed`), from 0 to the budget when it is known,
so the curve fills the plot as the budget runs out; without elapsed values it is the step number. The
numbers are what train.py printed: advisory, like everything it prints.
"""

import math
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget

from autoresearch.runner.record.status import OPEN
from autoresearch.runner.record.store import Experiment, MetricPoint
from autoresearch.tui.plot import Canvas, axis_rows, column_spans, padded_range, x_axis

Y_LABEL_WIDTH = 7
LIVE_STYLE = "bold cyan"
BEST_STYLE = "green"


@dataclass(frozen=True)
class Curve:
    """One experiment's points, as x values (seconds or steps) and losses."""

    xs: list[float]
    ys: list[float]
    unit: str  # "s" or "step"


def curve(points: tuple[MetricPoint, ...]) -> Curve:
    """The points' (x, loss) values: x in elapsed seconds when train.py gave them, else in steps."""
    usable = [p for p in points if p.loss is not None]
    if usable and all(p.elapsed is not None for p in usable):
        return Curve([p.elapsed for p in usable], [p.loss for p in usable], "s")  # type: ignore[misc]
    return Curve([float(p.step) for p in usable], [p.loss for p in usable], "step")  # type: ignore[misc]


def x_label(value: float, unit: str) -> str:
    """An x-axis label: `0 s`, `14.9 s`, `300 s`, `step 1200`."""
    if unit != "s":
        return f"step {value:.0f}"
    return f"{value:.1f} s" if 0 < abs(value) < 100 and value != int(value) else f"{value:.0f} s"


def plot_text(live: Curve, best: Curve | None, x_max: float | None, width: int, height: int) -> Text | None:
    """The plot with its axes in width x height cells; None when there is nothing to draw."""
    plot_width, plot_height = width - Y_LABEL_WIDTH - 1, height - 1
    layers = [(c, style) for c, style in ((best, BEST_STYLE), (live, LIVE_STYLE))
              if c is not None and c.ys and c.unit == live.unit]
    y_range = padded_range([y for c, _ in layers for y in c.ys])
    if plot_width < 4 or plot_height < 1 or y_range is None or not live.ys:
        return None
    finite_x = [x for c, _ in layers for x in c.xs if math.isfinite(x)]
    x_lo = 0.0 if live.unit == "s" else min(finite_x)
    x_hi = max(x_max or 0.0, *finite_x)
    x_range = (x_lo, x_hi if x_hi > x_lo else x_lo + 1.0)
    canvas = Canvas(plot_width, plot_height, y_range)
    for c, style in layers:
        canvas.line(column_spans(c.xs, c.ys, x_range, canvas.columns), style)
    text = axis_rows(canvas.rows(), y_range, Y_LABEL_WIDTH)
    return text.append_text(x_axis(x_label(x_range[0], live.unit), x_label(x_range[1], live.unit), plot_width,
                                   Y_LABEL_WIDTH))


class LossPlot(Widget):
    """A braille line plot of one experiment's loss, optionally over another's (the best)."""

    DEFAULT_CSS = "LossPlot { height: 1fr; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._points: tuple[tuple[MetricPoint, ...], tuple[MetricPoint, ...] | None] | None = None
        self._curves: tuple[Curve, Curve | None] = (curve(()), None)
        self._x_max: float | None = None
        self._placeholder = ""

    def plot(self, points: tuple[MetricPoint, ...], best: tuple[MetricPoint, ...] | None, x_max: float | None,
             placeholder: str) -> None:
        """Draw points (and best under them) on an x axis from 0 to x_max (None: to the last point)."""
        same = self._points is not None and points is self._points[0] and best is self._points[1]
        if same and (x_max, placeholder) == (self._x_max, self._placeholder):
            return
        self._points = (points, best)
        self._curves = (curve(points), curve(best) if best else None)
        self._x_max, self._placeholder = x_max, placeholder
        self.refresh()

    def render(self) -> Text:
        text = plot_text(*self._curves, self._x_max, self.size.width, self.size.height)
        return text if text is not None else Text(self._placeholder, style="dim", justify="center")


class BudgetGauge(Widget):
    """One line: the followed experiment's training time against its budget."""

    DEFAULT_CSS = "BudgetGauge { height: 1; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._state: tuple[Experiment | None, MetricPoint | None, float | None] = (None, None, None)

    def gauge(self, experiment: Experiment | None, last: MetricPoint | None, budget_s: float | None) -> None:
        if (experiment, last, budget_s) != self._state:
            self._state = (experiment, last, budget_s)
            self.refresh()

    def render(self) -> Text:
        experiment, last, budget_s = self._state
        return Text() if experiment is None else budget_line(experiment, last, budget_s, self.size.width)


class LossPanel(Vertical):
    """The loss plot of the followed experiment, the best kept one under it, and the budget gauge."""

    DEFAULT_CSS = """
    LossPanel { border: round $secondary; border-title-color: $text; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield LossPlot(id="plot")
        yield BudgetGauge(id="budget")

    def show(self, experiment: Experiment, points: tuple[MetricPoint, ...], best: Experiment | None,
             best_points: tuple[MetricPoint, ...], budget_s: float | None) -> None:
        """Show experiment's points over best's (unless it is the best); budget_s: the time budget, if known."""
        overlay = best_points if best is not None and best.id != experiment.id else None
        title = f"loss · #{experiment.seq} {experiment.status}" + (f" · [green]best #{best.seq}[/]" if overlay else "")
        if title != self.border_title:
            self.border_title = title
        active = experiment.status in OPEN
        placeholder = "waiting for the first progress line…" if active else "no progress recorded"
        self.query_one(LossPlot).plot(points, overlay, budget_s or experiment.training_seconds, placeholder)
        self.query_one(BudgetGauge).gauge(experiment, points[-1] if points else None, budget_s)


    def waiting(self, message: str) -> None:
        """No experiment to show yet: say what is happening instead."""
        self.border_title = "loss"
        self.query_one(LossPlot).plot((), None, None, message)
        self.query_one(BudgetGauge).gauge(None, None, None)


def budget_line(experiment: Experiment, last: MetricPoint | None, budget_s: float | None, width: int) -> Text:
    """`step N · loss L · 34.2 s of 60 s ━━━━━━━━━━  57%`: training time against the budget."""
    elapsed = experiment.training_seconds
    if elapsed is None and last is not None:
        elapsed = last.elapsed
    loss = f" · loss {last.loss:.4f}" if last is not None and last.loss is not None and width >= 60 else ""
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

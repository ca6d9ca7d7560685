"""The progress chart: val_bpb of every scored experiment as a point, the kept frontier as a line.

x is the experiment's number in the run, y its trusted val_bpb. The y axis runs from the best score to
the baseline's with some headroom, not to the worst discard: a candidate that made things much worse
would otherwise flatten the frontier the chart is for; such points sit on the top edge.
"""

from rich.text import Text
from textual.widget import Widget

from autoresearch.runner.record.status import Status
from autoresearch.runner.record.store import Experiment
from autoresearch.runner.record.views import frontier
from autoresearch.tui.plot import Canvas, axis_rows, column_spans, x_axis

Y_LABEL_WIDTH = 9
POINT_STYLE = "grey62"
KEPT_STYLE = "bold green"
FRONTIER_STYLE = "green"


def chart_text(experiments: tuple[Experiment, ...], width: int, height: int) -> Text | None:
    """The chart in width x height cells, or None when no experiment has a score yet."""
    scored = [e for e in experiments if e.val_bpb is not None]
    line = [(float(seq), bpb) for seq, bpb in frontier(experiments)]
    plot_width, plot_height = width - Y_LABEL_WIDTH - 1, height - 1
    if not scored or plot_width < 4 or plot_height < 1:
        return None
    lo = min(e.val_bpb for e in scored)  # type: ignore[type-var]
    baseline = max(line[0][1] if line else lo, lo)
    worst = max(e.val_bpb for e in scored)  # type: ignore[type-var]
    # Worse experiments show too, but a wild one cannot squash the frontier: at most as far above the
    # baseline as the frontier has come down (or 1% of it), above that they are off the chart.
    hi = max(baseline, min(worst, baseline + max(baseline - lo, 0.01 * baseline)))
    pad = (hi - lo) * 0.1 or max(abs(hi) * 0.01, 0.001)
    y_range = (lo - pad, hi + pad)
    x_range = (float(experiments[0].seq), float(max(experiments[-1].seq, experiments[0].seq + 1)))
    canvas = Canvas(plot_width, plot_height, y_range)
    for status_kept, style in ((False, POINT_STYLE), (True, KEPT_STYLE)):
        chosen = [e for e in scored if (e.status == Status.KEEP) == status_kept]
        canvas.dots(column_spans([float(e.seq) for e in chosen], [e.val_bpb for e in chosen], x_range,  # type: ignore[misc]
                                 canvas.columns), style)
    canvas.line(column_spans([p[0] for p in line], [p[1] for p in line], x_range, canvas.columns), FRONTIER_STYLE)
    text = axis_rows(canvas.rows(), y_range, Y_LABEL_WIDTH, decimals=6)
    return text.append_text(x_axis(f"#{x_range[0]:.0f}", f"#{x_range[1]:.0f}", plot_width, Y_LABEL_WIDTH))


class ProgressChart(Widget):
    """val_bpb over the run's experiments."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._experiments: tuple[Experiment, ...] = ()

    def show(self, experiments: tuple[Experiment, ...]) -> None:
        if experiments is not self._experiments:
            self._experiments = experiments
            self.refresh()

    def render(self) -> Text:
        text = chart_text(self._experiments, self.size.width, self.size.height)
        return text if text is not None else Text("no scored experiment yet", style="dim", justify="center")

"""The progress chart, drawn like progress.png: every candidate's val_bpb as a point, the kept frontier as a step line.

x is the experiment's number in the run, y its trusted val_bpb. Discarded experiments are grey dots, kept ones
green marks where the frontier steps down to them; the frontier holds the best score until the next keep,
then drops straight to it. Failures have no score to plot (a violation's is not to be trusted): they are marks
on a strip above the plot, at their number, as in progress.png: a red cross for a crash, timeout, oom or
killed experiment, a magenta triangle for a violation or a blocked one (it wins a cell it shares). Extra
seeds (role noise or confirm) measure a train.py already run: they are not experiments of the chart, so
they are not drawn.

The y axis runs from the best score to the baseline's with some headroom, not to the worst discard: a
candidate that made things much worse would otherwise flatten the frontier the chart is for; such points
sit on the top edge.
"""

from rich.text import Text
from textual.widget import Widget

from autoresearch.runner.record.status import CRASHED, RULE_BREAKS, Status
from autoresearch.runner.record.store import Experiment
from autoresearch.runner.record.views import candidate, chart_top, frontier
from autoresearch.tui.plot import Canvas, Span, axis_rows, column_spans, step_spans

Y_LABEL_WIDTH = 9
POINT_STYLE = "grey62"
KEPT_STYLE = "bold green"
KEPT_GLYPH = "●"
FRONTIER_STYLE = "green"
# The failures' marks, in drawing order: the run broke, then a rule was broken (progress.png's two kinds).
FAILURE_MARKS = ((CRASHED, "×", "red"), (RULE_BREAKS, "▾", "magenta"))
FAILURES = CRASHED | RULE_BREAKS
LEGEND = (("⠒⠒", FRONTIER_STYLE), (" best kept  ", "dim"), (KEPT_GLYPH, KEPT_STYLE), (" keep  ", "dim"),
          ("⠂", POINT_STYLE), (" discard  ", "dim"), ("×", "red"), (" crash  ", "dim"), ("▾", "magenta"),
          (" violation", "dim"))


def chart_text(experiments: tuple[Experiment, ...], width: int, height: int) -> Text | None:
    """The chart in width x height cells, or None when no experiment has a score yet."""
    candidates = [e for e in experiments if candidate(e)]
    scored = [e for e in candidates if e.val_bpb is not None and e.status not in FAILURES]
    failed = [e for e in candidates if e.status in FAILURES]
    line = [(float(seq), bpb) for seq, bpb in frontier(candidates)]
    plot_width, plot_height = width - Y_LABEL_WIDTH - 1, height - 2  # less the failure strip and the x axis
    if not scored or plot_width < 4 or plot_height < 1:
        return None
    scores = [e.val_bpb for e in scored]
    lo, hi = min(scores), chart_top(scores, line[0][1] if line else None)  # type: ignore[arg-type, type-var]
    pad = (hi - lo) * 0.1 or max(abs(hi) * 0.01, 0.001)
    y_range = (lo - pad, hi + pad)
    x_range = (float(candidates[0].seq), float(max(candidates[-1].seq, candidates[0].seq + 1)))
    canvas = Canvas(plot_width, plot_height, y_range)

    def spans(chosen: list[Experiment]) -> list[Span | None]:
        return column_spans([float(e.seq) for e in chosen], [e.val_bpb for e in chosen], x_range,  # type: ignore[misc]
                            canvas.columns)

    canvas.dots(spans([e for e in scored if e.status != Status.KEEP]), POINT_STYLE)
    canvas.line(step_spans([p[0] for p in line], [p[1] for p in line], x_range, canvas.columns), FRONTIER_STYLE)
    canvas.marks(spans([e for e in scored if e.status == Status.KEEP]), KEPT_GLYPH, KEPT_STYLE)
    text = failure_strip(failed, x_range, plot_width)
    text.append_text(axis_rows(canvas.rows(), y_range, Y_LABEL_WIDTH, decimals=6))
    return text.append_text(axis_with_key(f"#{x_range[0]:.0f}", f"#{x_range[1]:.0f}", plot_width))


def failure_strip(failed: list[Experiment], x_range: Span, plot_width: int) -> Text:
    """The row above the plot: a mark in each cell holding a failed experiment's number."""
    marks: dict[int, tuple[str, str]] = {}
    for statuses, glyph, style in FAILURE_MARKS:
        chosen = [float(e.seq) for e in failed if e.status in statuses]
        columns = column_spans(chosen, [0.0] * len(chosen), x_range, plot_width * 2)
        marks.update({column // 2: (glyph, style) for column, span in enumerate(columns) if span is not None})
    text = Text(no_wrap=True, overflow="crop").append(f"{'failed':>{Y_LABEL_WIDTH - 1}} │", style="dim")
    for cell in range(plot_width):
        glyph, style = marks.get(cell, (" ", ""))
        text.append(glyph, style=style or None)
    return text.append("\n")


def axis_with_key(left: str, right: str, plot_width: int) -> Text:
    """The line under the plot: the corner, the first and last numbers at the ends, the key between them if it
    fits."""
    legend = Text.assemble(*LEGEND)
    gap = plot_width - len(left) - len(right)
    text = Text(no_wrap=True, overflow="crop").append(" " * Y_LABEL_WIDTH + "└" + left, style="dim")
    if gap >= legend.cell_len + 2:
        before = (gap - legend.cell_len) // 2
        text.append(" " * before).append_text(legend).append(" " * (gap - before - legend.cell_len))
    else:
        text.append(" " * max(gap, 1))
    return text.append(right, style="dim")


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

"""progress.png, in the style users share: every candidate a point, the kept frontier as a step line.

Discarded experiments are grey dots; kept ones green, labelled with their description (the most important
first, a label dropped rather than drawn over another); failures sit on the top edge, where a score would
be: red crosses for crash, timeout, oom and killed, purple triangles for violation and blocked (a violation's
score is the candidate's word, never drawn). The y axis stops a little above the baseline (views.chart_top, as
in the TUI), so a diverged run cannot flatten the frontier; a discard above it is a grey triangle on the top
edge. The baseline is a dashed line. Noise and confirm seeds are measurements, not candidates, and are left
out. matplotlib draws on its Agg canvas, never a display; points are drawn as one vectorised scatter per
kind, and labels only for kept experiments, so 10,000 experiments take about as long as ten.
"""

import io
import sqlite3
import warnings
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox, blended_transform_factory

from autoresearch.runner.record import store, views
from autoresearch.runner.record.status import CRASHED, FAILED, RULE_BREAKS, Status
from autoresearch.runner.report import output, queries

SIZE_IN = (12.0, 6.5)
DPI = 110
GREY, GREEN, RED, PURPLE, INK = "#a8a8a8", "#1a9641", "#d7301f", "#7b3294", "#444444"
FAILURE_Y = 0.975  # where failures sit, in axes coordinates: the top edge
LABEL_CHARS = 42
MAX_LABELS = 24
LABEL_TRIES = 200  # kept experiments tried for a label, the most important first
LABEL_OFFSETS = ((6, 6, "left", "bottom"), (6, -6, "left", "top"), (-6, 6, "right", "bottom"),
                 (-6, -6, "right", "top"))  # points from the dot, and the text's alignment there


def write_progress_png(conn: sqlite3.Connection, run: store.Run, path: Path, *, hours: bool = False) -> Path:
    """Draw run's progress.png at path (x: experiments, or hours since the run started); returns path."""
    output.checked(path)
    return output.write(path, chart_png(run, queries.run_experiments(conn, run), hours=hours))


def chart_png(run: store.Run, experiments: list[store.Experiment], *, hours: bool = False) -> bytes:
    """The chart of run's experiments (store.list_experiments, oldest first) as PNG bytes."""
    figure = _figure(run, [e for e in experiments if views.candidate(e)], hours)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # a description in a script the font lacks draws boxes, which is fine
        warnings.filterwarnings("ignore", message="Glyph .* missing")
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _figure(run: store.Run, candidates: list[store.Experiment], hours: bool) -> Figure:
    figure = Figure(figsize=SIZE_IN, dpi=DPI)
    canvas = FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.07, right=0.985, top=0.92, bottom=0.09)
    ax = figure.add_subplot()
    x_of = {e.seq: _x(run, e, hours) for e in candidates}
    kept = views.kept(candidates)
    first, top = views.baseline(candidates), views.best(candidates)
    trusted = [e for e in candidates if e.val_bpb is not None and e.status not in FAILED]  # a violation's is forged
    scored = np.array([[x_of[e.seq], e.val_bpb] for e in trusted if e.status != Status.KEEP]).reshape(-1, 2)
    low, high = _y_range(trusted, first)
    edge = blended_transform_factory(ax.transData, ax.transAxes)
    above = scored[:, 1] > high
    if (~above).any():
        ax.scatter(scored[~above, 0], scored[~above, 1], s=12, c=GREY, linewidths=0, zorder=2,
                   label=f"discarded ({int((~above).sum())})")
    if above.any():  # on the top edge, like the failures: still there, and plainly worse than what is drawn
        ax.scatter(scored[above, 0], [FAILURE_Y] * int(above.sum()), transform=edge, marker="^", s=18, c=GREY,
                   linewidths=0, zorder=5, clip_on=False, label=f"discarded, above the chart ({int(above.sum())})")
    line = sorted((x_of[seq], bpb) for seq, bpb in views.frontier(candidates))
    if line:
        xs, ys = np.array(line).T
        ax.step(xs, np.minimum.accumulate(ys), where="post", color=GREEN, linewidth=1.8, zorder=3,
                label="best so far")
    if kept:
        ax.scatter([x_of[e.seq] for e in kept], [e.val_bpb for e in kept], s=38, c=GREEN, edgecolors="#0b4d22",
                   linewidths=0.8, zorder=4, label=f"kept ({len(kept)})")
    if first is not None and first.val_bpb is not None:
        ax.axhline(first.val_bpb, color=INK, linestyle="--", linewidth=1.0, zorder=1,
                   label=f"baseline {first.val_bpb:.4f}")
    for statuses, marker, colour, name in ((CRASHED, "x", RED, "crash, timeout, oom, killed"),
                                           (RULE_BREAKS, "v", PURPLE, "violation, blocked")):
        xs_failed = [x_of[e.seq] for e in candidates if e.status in statuses]
        if xs_failed:
            ax.scatter(xs_failed, [FAILURE_Y] * len(xs_failed), transform=edge, marker=marker, s=22, c=colour,
                       linewidths=1.0, zorder=5, clip_on=False, label=f"{name} ({len(xs_failed)})")
    ax.set_xlim(*_x_range(list(x_of.values()), hours))
    ax.set_ylim(low, high)
    if not len(scored) and not kept:
        ax.text(0.5, 0.5, "no experiment scored yet", transform=ax.transAxes, ha="center", va="center",
                color=INK, fontsize=12, parse_math=False)
        ax.set_yticks([])
    if not hours:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("hours since the run started" if hours else "experiment", fontsize=10)
    ax.set_ylabel("val_bpb (lower is better)", fontsize=10)
    ax.grid(color="#e4e4e4", linewidth=0.7, zorder=0)
    ax.set_axisbelow(True)
    ax.set_title(_title(run, candidates, first, top), fontsize=12, loc="left", parse_math=False)
    legend = ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.95), fontsize=8, framealpha=0.92)
    _labels(canvas, ax, legend, kept, x_of)
    return figure


def _x(run: store.Run, experiment: store.Experiment, hours: bool) -> float:
    """Its experiment number, or the hours from the run's start to its end (its start, while it runs)."""
    if not hours:
        return float(experiment.seq)
    return ((experiment.ended_at or experiment.started_at) - run.started_at) / 3600


def _x_range(xs: list[float], hours: bool) -> tuple[float, float]:
    if not xs:
        return (0.0, 1.0)
    low, high = (0.0 if hours else min(xs) - 0.5), max(xs)
    pad = max((high - low) * 0.02, 0.05 if hours else 0.5)
    return low, high + pad


def _y_range(scored: list[store.Experiment], first: store.Experiment | None) -> tuple[float, float]:
    """From the best score to views.chart_top (a little above the baseline, so a diverged run cannot flatten the
    frontier), with room at the top edge for the failures and the discards above the chart."""
    values = [e.val_bpb for e in scored]
    if not values:
        return (0.0, 1.0)
    low, high = min(values), views.chart_top(values, first.val_bpb if first is not None else None)  # type: ignore
    pad = max((high - low) * 0.08, 1e-4)
    return low - pad, high + 2.5 * pad  # room at the top edge for the failures


def _title(run: store.Run, candidates: list[store.Experiment], first: store.Experiment | None,
           top: store.Experiment | None) -> str:
    head = f"autoresearch run {run.tag}: {len(candidates)} experiments, {len(views.kept(candidates))} kept"
    if first is None or top is None:
        return head
    return f"{head}; val_bpb {first.val_bpb:.6f} \u2192 {top.val_bpb:.6f}"


def _labels(canvas: FigureCanvasAgg, ax: Axes, legend: Legend, kept: list[store.Experiment],
            x_of: dict[int, float]) -> None:
    """Label kept points with their descriptions, the baseline and the biggest gains first; a label that would
    overlap the legend or one already placed, or leave the axes, tries the other corners and is dropped when
    none fits."""
    renderer = canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    gains = {e.seq: (kept[i - 1].val_bpb - e.val_bpb if i else float("inf")) for i, e in enumerate(kept)}  # type: ignore[operator]
    order = sorted(kept, key=lambda e: gains[e.seq], reverse=True)[:LABEL_TRIES]
    placed: list[Bbox] = [legend.get_window_extent(renderer)]
    for e in order:
        if len(placed) > MAX_LABELS:
            return
        for dx, dy, ha, va in LABEL_OFFSETS:
            label = ax.annotate(_short(e.description), (x_of[e.seq], e.val_bpb), xytext=(dx, dy),
                                textcoords="offset points", ha=ha, va=va, fontsize=7.5, color="#0b4d22",
                                parse_math=False, zorder=6,
                                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75})
            box = label.get_window_extent(renderer).expanded(1.04, 1.1)
            if frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1) and \
                    not any(box.overlaps(other) for other in placed):
                placed.append(box)
                break
            label.remove()


def _short(description: str) -> str:
    text = " ".join(description.split())
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "\u2026"

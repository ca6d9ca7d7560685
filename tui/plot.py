"""Plots in braille characters, for any number of points in a fixed number of terminal cells.

Each character cell holds 2 x 4 dots, so a plot of W x H cells is 2W x 4H dots. Points are first
down-sampled to one bucket per dot column, keeping each bucket's minimum and maximum (a spike never
disappears however many points share a column). A line draws each column's span from its minimum to its
maximum, stretched to meet the previous column so the line stays connected; empty columns between two
points get the straight line between them, or, for a step line (step_spans), the level of the point before
them. Scattered points draw only each column's minimum and maximum; marks put a character (a glyph) in the
cell of each column's minimum and maximum instead of dots, for the few points that must stand out.
Layers are drawn in order on one canvas; a cell takes the colour of the last layer with a dot in it, and a
marked cell shows its glyph whatever is drawn after it.
"""

import itertools
import math
from collections.abc import Iterator, Sequence

from rich.text import Text

BRAILLE_BLANK = 0x2800
# The bit of the dot at (row 0..3 from the top, column 0..1) inside one braille character.
DOT_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))

Span = tuple[float, float]


def column_spans(xs: Sequence[float], ys: Sequence[float], x_range: Span, columns: int) -> list[Span | None]:
    """For each of `columns` equal slices of x_range, the (min, max) of the ys in it, or None if empty.

    Points outside x_range, and non-finite values, are left out.
    """
    spans: list[Span | None] = [None] * max(columns, 0)
    for column, y in _placed(xs, ys, x_range, columns):
        span = spans[column]
        spans[column] = (y, y) if span is None else (min(span[0], y), max(span[1], y))
    return spans


def step_spans(xs: Sequence[float], ys: Sequence[float], x_range: Span, columns: int) -> list[Span | None]:
    """column_spans of a step line through points in x order: each y holds until the next point's column, where
    Canvas.line drops (or rises) straight to the next y. Empty columns between two points hold the level of the
    point before them, where fill_gaps would draw a slope; before the first point and after the last they stay
    empty."""
    spans: list[Span | None] = [None] * max(columns, 0)
    previous: tuple[int, float] | None = None  # the column and level of the last point placed
    for column, y in _placed(xs, ys, x_range, columns):
        if previous is not None:
            for gap in range(previous[0] + 1, column):
                spans[gap] = (previous[1], previous[1])
        span = spans[column]
        spans[column] = (y, y) if span is None else (min(span[0], y), max(span[1], y))
        previous = (column, y)
    return spans


def _placed(xs: Sequence[float], ys: Sequence[float], x_range: Span, columns: int) -> Iterator[tuple[int, float]]:
    """(dot column, y) of each point inside x_range with finite coordinates, in the order given."""
    x_lo, x_hi = x_range
    if columns <= 0 or not x_hi > x_lo:
        return
    scale = columns / (x_hi - x_lo)
    for x, y in zip(xs, ys, strict=True):
        if math.isfinite(x) and math.isfinite(y) and x_lo <= x <= x_hi:
            yield min(int((x - x_lo) * scale), columns - 1), y


def fill_gaps(spans: list[Span | None]) -> list[Span | None]:
    """Empty columns between two filled ones get the straight line between them (sparse data stays a line)."""
    filled = [i for i, span in enumerate(spans) if span is not None]
    for left, right in itertools.pairwise(filled):
        start, end = spans[left][1], spans[right][0]  # type: ignore[index]
        for column in range(left + 1, right):
            y = start + (end - start) * (column - left) / (right - left)
            spans[column] = (y, y)
    return spans


def padded_range(values: Sequence[float]) -> Span | None:
    """(min, max) of the finite values with 5% headroom on each side; None when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    lo, hi = min(finite), max(finite)
    pad = (hi - lo) * 0.05 or max(abs(hi) * 0.05, 0.01)
    return lo - pad, hi + pad


class Canvas:
    """width x height character cells of braille dots over a y range, drawn in coloured layers."""

    def __init__(self, width: int, height: int, y_range: Span) -> None:
        self.width, self.height = max(width, 0), max(height, 0)
        self.y_range = y_range
        self._bits = [[0] * self.width for _ in range(self.height)]
        self._styles: list[list[str]] = [[""] * self.width for _ in range(self.height)]
        self._glyphs: list[list[str | None]] = [[None] * self.width for _ in range(self.height)]

    @property
    def columns(self) -> int:
        """Dot columns: two per character."""
        return self.width * 2

    def dot_row(self, y: float) -> int:
        """The dot row of value y (0 at the top), clamped to the canvas."""
        rows = self.height * 4
        lo, hi = self.y_range
        if not hi > lo:
            return rows // 2
        return min(max(round((hi - y) / (hi - lo) * (rows - 1)), 0), rows - 1)

    def line(self, spans: Sequence[Span | None], style: str) -> None:
        """A connected line through one span per dot column (see fill_gaps for sparse data)."""
        previous: tuple[int, int] | None = None
        for column, span in enumerate(fill_gaps(list(spans))):
            if span is None:
                previous = None
                continue
            top, bottom = self.dot_row(span[1]), self.dot_row(span[0])
            reach = (min(top, previous[1]), max(bottom, previous[0])) if previous else (top, bottom)
            for row in range(reach[0], reach[1] + 1):
                self._set(row, column, style)
            previous = (top, bottom)

    def dots(self, spans: Sequence[Span | None], style: str) -> None:
        """Each column's minimum and maximum as single dots (a down-sampled scatter)."""
        for column, span in enumerate(spans):
            if span is not None:
                self._set(self.dot_row(span[0]), column, style)
                self._set(self.dot_row(span[1]), column, style)

    def marks(self, spans: Sequence[Span | None], glyph: str, style: str) -> None:
        """A glyph (one cell wide) in the cell of each column's minimum and maximum: it replaces the dots there."""
        for column, span in enumerate(spans):
            if span is None or not 0 <= column < self.columns:
                continue
            for y in span:
                row, cell = self.dot_row(y) // 4, column // 2
                self._glyphs[row][cell], self._styles[row][cell] = glyph, style

    def rows(self) -> list[Text]:
        """The canvas as one Text per character row."""
        texts = []
        for bits, styles, glyphs in zip(self._bits, self._styles, self._glyphs, strict=True):
            text = Text(no_wrap=True)
            cells = zip(bits, styles, glyphs, strict=True)
            for style, run in itertools.groupby(cells, key=lambda cell: cell[1]):
                text.append("".join(glyph or chr(BRAILLE_BLANK + b) for b, _, glyph in run), style=style or None)
            texts.append(text)
        return texts

    def _set(self, row: int, column: int, style: str) -> None:
        if 0 <= column < self.columns and 0 <= row < self.height * 4:
            self._bits[row // 4][column // 2] |= DOT_BITS[row % 4][column % 2]
            if self._glyphs[row // 4][column // 2] is None:
                self._styles[row // 4][column // 2] = style


def axis_rows(canvas_rows: list[Text], y_range: Span, label_width: int, every: int = 4, decimals: int = 3) -> Text:
    """The canvas rows with y labels on the left: the top row, every `every` rows, and the bottom row."""
    height = len(canvas_rows)
    text = Text(no_wrap=True, overflow="crop")
    for index, row in enumerate(canvas_rows):
        y = y_range[1] - (y_range[1] - y_range[0]) * index / max(height - 1, 1)
        show = index == height - 1 or (index % every == 0 and index < height - 2)
        label = f"{y:.{decimals}f}" if show else ""
        text.append(f"{label:>{label_width - 1}} ", style="dim")
        text.append("│", style="dim")
        text.append_text(row)
        text.append("\n")
    return text


def x_axis(left: str, right: str, width: int, label_width: int) -> Text:
    """The line under a plot: the corner, then the first and last x labels at the ends."""
    gap = max(width - len(left) - len(right), 1)
    return Text(" " * label_width + "└" + left + " " * gap + right, style="dim", no_wrap=True, overflow="crop")

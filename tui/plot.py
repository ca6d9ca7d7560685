"""A line plot in braille characters, for any number of points in a fixed number of terminal cells.

Each character cell holds 2 x 4 dots, so a plot of W x H cells is 2W x 4H dots. The points are first
down-sampled to one bucket per dot column, keeping each bucket's minimum and maximum (a spike never
disappears however many points share a column); each column then draws the vertical span from its
minimum to its maximum, stretched to meet the previous column so the line stays connected; empty columns
between two points (fewer points than columns) get the straight line between them.
"""

import itertools
import math
from collections.abc import Sequence

BRAILLE_BLANK = 0x2800
# The bit of the dot at (row 0..3 from the top, column 0..1) inside one braille character.
DOT_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))

Span = tuple[float, float]


def column_spans(xs: Sequence[float], ys: Sequence[float], x_range: Span, columns: int) -> list[Span | None]:
    """For each of `columns` equal slices of x_range, the (min, max) of the ys in it, or None if empty.

    Points outside x_range, and non-finite values, are left out.
    """
    x_lo, x_hi = x_range
    spans: list[Span | None] = [None] * columns
    if columns <= 0 or not x_hi > x_lo:
        return spans
    scale = columns / (x_hi - x_lo)
    for x, y in zip(xs, ys, strict=True):
        if not (math.isfinite(x) and math.isfinite(y)) or x < x_lo or x > x_hi:
            continue
        column = min(int((x - x_lo) * scale), columns - 1)
        span = spans[column]
        spans[column] = (y, y) if span is None else (min(span[0], y), max(span[1], y))
    return fill_gaps(spans)


def fill_gaps(spans: list[Span | None]) -> list[Span | None]:
    """Empty columns between two filled ones get the straight line between them (sparse data stays a line)."""
    filled = [i for i, span in enumerate(spans) if span is not None]
    for left, right in itertools.pairwise(filled):
        start, end = spans[left][1], spans[right][0]  # type: ignore[index]
        for column in range(left + 1, right):
            y = start + (end - start) * (column - left) / (right - left)
            spans[column] = (y, y)
    return spans


def braille_rows(spans: Sequence[Span | None], y_range: Span, height: int) -> list[str]:
    """The plot's `height` text rows; one span per dot column (two per character), y_range bottom to top."""
    if height <= 0:
        return []
    y_lo, y_hi = y_range
    dots_high = height * 4
    cells = [[0] * ((len(spans) + 1) // 2) for _ in range(height)]

    def dot_row(y: float) -> int:
        if not y_hi > y_lo:
            return dots_high // 2
        fraction = (y_hi - y) / (y_hi - y_lo)
        return min(max(round(fraction * (dots_high - 1)), 0), dots_high - 1)

    previous: tuple[int, int] | None = None
    for column, span in enumerate(spans):
        if span is None:
            previous = None
            continue
        top, bottom = dot_row(span[1]), dot_row(span[0])
        if previous is not None:  # meet the previous column's span
            top, bottom = min(top, previous[1]), max(bottom, previous[0])
        for row in range(top, bottom + 1):
            cells[row // 4][column // 2] |= DOT_BITS[row % 4][column % 2]
        previous = (dot_row(span[1]), dot_row(span[0]))
    return ["".join(chr(BRAILLE_BLANK + bits) for bits in line) for line in cells]


def padded_range(values: Sequence[float]) -> Span | None:
    """(min, max) of the finite values with 5% headroom on each side; None when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    lo, hi = min(finite), max(finite)
    pad = (hi - lo) * 0.05 or max(abs(hi) * 0.05, 0.01)
    return lo - pad, hi + pad

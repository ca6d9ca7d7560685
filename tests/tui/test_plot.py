"""The braille plots: down-sampling keeps each column's extremes, layers keep their colours."""

import math

from autoresearch.tui.plot import Canvas, column_spans, fill_gaps, padded_range, step_spans


def test_a_million_points_become_one_span_per_column_keeping_the_spike():
    xs = [i / 1000 for i in range(1_000_000)]
    ys = [1.0] * len(xs)
    ys[500_123] = 9.0  # one spike among a million points
    spans = column_spans(xs, ys, (0.0, 1000.0), 80)
    assert len(spans) == 80
    assert spans[40] == (1.0, 9.0)
    assert all(span == (1.0, 1.0) for i, span in enumerate(spans) if i != 40)


def test_points_outside_the_range_and_non_finite_values_are_left_out():
    spans = column_spans([0.0, 0.5, 2.0, 0.7], [1.0, math.nan, 5.0, 3.0], (0.0, 1.0), 2)
    assert spans == [(1.0, 1.0), (3.0, 3.0)]


def test_sparse_points_are_joined_by_a_straight_line():
    assert fill_gaps([(0.0, 0.0), None, None, (3.0, 3.0)]) == [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]


def test_a_step_line_holds_each_level_until_the_next_point():
    """Where line() would slope from 3 down to 1 across the empty columns, the step holds 3 up to the next
    point's column; nothing is drawn before the first point or after the last."""
    spans = step_spans([1.0, 4.0, 6.0], [3.0, 1.0, 0.5], (0.0, 8.0), 8)
    assert spans == [None, (3.0, 3.0), (3.0, 3.0), (3.0, 3.0), (1.0, 1.0), (1.0, 1.0), (0.5, 0.5), None]
    assert step_spans([0.0, 0.4, 2.0], [2.0, 1.0, 0.0], (0.0, 2.0), 2) == [(1.0, 2.0), (0.0, 0.0)]


def test_the_drop_of_a_step_line_is_vertical_in_the_column_of_the_next_point():
    canvas = Canvas(3, 1, (0.0, 3.0))  # 6 dot columns, 4 dot rows: y 3 is row 0, y 0 row 3
    canvas.line(step_spans([0.0, 4.0], [3.0, 0.0], (0.0, 6.0), canvas.columns), "green")
    assert canvas.rows()[0].plain == "⠉⠉⡇"  # the top row held over columns 0-3, column 4 all the way down, the end


def test_a_mark_replaces_the_dots_of_its_cell_and_keeps_its_colour():
    canvas = Canvas(2, 1, (0.0, 1.0))
    canvas.marks([None, None, (0.5, 0.5), None], "●", "bold green")
    canvas.line([(0.0, 1.0), (0.0, 1.0), (0.0, 1.0), (0.0, 1.0)], "green")  # drawn after: the mark stays
    row = canvas.rows()[0]
    assert row.plain == "⣿●"
    assert [(row.plain[span.start:span.end], span.style) for span in row.spans] == [("⣿", "green"),
                                                                                   ("●", "bold green")]


def test_a_cell_takes_the_colour_of_the_last_layer_drawn_in_it():
    canvas = Canvas(2, 1, (0.0, 1.0))
    canvas.line([(0.0, 1.0), (0.0, 1.0), None, None], "green")
    canvas.line([None, None, (0.5, 0.5), (0.5, 0.5)], "cyan")
    row = canvas.rows()[0]
    assert row.plain == "⣿⠤"  # two full dot columns, then the middle dots of the second layer
    assert [span.style for span in row.spans] == ["green", "cyan"]


def test_padded_range_leaves_headroom_and_ignores_non_finite_values():
    assert padded_range([1.0, 3.0, math.inf]) == (0.9, 3.1)
    assert padded_range([math.nan]) is None

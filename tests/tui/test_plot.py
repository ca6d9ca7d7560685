"""The braille plots: down-sampling keeps each column's extremes, layers keep their colours."""

import math

from autoresearch.tui.plot import Canvas, column_spans, fill_gaps, padded_range


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

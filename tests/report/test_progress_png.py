"""progress.png: a valid PNG of a fixed size for every run, failures only included, with hostile labels."""

import struct
from dataclasses import replace
from pathlib import Path

import pytest

from autoresearch.runner.errors import UserError
from autoresearch.runner.record import store
from autoresearch.runner.report.progress_png import DPI, FAILURE_Y, SIZE_IN, _figure, chart_png, write_progress_png
from tests.report.conftest import FAILURES_ONLY, Opened, seed_report_workspace

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """The width and height of a PNG, read from its IHDR chunk."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_progress_png_is_a_png_of_the_size_users_share(opened: Opened, tmp_path: Path):
    path = write_progress_png(opened.conn, opened.run, tmp_path / "progress.png")
    data = path.read_bytes()
    assert png_size(data) == (round(SIZE_IN[0] * DPI), round(SIZE_IN[1] * DPI))
    assert 20_000 < len(data) < 400_000  # points, lines and labels were drawn


def test_hours_on_x_draw_another_chart(opened: Opened):
    experiments = store.list_experiments(opened.conn, opened.run.id)
    by_seq, by_hour = chart_png(opened.run, experiments), chart_png(opened.run, experiments, hours=True)
    assert png_size(by_hour) == png_size(by_seq) and by_hour != by_seq


def test_a_run_with_only_failures_is_drawn_too(tmp_path: Path):
    seeded = seed_report_workspace(tmp_path / "ws", plan=FAILURES_ONLY, noise=False)
    conn = store.open_store(seeded.ws.store_path, readonly=True)
    try:
        path = write_progress_png(conn, store.get_run(conn, seeded.run_id), tmp_path / "failures.png")
    finally:
        conn.close()
    assert png_size(path.read_bytes()) == (1320, 715)


def test_measurement_seeds_are_left_out(opened: Opened):
    experiments = store.list_experiments(opened.conn, opened.run.id)
    seed = replace(experiments[0], id=999, seq=999, role="noise", val_bpb=0.5)
    assert chart_png(opened.run, [*experiments, seed]) == chart_png(opened.run, experiments)


def test_a_run_without_experiments_and_an_unwritable_path_are_one_line_errors(opened: Opened, tmp_path: Path):
    conn = store.open_store(tmp_path / "empty.db")
    try:
        empty = store.get_run(conn, store.create_run(conn, tag="empty", agent="sweep"))
        with pytest.raises(UserError, match="run empty has no experiment yet"):
            write_progress_png(conn, empty, tmp_path / "p.png")
    finally:
        conn.close()
    with pytest.raises(UserError, match="is not an existing directory"):
        write_progress_png(opened.conn, opened.run, tmp_path / "missing" / "p.png")


def test_a_violation_with_a_forged_score_is_a_mark_not_a_point(opened: Opened):
    """A violation's val_bpb is whatever the candidate made it: it sits with the rule breaks on the top edge, as in
    the TUI's chart, never among the scored points where it would read as a near win."""
    experiments = store.list_experiments(opened.conn, opened.run.id)
    violation = next(e for e in experiments if e.status == "violation")
    forged = [replace(e, val_bpb=0.5) if e.id == violation.id else e for e in experiments]
    assert chart_png(opened.run, forged) == chart_png(opened.run, experiments)


def test_a_discard_above_the_chart_stays_visible_on_its_top_edge(opened: Opened):
    """A diverged run (val_bpb 9) must not stretch the y axis, nor vanish: it is a grey triangle on the top edge."""
    experiments = store.list_experiments(opened.conn, opened.run.id)
    diverged = replace(experiments[-1], id=998, seq=experiments[-1].seq + 1, status="discard", val_bpb=9.0)
    figure = _figure(opened.run, [*experiments, diverged], hours=False)
    [ax] = figure.axes
    assert ax.get_ylim()[1] < 1.05  # stretched to 9, the frontier would be a flat line at the bottom
    edge_markers = [c for c in ax.collections if c.get_label().startswith("discarded, above the chart (1)")]
    assert [list(point) for c in edge_markers for point in c.get_offsets()] == [[diverged.seq, FAILURE_Y]]

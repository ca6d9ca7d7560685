"""The progress view drawn like progress.png, and `w` writing progress.png from the dashboard.

The chart: the kept frontier as a step line, kept experiments as green marks where it steps, discarded ones
as grey dots, failures as red marks on the strip above, and no extra seed (role noise or confirm). The key:
it hands progress.png's real writer (autoresearch.runner.report.progress_png, matplotlib) a read-only
connection and the shown run, in a worker thread, and says where the file went, or why not in one line.
"""

import sqlite3
from dataclasses import fields
from pathlib import Path

import pytest
from rich.text import Text

from autoresearch.runner.record.store import Experiment, Run
from autoresearch.runner.report import progress_png
from autoresearch.tui.dashboard import PROGRESS_PNG
from autoresearch.tui.progress import FRONTIER_STYLE, KEPT_STYLE, POINT_STYLE, chart_text
from tests.report.test_progress_png import png_size
from tests.tui.conftest import make_app, shown, wait_for


def experiment(seq: int, status: str, val_bpb: float | None = None, role: str | None = None) -> Experiment:
    row = {field.name: None for field in fields(Experiment)}
    row.update(id=seq, run_id=1, seq=seq, description=f"#{seq}", status=status, val_bpb=val_bpb, started_at=0.0,
               role=role)
    return Experiment(**row)


# Three keeps stepping down, two discards, a crash and a blocked one, and a seed of each role. At width 26 the
# plot is 16 cells (32 dot columns) over #1..#9: #n sits in dot column 4(n-1), cell 2(n-1), the last in cell 15.
RUN = (experiment(1, "keep", 1.0), experiment(2, "discard", 1.01), experiment(3, "keep", 0.98),
       experiment(4, "crash"), experiment(5, "ok", 0.95, role="noise"), experiment(6, "discard", 0.991),
       experiment(7, "keep", 0.97), experiment(8, "ok", 0.9705, role="confirm"), experiment(9, "blocked"))
CHART = """\
  failed │      ×        ▾
1.014000 │⠀⠀⡀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀
         │⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀
         │●⠒⠒⠒⡆⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀
         │⠀⠀⠀⠀⡇⠀⠀⠀⠀⠀⡀⠀⠀⠀⠀⠀
0.986571 │⠀⠀⠀⠀⡇⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀
         │⠀⠀⠀⠀●⠤⠤⠤⠤⠤⠤⠤⡄⠀⠀⠀
         │⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⡇⠀⠀⠀
0.966000 │⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀⠀●⠉⠉⠉
         └#1            #9"""


def cell_styles(text: Text) -> dict[tuple[int, int], str]:
    """The style of each plot cell that has one, by (line, cell from the axis)."""
    styles = {}
    plain = text.plain
    for span in text.spans:
        for offset in range(span.start, span.end):
            line = plain.count("\n", 0, offset)
            column = offset - (plain.rfind("\n", 0, offset) + 1) - 10  # less the label and the axis
            if column >= 0 and str(span.style) != "dim":
                styles[line, column] = str(span.style)
    return styles


def test_the_frontier_steps_down_at_each_keep_with_discards_and_failures_apart():
    text = chart_text(RUN, 26, 10)
    assert text is not None
    assert text.plain == CHART
    styles = cell_styles(text)
    # Kept: the marks at #1 (cell 0), #3 (cell 4) and #7 (cell 12), each where the line reaches its score.
    assert [(line, cell) for (line, cell), style in sorted(styles.items()) if style == KEPT_STYLE] == [
        (3, 0), (6, 4), (8, 12)]
    # The step: 1.0 held over cells 1-3, the drop to 0.98 in cell 4 (#3's column), 0.98 held to cell 12.
    assert all(styles[3, cell] == FRONTIER_STYLE for cell in range(1, 5))
    assert all(styles[line, 4] == FRONTIER_STYLE for line in (4, 5))
    assert all(styles[6, cell] == FRONTIER_STYLE for cell in range(5, 12))
    assert all(styles[8, cell] == FRONTIER_STYLE for cell in range(13, 16))
    # Discarded: grey dots at #2 (cell 2, above the baseline) and #6 (cell 10).
    assert {key for key, style in styles.items() if style == POINT_STYLE} == {(1, 2), (4, 10)}
    # Failed, on the strip and nowhere in the plot: the crash #4 (cell 6) a red cross, the blocked #9 (cell 15)
    # a magenta triangle, as progress.png tells a broken run from a broken rule.
    assert {key: style for key, style in styles.items() if key[0] == 0} == {(0, 6): "red", (0, 15): "magenta"}


def test_extra_seeds_are_not_drawn():
    """The noise seed is better than every candidate and the confirm seed sits beside #7: drawn, one would
    stretch the y axis and both would add dots. The chart is the same as without them."""
    without = tuple(e for e in RUN if e.role is None)
    assert len(without) == len(RUN) - 2
    with_seeds, without_seeds = chart_text(RUN, 26, 10), chart_text(without, 26, 10)
    assert with_seeds is not None and without_seeds is not None
    assert with_seeds.plain == without_seeds.plain and with_seeds.spans == without_seeds.spans
    only_seeds = (experiment(1, "ok", 0.99, role="noise"), experiment(2, "ok", 0.98, role="noise"))
    assert chart_text(only_seeds, 26, 10) is None  # nothing of the run itself is scored yet


def test_a_violation_with_a_score_is_marked_not_plotted():
    """A violation's score is not to be trusted: it is a mark on the strip, and the y axis ignores it."""
    run = (experiment(1, "keep", 1.0), experiment(2, "violation", 0.9), experiment(3, "killed"),
           experiment(4, "discard", 1.005), experiment(5, "keep", 0.99))
    text = chart_text(run, 26, 10)
    assert text is not None
    lines = text.plain.splitlines()
    assert lines[0] == "  failed │    ▾   ×       "  # #2 in dot column 8 (cell 4), the killed #3 in cell 8
    assert lines[-2].startswith("0.988500 ")  # the y axis ends under the best keep, not at the violation's 0.9


def test_the_key_shows_when_it_fits():
    wide = chart_text(RUN, 70, 10)
    assert wide is not None
    axis = wide.plain.splitlines()[-1]
    assert all(key in axis for key in ("⠒⠒ best kept", "● keep", "⠂ discard", "× crash", "▾ violation"))
    assert axis.startswith(" " * 9 + "└#1") and axis.endswith("#9")
    narrow = chart_text(RUN, 26, 10)
    assert narrow is not None and "keep" not in narrow.plain


def test_a_tiny_chart_still_draws_or_says_nothing():
    assert chart_text(RUN, 14, 3) is not None  # one plot row between the strip and the axis
    assert chart_text(RUN, 14, 2) is None and chart_text(RUN, 13, 10) is None


# --- w: progress.png -------------------------------------------------------------------------------------


class SpyWriter:
    """Wraps progress_png.write_progress_png: records each call's run, path and whether its connection was
    read-only, then draws for real, or raises the error a test sets (an unexpected one, as no input makes)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Run, Path, bool]] = []
        self.error: BaseException | None = None
        self.real = progress_png.write_progress_png

    def __call__(self, conn: sqlite3.Connection, run: Run, path: Path, *, hours: bool = False) -> Path:
        self.calls.append((run, path, self._read_only(conn)))
        if self.error is not None:
            raise self.error
        return self.real(conn, run, path, hours=hours)

    @staticmethod
    def _read_only(conn: sqlite3.Connection) -> bool:
        try:
            conn.execute("CREATE TABLE probe (x)")
        except sqlite3.OperationalError as exc:
            return "readonly" in str(exc)
        return False


@pytest.fixture
def writer(monkeypatch) -> SpyWriter:
    spy = SpyWriter()
    monkeypatch.setattr(progress_png, "write_progress_png", spy)
    return spy


def record_notifications(app) -> list[dict]:
    """The app's notifications from now on, as notify's arguments."""
    seen: list[dict] = []
    original = app.notify

    def notify(message, **kwargs):
        seen.append({"message": message, **kwargs})
        return original(message, **kwargs)

    app.notify = notify
    return seen


@pytest.mark.anyio
async def test_w_writes_progress_png_of_the_shown_run_and_says_where(seeded, writer):
    app = make_app(seeded.ws)
    notes = record_notifications(app)
    target = seeded.ws.root / PROGRESS_PNG
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        await pilot.press("w")
        await wait_for(pilot, lambda: notes, timeout=60.0, what="matplotlib to draw")
        assert app.screen is app.dashboard
    [(run, path, read_only)] = writer.calls
    assert (run.tag, run.id, path, read_only) == ("main", seeded.run_id, target, True)
    assert png_size(target.read_bytes()) == (round(progress_png.SIZE_IN[0] * progress_png.DPI),
                                             round(progress_png.SIZE_IN[1] * progress_png.DPI))
    [note] = notes
    assert note["message"] == f"progress.png written to {target}" and note.get("severity", "information") != "error"


@pytest.mark.anyio
async def test_a_writer_that_fails_is_one_line_and_the_dashboard_goes_on(seeded, writer):
    target = seeded.ws.root / PROGRESS_PNG
    target.mkdir()  # a folder where the file goes: the real writer refuses it
    app = make_app(seeded.ws)
    notes = record_notifications(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        await pilot.press("w")
        await wait_for(pilot, lambda: notes, timeout=60.0, what="the error")
        writer.error = ValueError("no experiment with a score\nTraceback lines the user does not need")
        await pilot.press("w")
        await wait_for(pilot, lambda: len(notes) == 2, what="the second error")
        await pilot.press("3")  # still answering
        assert app.screen is app.dashboard and app.is_running
    assert [(n["message"], n["severity"]) for n in notes] == [
        (f"cannot write {target}: it is a directory", "error"), ("ValueError: no experiment with a score", "error")]
    assert target.is_dir() and not any(target.iterdir())


@pytest.mark.anyio
async def test_a_read_only_viewer_writes_no_progress_png(seeded, writer):
    app = make_app(seeded.ws, readonly=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        await pilot.press("w")
        await pilot.pause(0.3)
    assert writer.calls == [] and not (seeded.ws.root / PROGRESS_PNG).exists()

"""The drill-down's "agent notes": what the agent kept when it proposed the experiment, drawn as data."""

import pytest

from autoresearch.runner.record import store
from autoresearch.tui.details import load_detail
from autoresearch.tui.experiment import ExperimentScreen, agent_text
from tests.tui.conftest import make_app, shown, wait_for
from tests.tui.seed import Seeded

pytestmark = pytest.mark.anyio

HOSTILE = "\x1b[2J\u202eevil [@click=app.quit]quit[/] [red]x[/red]\nsecond line"


def notes_section(seeded: Seeded, seq: int) -> str:
    """The agent text of experiment #seq from "agent notes" on, as plain text."""
    conn = store.open_store(seeded.ws.store_path, readonly=True)
    try:
        run = store.get_run(conn, seeded.run_id)
        experiment = store.get_experiment(conn, seeded.experiment_ids[seq - 1])
    finally:
        conn.close()
    text = agent_text(run, load_detail(seeded.ws, experiment, None)).plain
    return text[text.index("agent notes"):]


def test_each_experiment_shows_the_notes_kept_when_it_was_proposed(seeded):
    assert notes_section(seeded, 2) == "agent notes  The agent had kept no notes by then.\n"
    assert notes_section(seeded, 3) == ("agent notes  as its proposal left them\n- deeper helps: DEPTH 6 beat 4\n"
                                        "- LR 0.02 was worse than 0.01")
    assert notes_section(seeded, 7).startswith("agent notes  unchanged since #3\n- deeper helps")
    assert notes_section(seeded, 12).startswith("agent notes  unchanged since #11\n- kept: DEPTH 6, WIDTH 384\n")


def test_cleared_notes_say_so(seeded):
    conn = store.open_store(seeded.ws.store_path)
    try:
        store.add_agent_notes(conn, seeded.run_id, seeded.experiment_ids[11], "")
    finally:
        conn.close()
    assert notes_section(seeded, 12) == "agent notes  its proposal cleared them\n"


def text_of(widget) -> str:
    return "\n".join(strip.text for strip in widget.render_lines(widget.region.reset_offset))


async def test_hostile_notes_are_drawn_escaped_and_literal(seeded):
    conn = store.open_store(seeded.ws.store_path)
    try:
        store.add_agent_notes(conn, seeded.run_id, seeded.experiment_ids[-1], HOSTILE)
    finally:
        conn.close()
    app = make_app(seeded.ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await shown(pilot)
        await pilot.press("enter")  # the newest experiment, #12
        await wait_for(pilot, lambda: isinstance(app.screen, ExperimentScreen), what="the drill-down")
        screen = app.screen
        await wait_for(pilot, lambda: "agent notes" in screen.query_one("#agent-text").render().plain,
                       what="the detail")
        await pilot.press("a")
        await pilot.pause()
        widget = screen.query_one("#agent-text")
        shown_text = text_of(widget)
        lines = [line.rstrip() for line in shown_text.splitlines()]
        start = lines.index("agent notes  as its proposal left them")
        escaped = "\\x1b[2J\\u202eevil [@click=app.quit]quit[/] [red]x[/red]"
        assert lines[start + 1:start + 3] == [escaped, "second line"]
        assert "\x1b" not in shown_text and "\u202e" not in shown_text
        strips = widget.render_lines(widget.region.reset_offset)
        assert not any(seg.style is not None and "@click" in seg.style.meta for strip in strips for seg in strip)

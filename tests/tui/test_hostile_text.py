"""The TUI draws sandbox text as data: control sequences escaped, markup shown literally, never acted on."""

import json

import pytest

from autoresearch.runner.check.findings import Finding
from autoresearch.runner.record import store
from autoresearch.tui.audit import AuditScreen
from autoresearch.tui.experiment import ExperimentScreen
from autoresearch.tui.history import HistoryTable
from autoresearch.tui.logview import LogLines
from tests.tui.conftest import make_app, shown, wait_for
from tests.tui.seed import Seeded

pytestmark = pytest.mark.anyio

HOSTILE = "\x1b[2J\x1b]0;pwned\x07 \u202eevil [@click=app.quit]quit[/] [red]x[/red] \x1b]52;c;cHduZWQ=\x07 end"
ESCAPED = ("\\x1b[2J", "\\x1b]0;pwned\\x07", "\\u202eevil", "[@click=app.quit]quit[/]", "[red]x[/red]")
CRASHED = 3  # the seed's experiment #4 crashed: it has a log, a finding and an agent turn


def make_hostile(seeded: Seeded) -> None:
    """Experiment #4's description, exit reason, finding, agent turn and log all hold HOSTILE."""
    experiment_id = seeded.experiment_ids[CRASHED]
    conn = store.open_store(seeded.ws.store_path)
    try:
        store.update_experiment(conn, experiment_id, description=HOSTILE, exit_reason=HOSTILE)
        store.add_findings(conn, experiment_id, [Finding("dynamic.log_marker", "high", "flag", HOSTILE,
                                                         {"excerpt": HOSTILE})])
        response = {"content": [{"type": "text", "text": f"thinking\n{HOSTILE}"},
                                {"type": "tool_use", "name": "submit", "input": {"description": HOSTILE}}]}
        conn.execute("UPDATE agent_turns SET response_json = ?, error = ? WHERE experiment_id = ?",
                     (json.dumps(response), HOSTILE, experiment_id))
        log = store.get_experiment(conn, experiment_id).log_path
    finally:
        conn.close()
    with open(log, "a") as file:
        file.write(f"{HOSTILE}\nTraceback\x1b[31m (most recent call last)\n")


def text_of(widget) -> str:
    """What the widget shows on screen, line by line."""
    return "\n".join(strip.text for strip in widget.render_lines(widget.region.reset_offset))


def clickable(widget) -> bool:
    """Whether any segment the widget draws carries a Textual click action (what `[@click=...]` markup makes)."""
    strips = widget.render_lines(widget.region.reset_offset)
    return any(segment.style is not None and "@click" in segment.style.meta for strip in strips for segment in strip)


def assert_inert(widget, *expected: str) -> None:
    text = text_of(widget)
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text, text
    for part in expected:
        assert part in text, (part, text)
    assert not clickable(widget)


async def test_hostile_text_is_drawn_escaped_and_literal_and_the_app_keeps_running(seeded):
    make_hostile(seeded)
    app = make_app(seeded.ws)
    async with app.run_test(size=(160, 50)) as pilot:
        await shown(pilot)
        history = app.screen.query_one(HistoryTable)
        assert_inert(history, "\\x1b[2J\\x1b]0;pwned\\x07")
        await pilot.press(*["down"] * (len(seeded.experiment_ids) - 1 - CRASHED), "enter")  # newest first
        await wait_for(pilot, lambda: isinstance(app.screen, ExperimentScreen), what="the drill-down")
        screen = app.screen
        assert screen.experiment.seq == CRASHED + 1
        await wait_for(pilot, lambda: "loading" not in text_of(screen.query_one("#diff-text")), what="the detail")
        await pilot.press("a")
        await pilot.pause()
        assert_inert(screen.query_one("#agent-text"), *ESCAPED, "error: \\x1b[2J")
        await pilot.press("l")
        await pilot.pause()
        lines = screen.query_one(LogLines)
        await pilot.press("end")
        assert_inert(lines, *ESCAPED, "Traceback\\x1b[31m (most recent call last)")
        await pilot.press("m")
        await pilot.pause()
        assert_inert(screen.query_one("#findings-text"), *ESCAPED)
        assert_inert(screen.query_one("#title"), "\\x1b[2J")
        await pilot.press("escape", "a")
        assert isinstance(app.screen, AuditScreen)
        table = app.screen.query_one("#findings")
        await wait_for(pilot, lambda: len(table.rows) == 4, what="the findings")
        await pilot.press("end")
        await pilot.pause()
        assert_inert(table, "\\x1b[2J")
        assert_inert(app.screen.query_one("#evidence"), *ESCAPED)
        assert app.is_running

"""The dashboard driven by Textual's Pilot: what it shows, drilling down, and steering a real runner side."""

import stat
from contextlib import contextmanager, nullcontext

import pytest

from autoresearch.runner import control
from autoresearch.runner.phases.metrics import ProgressPoint
from autoresearch.runner.record import store
from autoresearch.runner.steering import Steering
from autoresearch.runner.workspace import Workspace
from autoresearch.tui.app import TooSmallScreen
from autoresearch.tui.audit import AuditScreen
from autoresearch.tui.confirm import ConfirmScreen
from autoresearch.tui.experiment import ExperimentScreen
from autoresearch.tui.gpu import GpuPanel
from autoresearch.tui.help import HelpScreen
from autoresearch.tui.history import HistoryTable
from autoresearch.tui.leaderboard import LeaderboardTable
from autoresearch.tui.logview import LogLines
from autoresearch.tui.loss import LossPlot
from autoresearch.tui.start import StartRunScreen
from autoresearch.tui.summary import SummaryBar
from autoresearch.tui.welcome import WelcomeScreen
from tests.tui.conftest import make_app, shown, wait_for
from tests.tui.seed import seed_workspace

pytestmark = pytest.mark.anyio


def commands(ws: Workspace) -> list[store.Command]:
    conn = store.open_store(ws.store_path, readonly=True)
    try:
        rows = conn.execute(f"SELECT {', '.join(store.COMMAND_COLUMNS)} FROM commands ORDER BY id").fetchall()
        return [store.Command(*row) for row in rows]
    finally:
        conn.close()


@contextmanager
def runner_side(ws: Workspace, run_id: int):
    """The runner's real steering thread on the seeded run: beats the heartbeat, acknowledges commands."""
    with Steering(ws.store_path, run_id) as steering:
        yield steering


def text_of(widget) -> str:
    """What the widget shows on screen, line by line."""
    return "\n".join(strip.text for strip in widget.render_lines(widget.region.reset_offset))


async def test_the_dashboard_shows_the_run_its_experiments_and_leaderboard(seeded):
    app = make_app(seeded.ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await shown(pilot)
        header = text_of(app.screen.query_one(SummaryBar))
        for part in ("main", "running", "1h02m", "$0.53", "claude-sonnet-4-5", "best 0.981234 +0.016666",
                     "11 done", "4 kept", "3 discarded", "2 crashed", "1 blocked", "1 violation"):
            assert part in header, part
        history = app.screen.query_one(HistoryTable)
        assert [e.seq for e in history.rows] == list(range(12, 0, -1))
        assert "★ keep" in str(history.render_line(2).text) and "0.981234" in str(history.render_line(2).text)
        await pilot.press("2")
        leaderboard = app.screen.query_one(LeaderboardTable)
        assert (leaderboard.rows[0].seq, leaderboard.rows[0].val_bpb) == (11, 0.981234)
        assert "+0.016666" in leaderboard.render_line(1).text
        assert "gpu0" in str(app.screen.query_one(GpuPanel).render())


async def test_a_new_loss_point_reaches_the_curve_within_a_second(seeded):
    app = make_app(seeded.ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await shown(pilot)
        plot = app.screen.query_one(LossPlot)
        conn = store.open_store(seeded.ws.store_path)
        store.add_metric_points(conn, seeded.experiment_ids[-1], [ProgressPoint(26, 26.0, 1.2, 1.0, 1.0)])
        conn.close()
        await wait_for(pilot, lambda: plot._points[0][-1].step == 26, timeout=1.0, what="the new point")


async def test_enter_opens_the_experiment_with_its_diff_agent_log_and_metrics(seeded):
    app = make_app(seeded.ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ExperimentScreen))
        screen = app.screen
        await wait_for(pilot, lambda: "loading" not in text_of(screen.query_one("#diff-text")), what="the detail")
        assert "+    return LR * DEPTH * 0.5" in text_of(screen.query_one("#diff-text"))
        await pilot.press("a")
        assert "cosine schedule to zero" in text_of(screen.query_one("#agent-text"))
        assert "→ submit" in text_of(screen.query_one("#agent-text"))
        await pilot.press("slash")
        await pilot.press(*"elapsed=5.00", "enter")
        lines = screen.query_one(LogLines)
        assert len(lines.matches) == 1 and lines.lines[lines.matches[0]].startswith("progress step=5 ")
        await pilot.press("m")
        await pilot.pause()
        assert "0.981234" in text_of(screen.query_one("#metrics-text"))
        await pilot.press("escape")
        assert app.screen is app.dashboard


async def test_help_lists_every_key_with_its_binding_id(seeded):
    app = make_app(seeded.ws)
    async with app.run_test(size=(100, 40)) as pilot:
        await shown(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        listed = {b.id for _, bindings in app.screen.sections for b in bindings}
        assert {"dashboard.pause", "dashboard.skip", "dashboard.edit", "rows.open", "app.quit"} <= listed
        await pilot.press("escape")
        assert app.screen is app.dashboard


async def test_steering_keys_reach_the_runner_and_destructive_ones_ask_first(seeded):
    app = make_app(seeded.ws)
    with runner_side(seeded.ws, seeded.run_id) as steering:
        async with app.run_test(size=(100, 30)) as pilot:
            await shown(pilot)
            await pilot.press("p")
            await wait_for(pilot, steering.paused.is_set, what="the runner to pause")
            await pilot.press("r")
            await wait_for(pilot, lambda: not steering.paused.is_set(), what="the runner to resume")
            await pilot.press("k")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")  # cancelled: nothing is sent
            await pilot.press("s")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait_for(pilot, steering.stop_requested.is_set, what="the runner to stop")
            await wait_for(pilot, lambda: all(c.acked_at for c in commands(seeded.ws)), what="the acks")
    assert [c.kind for c in commands(seeded.ws)] == ["pause", "resume", "stop"]
    assert not steering.cancel.is_set()


async def test_a_read_only_viewer_has_no_steering_keys(seeded):
    app = make_app(seeded.ws, readonly=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        shown_keys = {binding.action for _, binding, enabled, _ in app.screen.active_bindings.values() if enabled}
        assert "steer('pause')" not in shown_keys and "start_run" not in shown_keys
        await pilot.press("p", "s", "k", "e", "x", "n")
        await pilot.pause(0.3)
        assert app.screen is app.dashboard
        assert commands(seeded.ws) == []
        await pilot.press("question_mark")
        listed = {b.id for _, bindings in app.screen.sections for b in bindings}
        assert "dashboard.stop" not in listed and "dashboard.audit" in listed


async def test_e_edits_program_md_in_the_editor(seeded, tmp_path, monkeypatch):
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nprintf "Try a deeper model.\\n" >> "$1"\n')
    editor.chmod(editor.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("EDITOR", str(editor))
    monkeypatch.delenv("VISUAL", raising=False)
    app = make_app(seeded.ws)
    async with app.run_test(size=(100, 30)) as pilot:
        app.suspend = nullcontext  # the headless driver cannot hand the terminal over
        await shown(pilot)
        await pilot.press("e")
    assert (seeded.ws.root / "program.md").read_text().endswith("Try a deeper model.\n")


async def test_x_exports_the_selected_train_py_and_says_where(seeded):
    app = make_app(seeded.ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        await pilot.press("down", "x")
        exported = list((seeded.ws.state_dir / "exports").iterdir())
    assert len(exported) == 1 and exported[0].name.startswith("train-main-11-")
    assert exported[0].read_text().endswith("return LR * DEPTH * 0.5\n")


async def test_the_audit_view_lists_the_findings_and_opens_their_experiment(seeded):
    app = make_app(seeded.ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        await pilot.press("a")
        assert isinstance(app.screen, AuditScreen)
        table = app.screen.query_one("#findings")
        await wait_for(pilot, lambda: len(table.rows) == 3, what="the findings")
        assert [seq for seq, _ in table.rows] == [4, 5, 9]
        assert "/data/val.bin" not in text_of(app.screen.query_one("#evidence"))
        await pilot.press("down")
        assert "/data/val.bin" in text_of(app.screen.query_one("#evidence"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ExperimentScreen))
        assert app.screen.experiment.seq == 5


async def test_a_workspace_without_a_run_offers_to_start_one(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(control, "detach", lambda ws, argv: started.append((ws.root, argv)) or (4321, ws.root / "log"))
    root = tmp_path / "ws"
    root.mkdir()
    (root / "autoresearch.toml").write_text("")
    app = make_app(Workspace(root, root, False))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, StartRunScreen), what="the offer")
        await pilot.press("enter")
        await wait_for(pilot, lambda: started, what="the runner to start")
        assert "No run in this workspace yet" in text_of(app.dashboard.query_one("#notice"))
    assert started == [(root, ["--tag", "main"])]


async def test_outside_a_workspace_it_offers_to_create_one_then_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(control, "detach", lambda ws, argv: (4321, ws.root / "log"))
    scratch = Workspace(tmp_path / "cache" / "scratch", tmp_path, True)
    app = make_app(scratch, new_folder=tmp_path / "new-ws")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, WelcomeScreen), what="the offer to create")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, StartRunScreen), what="the offer to start")
        assert app.workspace.root == tmp_path / "new-ws" and not app.workspace.is_scratch
    assert (tmp_path / "new-ws" / "autoresearch.toml").is_file()


@pytest.mark.parametrize(("setup", "expected"), [
    ("newer", "newer than this autoresearch"),
    ("older", "autoresearch migrate"),
])
async def test_a_store_of_another_schema_is_a_clear_state(seeded, setup, expected):
    conn = store.open_store(seeded.ws.store_path)
    conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + (1 if setup == 'newer' else -1)}")
    conn.close()
    app = make_app(seeded.ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        assert expected in text_of(app.dashboard.query_one("#notice"))
        assert "store unreadable" in text_of(app.dashboard.query_one(SummaryBar))


async def test_a_dead_runner_and_a_machine_without_gpu_are_clear_states(tmp_path):
    seeded = seed_workspace(tmp_path / "ws", gpu=False, heartbeat_age=300.0)
    app = make_app(seeded.ws)
    async with app.run_test(size=(120, 30)) as pilot:
        await shown(pilot)
        header = text_of(app.dashboard.query_one(SummaryBar))
        assert "dead" in header and "runner died (last heartbeat 5m00s ago): n resumes it" in header
        gpu = app.dashboard.query_one(GpuPanel)
        assert gpu.border_title == "CPU · RAM" and "no GPU driver (psutil)" in text_of(gpu)


async def test_a_run_without_isolation_says_so_on_every_screen(tmp_path):
    seeded = seed_workspace(tmp_path / "ws", sandbox="process")
    app = make_app(seeded.ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await shown(pilot)
        assert "sandbox: process (NOT ISOLATED)" in text_of(app.dashboard.query_one(SummaryBar))
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ExperimentScreen))
        assert "sandbox: process (NOT ISOLATED)" in text_of(app.screen.query_one("#title"))
        await pilot.press("escape", "a")
        assert isinstance(app.screen, AuditScreen)
        await wait_for(pilot, lambda: len(app.screen.query_one("#findings").rows) == 3, what="the findings")
        assert "sandbox: process (NOT ISOLATED)" in text_of(app.screen.query_one("#audit-title"))


async def test_an_isolated_run_shows_no_sandbox_warning(tmp_path):
    seeded = seed_workspace(tmp_path / "ws", sandbox="docker")
    app = make_app(seeded.ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await shown(pilot)
        assert "sandbox" not in text_of(app.dashboard.query_one(SummaryBar))


async def test_a_terminal_smaller_than_80x24_says_so(seeded):
    app = make_app(seeded.ws)
    async with app.run_test(size=(70, 20)) as pilot:
        await shown(pilot)
        assert isinstance(app.screen, TooSmallScreen)
        assert "70x20" in text_of(app.screen.query_one("#too-small"))
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: app.screen is app.dashboard, what="the dashboard back")



async def test_the_history_cursor_stays_on_its_experiment_when_a_new_one_arrives(seeded):
    app = make_app(seeded.ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        history = app.dashboard.query_one(HistoryTable)
        await pilot.press("down")
        assert history.cursor_key == seeded.experiment_ids[-2]
        conn = store.open_store(seeded.ws.store_path)
        store.create_experiment(conn, run_id=seeded.run_id, description="next")
        conn.close()
        await wait_for(pilot, lambda: len(history.rows) == 13, what="the new experiment")
        assert history.cursor_key == seeded.experiment_ids[-2] and history.cursor == 2
        await pilot.press("home")
        assert history.cursor == 0

"""SVG snapshots of the main screens on the seeded workspace (`pytest --snapshot-update` re-records them).

Everything on screen is deterministic: fixed timestamps and commits in the seed, and the app's clock
frozen at the seed's NOW.
"""

from pathlib import Path

import pytest
from textual.pilot import Pilot

from autoresearch.runner.workspace import Workspace
from autoresearch.tui.experiment import ExperimentScreen
from autoresearch.tui.logview import LogLines
from autoresearch.tui.welcome import DEFAULT_FOLDER
from tests.tui.conftest import make_app, shown, wait_for
from tests.tui.seed import seed_workspace


async def dashboard(pilot: Pilot) -> None:
    await shown(pilot)


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
def test_dashboard(seeded, snap_compare, size):
    assert snap_compare(make_app(seeded.ws), terminal_size=size, run_before=dashboard)


@pytest.mark.parametrize("view", ["2", "3"])
def test_leaderboard_and_progress_views_at_80x24(seeded, snap_compare, view):
    assert snap_compare(make_app(seeded.ws), press=[view], run_before=dashboard)


def test_help(seeded, snap_compare):
    assert snap_compare(make_app(seeded.ws), press=["question_mark"], terminal_size=(100, 40), run_before=dashboard)


def test_read_only_dashboard(seeded, snap_compare):
    assert snap_compare(make_app(seeded.ws, readonly=True), run_before=dashboard)


@pytest.mark.parametrize("tab", ["d", "a", "l", "m"])
def test_experiment_drill_down(seeded, snap_compare, tab):
    async def open_experiment(pilot: Pilot) -> None:
        await shown(pilot)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ExperimentScreen))
        await wait_for(pilot, lambda: pilot.app.screen.query_one(LogLines).lines, what="the detail")
        await pilot.press(tab)

    assert snap_compare(make_app(seeded.ws), terminal_size=(100, 30), run_before=open_experiment)


def test_audit_view(seeded, snap_compare):
    async def audit(pilot: Pilot) -> None:
        await shown(pilot)
        await pilot.press("a")
        await wait_for(pilot, lambda: len(pilot.app.screen.query_one("#findings").rows) == 3)
        await pilot.press("down")

    assert snap_compare(make_app(seeded.ws), terminal_size=(100, 30), run_before=audit)


def test_dead_runner_without_gpu(tmp_path, snap_compare):
    seeded = seed_workspace(tmp_path / "ws", gpu=False, heartbeat_age=300.0)
    assert snap_compare(make_app(seeded.ws), run_before=dashboard)


def test_a_run_without_isolation(tmp_path, snap_compare):
    seeded = seed_workspace(tmp_path / "ws", sandbox="process")
    assert snap_compare(make_app(seeded.ws), run_before=dashboard)


def test_too_small(seeded, snap_compare):
    assert snap_compare(make_app(seeded.ws), terminal_size=(70, 20), run_before=dashboard)


def test_welcome_outside_a_workspace(tmp_path, snap_compare):
    scratch = Workspace(tmp_path / "scratch", tmp_path, True)

    async def welcome(pilot: Pilot) -> None:
        await pilot.pause(0.2)

    app = make_app(scratch, new_folder=Path(DEFAULT_FOLDER))
    assert snap_compare(app, run_before=welcome)

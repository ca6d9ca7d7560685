"""SVG snapshots of the main screens on the seeded workspace (`pytest --snapshot-update` re-records them).

Everything on screen is deterministic: fixed timestamps and commits in the seed, the app's clock
frozen at the seed's NOW, and no `autoresearch doctor` (its report depends on the machine: make_app
passes doctor=None) except a stand-in with a fixed report where the checks are the subject.
"""

from pathlib import Path

import pytest
from textual.pilot import Pilot

from autoresearch.runner.workspace import Workspace
from autoresearch.tui.checks import MachineChecks
from autoresearch.tui.experiment import ExperimentScreen
from autoresearch.tui.logview import LogLines
from autoresearch.tui.welcome import DEFAULT_FOLDER
from tests.tui.conftest import fake_doctor, make_app, shown, wait_for
from tests.tui.seed import seed_fleet, seed_workspace


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


def test_a_run_on_two_slots_at_full_size(tmp_path, snap_compare):
    seeded = seed_fleet(tmp_path / "ws")
    assert snap_compare(make_app(seeded.ws), terminal_size=(150, 40), run_before=dashboard)


def test_a_ray_run_with_a_dead_node_in_view_4_at_80x24(tmp_path, snap_compare):
    seeded = seed_fleet(tmp_path / "ws", ray=True)
    assert snap_compare(make_app(seeded.ws), press=["4"], run_before=dashboard)


def test_too_small(seeded, snap_compare):
    assert snap_compare(make_app(seeded.ws), terminal_size=(70, 20), run_before=dashboard)


def test_welcome_outside_a_workspace(tmp_path, snap_compare):
    scratch = Workspace(tmp_path / "scratch", tmp_path, True)

    async def welcome(pilot: Pilot) -> None:
        await pilot.pause(0.2)

    app = make_app(scratch, new_folder=Path(DEFAULT_FOLDER))
    assert snap_compare(app, run_before=welcome)


MACHINE = {"ok": False, "checks": [
    {"name": "sandbox", "status": "fail", "detail": "cannot reach the Docker engine [Errno 2] No such file",
     "fix": "start Docker (sudo systemctl start docker), or add yourself to the docker group"},
    {"name": "image", "status": "skip", "detail": "the engine is unreachable", "fix": None},
    {"name": "gpus", "status": "ok", "detail": "1x NVIDIA H100 80GB HBM3, driver 550.54", "fix": None},
    {"name": "web corpus", "status": "warn", "detail": "the hub does not answer: auto takes the bundled offline "
     "corpus", "fix": "open the network to the hub for FineWeb-Edu"},
    {"name": "agent", "status": "ok", "detail": "sweep (offline, no key needed)", "fix": None},
]}


@pytest.mark.parametrize("size", [(80, 24), (100, 40)])
def test_welcome_with_the_checks_of_the_machine(tmp_path, snap_compare, size):
    scratch = Workspace(tmp_path / "scratch", tmp_path, True)

    async def checked(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: pilot.app.screen.query(MachineChecks), what="the checks")
        await wait_for(pilot, lambda: pilot.app.screen.query_one(MachineChecks).result is not None, what="a report")
        await pilot.pause()

    app = make_app(scratch, new_folder=Path(DEFAULT_FOLDER), doctor=fake_doctor(MACHINE, code=1))
    assert snap_compare(app, terminal_size=size, run_before=checked)

"""The fleet on the dashboard: a lane per slot (what it runs, its live loss, its time and utilisation), the
nodes panel (a dead node marked), the history's slot and role marks, and a leaderboard of candidates only."""

import pytest

from autoresearch.runner.record import store
from autoresearch.tui.gpu import GpuPanel
from autoresearch.tui.history import HistoryTable
from autoresearch.tui.lanes import LaneTable, sparkline
from autoresearch.tui.leaderboard import LeaderboardTable
from autoresearch.tui.nodes import NodesPanel
from autoresearch.tui.snapshot import StorePoller
from tests.tui.conftest import make_app, shown
from tests.tui.seed import seed_fleet, seed_workspace
from tests.tui.test_hostile_text import HOSTILE, assert_inert, text_of

pytestmark = pytest.mark.anyio


def lines_of(widget) -> list[str]:
    return [line.strip() for line in text_of(widget).splitlines()]


def test_the_poller_reads_a_lane_per_slot_with_the_newest_points_of_what_it_runs(tmp_path):
    seeded = seed_fleet(tmp_path / "ws")
    snapshot = StorePoller(seeded.ws.store_path).poll()
    assert snapshot is not None and snapshot.multi_slot
    lanes = {lane.slot.slot: lane for lane in snapshot.lanes}
    assert list(lanes) == ["cpu0", "cpu1"]
    assert (lanes["cpu0"].experiment.seq, lanes["cpu1"].experiment.seq) == (9, 10)
    assert len(lanes["cpu0"].points) == 25 and len(lanes["cpu1"].points) == 12  # seed: 25 s and 12 s of progress
    assert [p.step for p in lanes["cpu1"].points] == list(range(1, 13))
    assert snapshot.nodes == ()  # a local run: the runner records no nodes


def test_a_run_that_recorded_no_slots_has_one_lane_and_no_fleet(seeded):
    snapshot = StorePoller(seeded.ws.store_path).poll()
    assert not snapshot.multi_slot
    assert [(lane.slot.slot, lane.experiment.seq) for lane in snapshot.lanes] == [("–", 12)]


def test_sparkline_spans_what_it_shows():
    assert sparkline([3.0, 2.0, 1.0], 10) == "█▅▁"
    assert sparkline([1.0, 1.0], 10) == "▁▁" and sparkline([], 5) == ""
    assert len(sparkline([float(i) for i in range(40)], 14)) == 14
    assert sparkline([float("nan"), 1.0, 2.0], 5) == "▁█"


async def test_two_slots_show_two_lanes_and_the_local_host_at_full_size(tmp_path):
    seeded = seed_fleet(tmp_path / "ws")
    app = make_app(seeded.ws)
    async with app.run_test(size=(150, 40)) as pilot:
        await shown(pilot)
        lanes = lines_of(app.screen.query_one(LaneTable))
        assert lanes[0].split()[:4] == ["slot", "node", "#", "status"]
        assert lanes[1].split()[:4] == ["cpu0", "local", "9", "▶"] and "label smoothing" in lanes[1]
        assert lanes[2].split()[:4] == ["cpu1", "local", "10", "▶"] and "cosine schedule" in lanes[2]
        assert "25/60" in lanes[1] and "12/60" in lanes[2] and "148%" in lanes[1]
        assert "█" in lanes[1] and "1.5201" in lanes[1]  # the sparkline and the last loss
        nodes = text_of(app.screen.query_one(NodesPanel))
        assert "● local ready" in nodes and "222%" in nodes and "2 slots · cpu" in nodes  # 148% + 74% of a core
        gpu = text_of(app.screen.query_one(GpuPanel))
        assert "cpu0 · CPU" in gpu and "cpu1 · CPU" in gpu  # one block per slot, not one merged "cpu"
        history = lines_of(app.screen.query_one(HistoryTable))
        assert history[0].split()[:3] == ["#", "slot", "status"]
        by_seq = {line.split()[0]: line for line in history[1:] if line.strip()}
        assert "noise baseline" in by_seq["2"] and "confirm deeper model" in by_seq["6"]
        assert "near miss shorter warmup" in by_seq["7"] and by_seq["10"].split()[1] == "cpu1"
        board = lines_of(app.screen.query_one(LeaderboardTable))
        assert [line.split()[0] for line in board[1:] if line.strip()] == ["1", "2"]  # #5 and #1: no seed rows


async def test_a_dead_node_is_marked_and_its_slot_has_no_experiment(tmp_path):
    seeded = seed_fleet(tmp_path / "ws", ray=True)
    app = make_app(seeded.ws)
    async with app.run_test(size=(150, 40)) as pilot:
        await shown(pilot)
        lanes = lines_of(app.screen.query_one(LaneTable))
        dead = next(line for line in lanes if line.startswith("node-b/gpu0"))
        assert "node-b ✗" in dead and "✗ node lost" in dead
        assert [line.split()[0] for line in lanes[1:3]] == ["node-a/gpu0", "node-a/gpu1"]
        nodes = lines_of(app.screen.query_one(NodesPanel))
        assert nodes[0].startswith("● node-a ready") and "87%" in nodes[0] and "2× H100" in nodes[0]
        assert nodes[1].startswith("✗ node-b LOST") and "last seen 1m15s ago" in nodes[1]
        gpu = text_of(app.screen.query_one(GpuPanel))
        assert "node-a/gpu0 · " in gpu and "node-a/gpu1 · " in gpu


async def test_at_80x24_the_lanes_and_nodes_are_view_4_and_enter_opens_a_lanes_experiment(tmp_path):
    from autoresearch.tui.experiment import ExperimentScreen

    seeded = seed_fleet(tmp_path / "ws", ray=True)
    app = make_app(seeded.ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await shown(pilot)
        fleet = app.screen.query_one("#fleet-view")
        assert not fleet.display or fleet.region.height == 0
        await pilot.press("4")
        await pilot.pause()
        assert app.screen.query_one("#fleet-view").region.height > 0
        assert app.screen.query_one("#views").region.height == 0
        assert "node-a/gpu0" in text_of(app.screen.query_one(LaneTable))
        assert "node-b LOST" in text_of(app.screen.query_one(NodesPanel))
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ExperimentScreen) and app.screen.experiment.seq == 11


async def test_a_one_slot_run_shows_no_fleet_at_full_size_until_4_asks(seeded):
    app = make_app(seeded.ws)
    async with app.run_test(size=(150, 40)) as pilot:
        await shown(pilot)
        assert app.screen.query_one("#fleet-view").region.height == 0
        assert "slot" not in lines_of(app.screen.query_one(HistoryTable))[0]  # no run slot recorded: no column
        await pilot.press("4")
        await pilot.pause()
        assert app.screen.query_one("#fleet-view").region.height > 0
        lanes = lines_of(app.screen.query_one(LaneTable))
        assert lanes[1].split()[:4] == ["–", "local", "12", "▶"]
        assert "one local slot" in text_of(app.screen.query_one(NodesPanel))


async def test_node_and_slot_names_are_drawn_as_data(tmp_path):
    seeded = seed_fleet(tmp_path / "ws", ray=True, node_name=HOSTILE)
    conn = store.open_store(seeded.ws.store_path)
    try:
        store.update_experiment(conn, seeded.experiment_ids[-1], slot=HOSTILE, description=HOSTILE)
    finally:
        conn.close()
    app = make_app(seeded.ws)
    async with app.run_test(size=(200, 50)) as pilot:
        await shown(pilot)
        assert_inert(app.screen.query_one(NodesPanel), "\\x1b[2J")
        assert_inert(app.screen.query_one(LaneTable), "\\x1b[2J")
        assert_inert(app.screen.query_one(HistoryTable), "\\x1b[2J")
        assert_inert(app.screen.query_one(GpuPanel))
        assert app.is_running


def test_the_seed_of_an_older_run_has_no_slots(tmp_path):
    seeded = seed_workspace(tmp_path / "ws")
    conn = store.open_store(seeded.ws.store_path)
    try:
        run = store.get_run(conn, seeded.run_id)
        assert run.slots_json is None and run.executor is None
        assert all(e.slot is None and e.role is None for e in store.list_experiments(conn, run.id))
    finally:
        conn.close()

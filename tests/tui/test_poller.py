"""The store poller: one consistent snapshot per change, read incrementally, bad stores as clear errors."""

import sqlite3

from autoresearch.runner.phases.metrics import ProgressPoint
from autoresearch.runner.record import store
from autoresearch.runner.record.views import run_state
from autoresearch.tui.snapshot import StorePoller
from tests.tui.seed import NOW, seed_workspace


def writer(seeded) -> sqlite3.Connection:
    return store.open_store(seeded.ws.store_path)


def test_a_poll_reads_the_latest_run_and_nothing_when_nothing_changed(seeded):
    poller = StorePoller(seeded.ws.store_path)
    snapshot = poller.poll()
    assert snapshot.run.tag == "main" and len(snapshot.experiments) == 12
    assert snapshot.live.seq == 12 and snapshot.live.status == "running" and len(snapshot.live_points) == 25
    assert snapshot.best.seq == 11 and snapshot.baseline.seq == 1 and len(snapshot.best_points) == 60
    assert snapshot.counts == {"keep": 4, "discard": 3, "crash": 1, "blocked": 1, "timeout": 1, "violation": 1,
                               "running": 1}
    assert snapshot.budget_s == 60.0 and snapshot.model == "claude-sonnet-4-5"
    assert round(snapshot.spent_usd, 4) == round(11 * 0.0481, 4) and len(snapshot.gpu) == 600
    assert poller.poll() is None
    poller.close()


def test_new_points_and_experiment_changes_are_read_and_unchanged_parts_keep_their_identity(seeded):
    poller = StorePoller(seeded.ws.store_path)
    first = poller.poll()
    conn = writer(seeded)
    store.add_metric_points(conn, first.live.id, [ProgressPoint(26, 26.0, 1.5, 1.0, 1.0)])
    second = poller.poll()
    assert second.live_points[-1].step == 26 and len(second.live_points) == 26
    assert second.experiments is first.experiments and second.best_points is first.best_points
    assert second.gpu is first.gpu
    store.update_experiment(conn, first.live.id, status="keep", val_bpb=0.979)
    third = poller.poll()
    assert third.experiments is not first.experiments and third.best.seq == 12 and third.counts["keep"] == 5
    new = store.create_experiment(conn, run_id=seeded.run_id, description="next", started_at=NOW)
    fourth = poller.poll()
    assert fourth.live.id == new and fourth.live_points == () and len(fourth.experiments) == 13
    conn.close()
    poller.close()


def test_points_printed_out_of_step_order_are_all_read(seeded):
    poller = StorePoller(seeded.ws.store_path)
    live = poller.poll().live
    conn = writer(seeded)
    store.add_metric_points(conn, live.id, [ProgressPoint(100, 30.0, 1.0, 1.0, 1.0)])
    assert poller.poll().live_points[-1].step == 100
    store.add_metric_points(conn, live.id, [ProgressPoint(50, 29.0, 1.1, 1.0, 1.0)])  # below the last step read
    steps = [p.step for p in poller.poll().live_points]
    assert steps[-2:] == [50, 100] and len(steps) == 27
    conn.close()
    poller.close()


def test_a_deleted_experiment_forces_a_full_read(seeded):
    poller = StorePoller(seeded.ws.store_path)
    poller.poll()
    conn = writer(seeded)
    with store.transaction(conn):
        for table in ("metric_points", "findings", "agent_turns", "gpu_samples"):
            conn.execute(f"DELETE FROM {table} WHERE experiment_id = ?", (seeded.experiment_ids[1],))
        conn.execute("DELETE FROM experiments WHERE id = ?", (seeded.experiment_ids[1],))
    assert [e.seq for e in poller.poll().experiments][:2] == [1, 3]
    conn.close()
    poller.close()


def test_a_store_of_another_schema_is_an_error_in_the_snapshot_not_an_exception(seeded):
    conn = writer(seeded)
    conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    snapshot = StorePoller(seeded.ws.store_path).poll()
    assert "newer than this autoresearch" in snapshot.error and "upgrade autoresearch" in snapshot.error
    conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION - 1}")
    conn.close()
    assert "autoresearch migrate" in StorePoller(seeded.ws.store_path).poll().error


def test_no_store_and_not_a_store(tmp_path):
    path = tmp_path / "store.db"
    assert StorePoller(path).poll().store_exists is False
    path.write_text("not a database, just text that is long enough to be read as a header " * 20)
    assert "not an autoresearch store" in StorePoller(path).poll().error


def test_a_stale_heartbeat_reads_as_a_dead_runner(tmp_path):
    alive = seed_workspace(tmp_path / "alive")
    dead = seed_workspace(tmp_path / "dead", heartbeat_age=120.0)
    assert run_state(StorePoller(alive.ws.store_path).poll().run, NOW) == "running"
    assert run_state(StorePoller(dead.ws.store_path).poll().run, NOW) == "dead"


def test_the_budget_is_the_recorded_one_and_an_older_run_reads_its_policy(seeded):
    poller = StorePoller(seeded.ws.store_path)
    assert poller.poll().budget_s == 60.0  # recorded before runs kept their budget: from the policy's TOML
    conn = writer(seeded)
    store.update_run(conn, seeded.run_id, time_budget_s=90.0)
    conn.close()
    assert poller.poll().budget_s == 90.0
    poller.close()

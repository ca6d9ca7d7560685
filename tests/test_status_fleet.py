"""`autoresearch status` and the read models on a run of several slots: every running experiment with its slot,
the executor, the device, the nodes with their state; only candidates count as keeps."""

import json
import os
import socket
import time

import pytest

from autoresearch.runner.cli import main
from autoresearch.runner.record import store, views
from autoresearch.runner.record.status import Status
from tests.tui.seed import HOSTILE_NODE, seed_fleet

SLOTS = [{"name": "node-a/gpu0", "node": "node-a", "gpu_uuid": "GPU-a0", "cpuset": None, "device": "H100"},
         {"name": "node-a/gpu1", "node": "node-a", "gpu_uuid": "GPU-a1", "cpuset": None, "device": "H100"},
         {"name": "node-b/gpu0", "node": "node-b", "gpu_uuid": "GPU-b0", "cpuset": None, "device": "H100"}]


@pytest.fixture
def conn(tmp_path):
    conn = store.open_store(tmp_path / "store.db")
    yield conn
    conn.close()


def live_run(conn, **fields) -> store.Run:
    run_id = store.create_run(conn, tag="t", agent="sweep", pid=os.getpid(), host=socket.gethostname())
    store.update_run(conn, run_id, heartbeat_at=time.time(), **fields)
    return store.get_run(conn, run_id)


def test_noise_and_confirm_seeds_never_count_as_keeps(conn):
    run = live_run(conn)
    plan = ((Status.KEEP, 1.000, None), (Status.KEEP, 0.900, "noise"), (Status.KEEP, 0.990, None),
            (Status.KEEP, 0.950, "confirm"), (Status.OK, 0.980, "noise"))
    for seq, (status, val, role) in enumerate(plan, start=1):
        store.create_experiment(conn, run_id=run.id, seq=seq, description=f"e{seq}", status=status, val_bpb=val,
                                role=role, commit_sha=f"{seq:040x}")
    experiments = store.list_experiments(conn, run.id)
    assert [e.seq for e in views.kept(experiments)] == [1, 3]
    assert views.best(experiments).seq == 3 and views.baseline(experiments).seq == 1
    assert [r.seq for r in views.leaderboard(conn, run)] == [3, 1]
    status = views.run_status(conn, run)
    assert (status.best_val_bpb, status.baseline_val_bpb) == (0.990, 1.000)


def test_status_shows_every_running_experiment_by_slot_the_executor_device_and_nodes(conn, capsys):
    run = live_run(conn, executor="ray", device="H100", slots_json=SLOTS)
    store.create_experiment(conn, run_id=run.id, description="baseline", status=Status.KEEP, val_bpb=1.0,
                            commit_sha="a" * 40, slot="node-a/gpu0", node="node-a")
    store.create_experiment(conn, run_id=run.id, description="lr 0.02", status=Status.RUNNING,
                            slot="node-a/gpu0", node="node-a")
    store.create_experiment(conn, run_id=run.id, description="baseline", status=Status.RUNNING, role="noise",
                            slot="node-a/gpu1", node="node-a", seed=2)
    store.set_node(conn, run.id, "node-a", state="ready", gpus=2, address="10.0.0.11", device="H100",
                   util_percent=91.0)
    store.set_node(conn, run.id, "node-b", state="lost", gpus=1, address="10.0.0.12", device="H100",
                   note="no heartbeat for 63 s")
    status = views.run_status(conn, run)
    assert status.running == "#3 baseline"  # the one string older readers know: the newest running
    assert [(r["slot"], r["seq"], r["role"]) for r in status.running_by_slot] == [
        ("node-a/gpu0", 2, None), ("node-a/gpu1", 3, "noise")]
    assert (status.executor, status.device, status.slots) == ("ray", "H100", [s["name"] for s in SLOTS])
    assert [(n["name"], n["state"], n["gpus"]) for n in status.nodes] == [("node-a", "ready", 2), ("node-b", "lost", 1)]
    as_json = json.loads(json.dumps(views.status_dict(status)))
    assert as_json["running_by_slot"][1]["description"] == "baseline" and as_json["nodes"][1]["state"] == "lost"
    text = views.render_status(status)
    assert "  executor ray, device H100, 3 slots (1 idle)" in text
    assert "  node-a/gpu0 on node-a: running #2 lr 0.02" in text
    assert "  node-a/gpu1 on node-a: running #3 (noise seed) baseline" in text
    assert "node node-a (10.0.0.11): ready, 2 GPUs H100, 91% busy" in text
    assert "node node-b (10.0.0.12): LOST, 1 GPU H100, last seen" in text
    assert next(line for line in text.splitlines() if "node-b (" in line).endswith(": no heartbeat for 63 s")
    assert "training #" not in text  # the per-slot lines replace the one line of a one-slot run


def test_a_local_run_shows_this_host_from_its_slots(conn):
    slots = [{"name": f"cpu{i}", "node": "local", "gpu_uuid": None, "cpuset": str(i), "device": "cpu"}
             for i in range(2)]
    run = live_run(conn, executor="local", device="cpu", slots_json=slots)
    store.create_experiment(conn, run_id=run.id, description="x", status=Status.RUNNING, slot="cpu1", node="local")
    status = views.run_status(conn, run)
    assert [n["name"] for n in status.nodes] == ["local"] and status.nodes[0]["slots"] == 2
    assert status.nodes[0]["state"] == "ready" and status.nodes[0]["address"] == socket.gethostname()
    text = views.render_status(status)
    assert "  executor local, device cpu, 2 slots (1 idle)" in text and "  cpu1: running #1 x" in text
    lanes = views.slot_lanes(run, store.list_experiments(conn, run.id))
    assert [(lane.slot, lane.experiment and lane.experiment.seq) for lane in lanes] == [("cpu0", None), ("cpu1", 1)]


def test_an_older_run_keeps_its_one_training_line(conn):
    run = live_run(conn)
    store.create_experiment(conn, run_id=run.id, description="only", status=Status.RUNNING)
    status = views.run_status(conn, run)
    assert status.running == "#1 only" and status.executor is None and status.slots is None
    assert status.running_by_slot == [{**status.running_by_slot[0], "slot": "–", "node": "local"}]
    assert status.nodes == []
    text = views.render_status(status)
    assert "  training #1 only" in text and "executor" not in text and "node " not in text


def test_status_json_from_the_command_line_on_a_seeded_fleet(tmp_path, monkeypatch, capsys):
    seeded = seed_fleet(tmp_path / "ws", ray=True, node_name=HOSTILE_NODE)
    conn = store.open_store(seeded.ws.store_path)
    try:  # the seed's runner, alive now
        store.update_run(conn, seeded.run_id, pid=os.getpid(), host=socket.gethostname(), heartbeat_at=time.time())
    finally:
        conn.close()
    monkeypatch.chdir(seeded.ws.root)
    assert main(["status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["executor"] == "ray" and out["device"] == "NVIDIA H100 80GB HBM3" and out["state"] == "running"
    assert [(r["slot"], r["seq"]) for r in out["running_by_slot"]] == [("node-a/gpu0", 10), ("node-a/gpu1", 11)]
    assert out["running"] == "#11 cosine schedule to zero"
    assert sorted(n["state"] for n in out["nodes"]) == ["lost", "ready"]
    assert "\x1b" not in json.dumps(out, ensure_ascii=False)  # a node's name is data: escaped
    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert "\x1b" not in text and "\\x1b[2J" in text and "LOST" in text and "1 idle" in text

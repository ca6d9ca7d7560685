"""`autoresearch run` on the two-node Ray cluster of tests/cluster/conftest.py ([executor] name = "ray"): a real
loop of the sweep agent whose experiments train and score in hardened containers on the cluster's slots, and
the same loop with a fault mid-experiment (the second node's raylet killed, or the node paused): the experiment
is closed as interrupted, runs again on another slot and finishes, with nothing recorded lost and no container
left.

The second node offers one logical GPU here: two slots (head/gpu0, nodeb/gpu0), so at most two containers share
this box's cores. Those slots are not pinned to cores of their own (on a real cluster each is a GPU), so the rules
that hold a candidate's host time to what the baseline measured alone (dynamic.overhead, dynamic.compute) only
flag in these workspaces: what is tested is the cluster's part of the loop, not the load of a shared box.

The fault tests print their timings (fault to the interrupted row, to the re-run recorded on a slot and to its
first progress point): run with -s to read them.
"""

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pygit2
import pytest

from autoresearch.runner.init import init_workspace
from autoresearch.runner.record import gitrepo, store
from autoresearch.runner.record.status import INTERRUPTED, OPEN
from autoresearch.runner.sandbox.base import EXPERIMENT_LABEL, LABEL
from autoresearch.runner.trial import workspace_labels
from tests.cluster.conftest import HEAD, SECOND

pytestmark = [pytest.mark.cluster, pytest.mark.docker, pytest.mark.slow]

SECOND_NODE_GPUS = 1  # read by the cluster fixture (tests/cluster/conftest.py)
BUDGET_S = 4  # each experiment a real train-export-score cycle of about twenty seconds on two cores
FAULT_BUDGET_S = 8  # long enough that the fault surely lands while the victim trains
STALL_S = 5  # a paused node loses its job after this long without an answer
RUN_TIMEOUT_S = 420


def loop_workspace(cluster, root: Path, budget_s: float) -> Path:
    """A workspace whose runs use the cluster's slots (its head's address and token), one baseline seed."""
    ws = init_workspace(root)
    config = ws / "autoresearch.toml"
    text = (config.read_text().replace('source = "auto"', 'source = "offline"')
            .replace('flavor = "auto"', 'flavor = "cpu"').replace("noise_seeds = 3", "noise_seeds = 1")
            .replace('[executor]\nname = "local"', '[executor]\nname = "ray"')
            .replace("[cluster]\n", f'[cluster]\naddress = "{cluster.address}"\ntoken_file = "{cluster.token}"\n')
            .replace("stall_s = 20.0", f"stall_s = {STALL_S:.1f}")
            .replace('[policy]\nfile = "default"', '[policy]\nfile = "policy.toml"'))
    (ws / "policy.toml").write_text('extends = "default"\n[rules.dynamic.overhead]\naction = "flag"\n'
                                    '[rules.dynamic.compute]\naction = "flag"\n')
    config.write_text(text + f"\n[budget]\nseconds = {budget_s}\n")
    assert 'name = "ray"' in text and cluster.address in text and 'file = "policy.toml"' in text
    return ws


def start_run(cluster, root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autoresearch.runner.cli", "run", *args], cwd=root,
                            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(runner: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> str:
    try:
        output, _ = runner.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        runner.kill()
        output, _ = runner.communicate()
        pytest.fail(f"the run did not end within {timeout} s:\n{output[-6000:]}")
    return output


class Record:
    """The workspace's store, read as the run writes it."""

    def __init__(self, root: Path):
        self.path = root / ".autoresearch" / "store.db"
        self.conn = None

    def _conn(self):
        if self.conn is None and self.path.exists():
            self.conn = store.open_store(self.path, readonly=True)
        return self.conn

    def experiments(self) -> list[store.Experiment]:
        conn = self._conn()
        return store.list_experiments(conn) if conn is not None else []

    def points(self, experiment_id: int) -> int:
        conn = self._conn()
        return len(store.metric_points(conn, experiment_id)) if conn is not None else 0

    def nodes(self, tag: str) -> list[store.Node]:
        conn = self._conn()
        return store.list_nodes(conn, store.run_by_tag(conn, tag).id)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def wait_until(find, timeout_s: float, what: str, runner: subprocess.Popen | None = None):
    """find()'s first truthy answer (polled every 0.2 s); fails after timeout_s, or when the run ended first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        if runner is not None and runner.poll() is not None:
            pytest.fail(f"the run ended (exit {runner.returncode}) before {what}:\n{runner.stdout.read()[-6000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def containers_of(docker_client, root: Path, experiment_id: int | None = None) -> list:
    mine = [f"{key}={value}" for key, value in workspace_labels(root).items()]
    if experiment_id is not None:
        mine.append(f"{EXPERIMENT_LABEL}={experiment_id}")
    return docker_client.containers.list(all=True, filters={"label": [LABEL, *mine]})


def no_containers_left(docker_client, root: Path, timeout_s: float) -> float:
    """Seconds until the workspace has no container on any node (the nodes' janitors included)."""
    started = time.monotonic()
    wait_until(lambda: not containers_of(docker_client, root), timeout_s,
               f"no container of the workspace (left: {[c.name for c in containers_of(docker_client, root)]})")
    return time.monotonic() - started


def rejoin(cluster) -> None:
    """Bring the second node back (a new Ray node under the same name) for the next test."""
    cluster.leave(cluster.node_ws)
    cluster.join()


def test_a_loop_runs_its_experiments_on_the_slots_of_both_nodes(cluster, docker_client, tmp_path):
    root = loop_workspace(cluster, tmp_path / "ws", BUDGET_S)
    started = time.monotonic()
    runner = start_run(cluster, root, "--tag", "r1", "--max-experiments", "3")
    output = finish(runner)
    wall = time.monotonic() - started
    assert runner.returncode == 0, output
    assert "reached 3 experiments" in output, output

    record = Record(root)
    try:
        rows = record.experiments()
        nodes = record.nodes("r1")
    finally:
        record.close()
    print(f"\nloop on the cluster: 3 experiments in {wall:.1f} s: "
          f"{[(e.seq, e.slot, e.status, e.val_bpb, e.test_bpb) for e in rows]}")
    assert [e.seq for e in rows] == [1, 2, 3]
    assert all(e.status in ("keep", "discard") for e in rows), [(e.status, e.exit_reason) for e in rows]
    for e in rows:  # each ran on a slot of a Ray node, named by the node
        assert e.node in (HEAD, SECOND) and e.slot.startswith(f"{e.node}/gpu"), (e.node, e.slot)
    assert any(e.node == SECOND for e in rows), [e.slot for e in rows]
    kept = [e for e in rows if e.status == "keep"]
    assert kept and all(e.test_bpb is not None and 0 < e.test_bpb < 13 for e in kept)  # scored where it trained
    for e in rows:  # the capped logs came back to the head's folder of the experiment
        assert e.log_path and Path(e.log_path).is_file() and Path(e.log_path).stat().st_size > 0, e.log_path
    assert {HEAD, SECOND} <= {node.name for node in nodes}, nodes
    assert all(node.gpus >= 1 and node.device == "cpu" for node in nodes if node.name in (HEAD, SECOND)), nodes
    assert not containers_of(docker_client, root), [c.name for c in containers_of(docker_client, root)]


def pause(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


@pytest.mark.parametrize("fault", ["raylet-killed", "node-paused"])
def test_an_experiment_whose_node_fails_mid_training_runs_again_elsewhere(cluster, docker_client, tmp_path, fault):
    root = loop_workspace(cluster, tmp_path / "ws", FAULT_BUDGET_S)
    record = Record(root)
    runner = start_run(cluster, root, "--tag", "f", "--max-experiments", "2")
    stopped: list[psutil.Process] = []
    try:
        def training_on_second_node():
            return next((e for e in record.experiments() if e.node == SECOND and e.status in OPEN
                         and record.points(e.id) > 0), None)

        victim = wait_until(training_on_second_node, 300, "an experiment training on the second node", runner)
        victim_points = record.points(victim.id)
        fault_at = time.monotonic()
        if fault == "raylet-killed":
            cluster.raylet().kill()
        else:
            stopped = cluster.node_pids()
            pause(stopped, signal.SIGSTOP)

        def closed():
            now = next(e for e in record.experiments() if e.id == victim.id)
            return now if now.status not in OPEN else None

        closed_row = wait_until(closed, 180, f"#{victim.seq} closed", runner)
        to_interrupted = time.monotonic() - fault_at

        def rerun_started():
            return next((e for e in record.experiments() if e.seq > victim.seq
                         and e.description.endswith("(re-run)")), None)

        rerun = wait_until(rerun_started, 180, f"the re-run of #{victim.seq}", runner)
        to_rerun = time.monotonic() - fault_at
        wait_until(lambda: record.points(rerun.id) > 0, 180, "the re-run training", runner)
        to_training = time.monotonic() - fault_at
        wait_until(lambda: not containers_of(docker_client, root, victim.id), 120, f"#{victim.seq}'s containers gone")
        to_orphans_gone = time.monotonic() - fault_at
        print(f"\n{fault}: #{victim.seq} ({victim.description}) on {victim.slot} closed as interrupted "
              f"{to_interrupted:.1f} s after the fault ({closed_row.exit_reason[:120]}); its re-run #{rerun.seq} "
              f"recorded on {rerun.slot} after {to_rerun:.1f} s and training after {to_training:.1f} s; "
              f"#{victim.seq}'s containers gone after {to_orphans_gone:.1f} s")

        output = finish(runner)
        assert runner.returncode == 0, output
        assert "reached 2 experiments" in output, output
        gone = no_containers_left(docker_client, root, timeout_s=120)  # before the paused node resumes
        print(f"{fault}: no container of the workspace left {gone:.1f} s after the run ended")
        rows = record.experiments()
    finally:
        pause(stopped, signal.SIGCONT)
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        record.close()
        rejoin(cluster)

    closed_row = next(e for e in rows if e.id == victim.id)
    assert closed_row.status == "killed" and closed_row.exit_reason.startswith(INTERRUPTED), closed_row.exit_reason
    reruns = [e for e in rows if e.description.endswith("(re-run)")]
    assert len(reruns) == 1, [(e.seq, e.description) for e in rows]
    rerun = reruns[0]
    assert rerun.description == f"{victim.description} (re-run)" and rerun.train_py_sha256 == victim.train_py_sha256
    assert rerun.slot != victim.slot and rerun.node == HEAD, (rerun.slot, rerun.node)  # the second node is out
    assert rerun.status in ("keep", "discard"), (rerun.status, rerun.exit_reason)
    # no cap counted the interrupted one: the cap of 2 ended 2 experiments besides it
    assert [e.seq for e in rows] == [1, 2, 3]
    assert len([e for e in rows if e.role is None and not (e.exit_reason or "").startswith(INTERRUPTED)]) == 2
    # nothing recorded is lost: every row closed, its commit and ref in git, the victim's points kept
    assert not [e for e in rows if e.status in OPEN]
    record = Record(root)
    try:
        assert record.points(victim.id) >= victim_points
    finally:
        record.close()
    repo = pygit2.Repository(str(root))
    for e in rows:
        assert e.commit_sha and gitrepo.experiment_ref(repo, "f", e.seq) == e.commit_sha
    for e in rows:
        if e.id != victim.id:
            assert e.log_path and Path(e.log_path).stat().st_size > 0, e.log_path
    assert not containers_of(docker_client, root)

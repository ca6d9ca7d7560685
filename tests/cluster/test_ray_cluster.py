"""A two-node Ray cluster on this machine (tests/cluster/conftest.py: a head and a second `ray start` node, logical
GPUs, the CPU image), running real hardened containers through RayExecutor; faults (a node's raylet killed, a node
paused) and bad input. Without Ray these tests skip with the reason; with AUTORESEARCH_REQUIRE_CLUSTER=1 they fail.

The timings (start-up, fault to Lost, fault to no container left) are printed: run with -s to read them.
"""

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from autoresearch.runner.config import ClusterConfig, Config
from autoresearch.runner.errors import UserError
from autoresearch.runner.executors.base import Finished, Lost, Progress, ScoreTestJob, TrainJob
from autoresearch.runner.init import init_workspace
from autoresearch.runner.sandbox.base import EXPERIMENT_LABEL, LABEL
from autoresearch.runner.task_files import default_task_dir
from tests.cluster.conftest import cli, free_port, require_ray
from tests.conftest import cpu_settings

pytestmark = [pytest.mark.cluster]

# Prints progress lines, then sleeps: a job that is surely mid-experiment when the fault comes.
SLEEPER = """
import time
for step in range(1, 1000):
    print(f"progress step={step} elapsed={step * 0.5:.1f} loss=5.0 tok_per_s=100 mfu=0.0", flush=True)
    time.sleep(0.5)
"""
STALL_S = 5.0


@pytest.fixture(scope="module")
def executor(cluster):
    from autoresearch.runner.executors.ray_executor import RayExecutor

    settings = cpu_settings(budget_s=60)
    settings = type(settings)(**{**settings.__dict__, "config": Config(source="offline", cluster=ClusterConfig(
        address=cluster.address, token_file=str(cluster.token), stall_s=STALL_S))})
    started = time.monotonic()
    made = RayExecutor(settings, {"autoresearch.test": "cluster"}, "cpu", data=cluster.data)
    slots = made.wait_for_slots(3, timeout_s=300)
    print(f"\nexecutor: {len(slots)} slots ready in {time.monotonic() - started:.1f} s: "
          f"{sorted(slot.name for slot in slots)}")
    yield made
    made.close()


def wait_for(executor, ticket: int, kinds: tuple[type, ...], timeout_s: float):
    """The first event of ticket of one of kinds (others are collected into the returned list too)."""
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        for event in executor.events(timeout=0.5):
            if event.ticket != ticket:
                continue
            seen.append(event)
            if isinstance(event, kinds):
                return event, seen
    raise AssertionError(f"no {[k.__name__ for k in kinds]} for ticket {ticket} in {timeout_s} s: {seen[-3:]}")


def containers_of(docker_client, exp_id: int) -> list:
    return docker_client.containers.list(all=True, filters={"label": [LABEL, f"{EXPERIMENT_LABEL}={exp_id}"]})


def wait_no_containers(docker_client, exp_id: int, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if not containers_of(docker_client, exp_id):
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"containers of experiment {exp_id} still there after {timeout_s} s: "
                         f"{[c.name for c in containers_of(docker_client, exp_id)]}")


def job(exp_id: int, source: str, tmp_path: Path, budget_s: float = 60, keep: bool = False) -> TrainJob:
    limits = cpu_settings(budget_s=budget_s).limits
    return TrainJob(exp_id, source.encode(), limits, {EXPERIMENT_LABEL: str(exp_id)}, str(tmp_path / f"{exp_id}"),
                    seed=exp_id, keep_handover=keep)


def node_slot(executor, node: str):
    return next(slot for slot in executor.slots() if slot.node == node)


@pytest.mark.docker
@pytest.mark.slow
def test_a_job_trains_on_a_node_and_its_model_is_scored_on_the_test_split_there(executor, tmp_path):
    slot = node_slot(executor, "nodeb")
    train = job(9001, (default_task_dir() / "train.py").read_text(), tmp_path, budget_s=8, keep=True)
    ticket = executor.submit(slot, train)
    finished, seen = wait_for(executor, ticket, (Finished, Lost), timeout_s=420)
    assert isinstance(finished, Finished), finished
    outcome = finished.result.outcome
    assert outcome.status == "ok", outcome.reason
    assert outcome.val_bpb is not None and outcome.handover is None  # the model stayed on the node
    assert any(isinstance(event, Progress) for event in seen)
    assert (tmp_path / "9001" / "train.log").read_bytes()  # the capped log came back to the head's folder
    assert finished.result.hashes_before == finished.result.hashes_after

    test = executor.submit(slot, ScoreTestJob(9001, ticket, train.limits, train.labels, str(tmp_path / "9001")))
    scored, _ = wait_for(executor, test, (Finished, Lost), timeout_s=300)
    assert isinstance(scored, Finished) and scored.result.test_bpb is not None, scored
    executor.release(ticket)


def rejoin(cluster, executor) -> None:
    """Bring the second node back for the next test (after its quarantine it offers slots again)."""
    from autoresearch.runner.executors import ray_executor

    cluster.leave(cluster.node_ws)
    cluster.join()
    ray_executor.QUARANTINE_S = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(slot.node == "nodeb" for slot in executor.slots()):
        time.sleep(0.5)


@pytest.mark.docker
def test_a_node_whose_raylet_is_killed_loses_its_job_and_leaves_no_container(cluster, executor, docker_client,
                                                                           tmp_path):
    ticket = executor.submit(node_slot(executor, "nodeb"), job(9002, SLEEPER, tmp_path))
    wait_for(executor, ticket, (Progress,), timeout_s=120)
    assert containers_of(docker_client, 9002)
    raylet = next(proc for proc in cluster.node_pids() if "raylet" in proc.name())
    fault = time.monotonic()
    raylet.kill()
    lost, _ = wait_for(executor, ticket, (Lost, Finished), timeout_s=120)
    to_lost = time.monotonic() - fault
    assert isinstance(lost, Lost) and lost.fatal is None, lost
    gone = wait_no_containers(docker_client, 9002, timeout_s=90)
    print(f"\nraylet killed: Lost after {to_lost:.1f} s ({lost.reason}); no container left "
          f"{to_lost + gone:.1f} s after the kill")
    assert not any(slot.node == "nodeb" for slot in executor.slots())
    rejoin(cluster, executor)


@pytest.mark.docker
def test_a_paused_node_loses_its_job_and_leaves_no_container(cluster, executor, docker_client, tmp_path):
    if not any(slot.node == "nodeb" for slot in executor.slots()):
        rejoin(cluster, executor)
    ticket = executor.submit(node_slot(executor, "nodeb"), job(9003, SLEEPER, tmp_path))
    wait_for(executor, ticket, (Progress,), timeout_s=120)
    procs = cluster.node_pids()
    fault = time.monotonic()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGSTOP)
    try:
        lost, _ = wait_for(executor, ticket, (Lost, Finished), timeout_s=120)
        to_lost = time.monotonic() - fault
        assert isinstance(lost, Lost) and lost.fatal is None, lost
        assert "stopped answering" in lost.reason or "dead" in lost.reason, lost.reason
        gone = wait_no_containers(docker_client, 9003, timeout_s=90)  # the janitor: the slot is stopped
        print(f"\nnode paused: Lost after {to_lost:.1f} s ({lost.reason}); no container left "
              f"{to_lost + gone:.1f} s after the pause")
    finally:
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGCONT)


def test_joining_an_unreachable_head_is_one_line_with_the_fix(tmp_path):
    require_ray()
    ws = init_workspace(tmp_path / "ws")
    token = tmp_path / "token"
    token.write_text("ab" * 32)
    token.chmod(0o600)
    done = cli(ws, {**os.environ, "AUTORESEARCH_CACHE": str(tmp_path / "cache")}, "node", "join",
               f"127.0.0.1:{free_port()}", "--token-file", str(token), "--gpus", "1", timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "does not answer" in done.stderr and "node head" in done.stderr, done.stderr


@pytest.mark.docker
def test_joining_with_a_mismatched_fingerprint_is_refused_with_what_differs(cluster, tmp_path):
    from autoresearch.runner.executors.ray_node import publish_fingerprint, read_fingerprint, use_token

    use_token(cluster.token)
    real = read_fingerprint(cluster.address)
    publish_fingerprint(cluster.address, {**real, "python": "3.11.0"})
    try:
        ws = init_workspace(tmp_path / "third")
        done = cli(ws, cluster.env, "node", "join", cluster.address, "--token-file", str(cluster.node_token),
                   "--gpus", "1", "--name", "third", timeout=120)
    finally:
        publish_fingerprint(cluster.address, real)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "refusing to join" in line and "python" in line and "3.11.0" in line, line
    assert "Traceback" not in done.stderr


def test_a_wrong_token_is_refused_with_the_fix(cluster, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("cd" * 32)
    wrong.chmod(0o600)
    ws = init_workspace(tmp_path / "fourth")
    done = cli(ws, cluster.env, "node", "join", cluster.address, "--token-file", str(wrong), "--gpus", "1",
               timeout=120)
    assert done.returncode == 2 and "refused this box's token" in done.stderr, done.stderr


def test_the_ray_executor_without_the_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    from autoresearch.runner.executors.ray_executor import RayExecutor

    with pytest.raises(UserError, match=r"autoresearch\[cluster\]"):
        RayExecutor(cpu_settings(), {}, "cpu")


def test_the_fingerprint_names_the_first_difference_and_its_fix():
    from autoresearch.runner.executors.ray_node import mismatch

    head = {"package": "0.1.0", "ray": "2.60.0", "python": "3.11.7", "flavor": "cpu", "image_inputs": "a",
            "prepare_py": "p", "data_manifest": None}
    assert mismatch(head, dict(head, data_manifest="m")) is None  # data not prepared on the head: not compared
    assert "ray is 2.59.0 but the head's is 2.60.0" in mismatch(head, dict(head, ray="2.59.0"))
    assert "autoresearch image" in mismatch(head, dict(head, image_inputs=None))

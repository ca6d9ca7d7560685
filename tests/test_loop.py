"""The research loop for real: a workspace, the sweep agent, the CPU image, git and the store.

Budgets are a few seconds, so each experiment is a real train-export-score cycle that takes about
twenty seconds on two cores; what is asserted is the record, not the model's quality.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pygit2
import pytest

from autoresearch.runner.config import ExecutorConfig, load_config
from autoresearch.runner.executors.local import local_slots
from autoresearch.runner.init import init_workspace
from autoresearch.runner.judge import keep_threshold
from autoresearch.runner.record import gitrepo, store
from autoresearch.runner.record import views as report
from autoresearch.runner.sandbox.base import LABEL
from autoresearch.runner.trial import workspace_labels
from tests.agents.fake_api import FakeAPI, Reply, error_body, ok, tool_use
from tests.engine_proxy import EngineProxy

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BUDGET_S = 4


@pytest.fixture
def workspace(cpu_image, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    root = init_workspace(tmp_path / "ws")
    config = root / "autoresearch.toml"  # one seed of the baseline: the run's own noise has its test below
    config.write_text(config.read_text().replace("noise_seeds = 3", "noise_seeds = 1")
                      + f"\n[budget]\nseconds = {BUDGET_S}\n")
    return root


def autoresearch(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoresearch.runner.cli", *args], cwd=root, text=True,
                          capture_output=True, timeout=timeout)


def start_runner(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autoresearch.runner.cli", "run", *args], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def experiments(root: Path) -> list[store.Experiment]:
    """What the workspace's store holds now (nothing before the runner made it)."""
    path = root / ".autoresearch" / "store.db"
    if not path.exists():
        return []
    conn = store.open_store(path, readonly=True)
    try:
        return store.list_experiments(conn)
    finally:
        conn.close()


def points(root: Path, experiment_id: int) -> int:
    conn = store.open_store(root / ".autoresearch" / "store.db", readonly=True)
    try:
        return len(store.metric_points(conn, experiment_id))
    finally:
        conn.close()


def wait_for(predicate, timeout: float = 300.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def on_branch_as(kept: store.Experiment) -> str:
    """The commit a keep is on the run's branch as: its own, or the one it was committed again as."""
    return (kept.judge_json or {}).get("branch_commit", kept.commit_sha)


def test_a_sweep_loop_records_commits_refs_and_results(workspace):
    user_repo = pygit2.Repository(str(workspace))
    user_head, user_status = user_repo.head.target, user_repo.status()  # the budget edit is uncommitted
    done = autoresearch(workspace, "run", "--tag", "t1", "--max-experiments", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reached 3 experiments" in done.stdout

    recorded = experiments(workspace)
    assert [e.seq for e in recorded] == [1, 2, 3]
    assert recorded[0].description == "baseline" and recorded[0].status == "keep"
    assert recorded[0].test_bpb is not None and 0 < recorded[0].test_bpb < 13  # the held-out split, scored
    assert all(e.status in ("keep", "discard") for e in recorded), [(e.status, e.exit_reason) for e in recorded]

    repo = pygit2.Repository(str(workspace))
    assert repo.head.target == user_head and repo.status() == user_status  # the user's tree and branch untouched
    kept = [e for e in recorded if e.status == "keep"]
    # with [executor] prefetch a proposal can come from a tip that a keep since moved: kept, it is committed again
    # on the new tip (judge_json's branch_commit), so the branch stays one line of keeps
    on_branch = [on_branch_as(e) for e in kept]
    assert gitrepo.branch_tip(repo, "t1") == on_branch[-1]
    assert [str(c.id) for c in repo.walk(on_branch[-1])][:len(kept)] == on_branch[::-1]
    for experiment in recorded:
        assert gitrepo.experiment_ref(repo, "t1", experiment.seq) == experiment.commit_sha
        assert '"status": "' + experiment.status in gitrepo.read_note(repo, experiment.commit_sha)
        commit = repo.get(experiment.commit_sha)
        assert experiment.description in commit.message
        timings = experiment.timings_json
        assert {"propose", "commit", "train_container_start", "training", "scoring"} <= timings.keys()
    for i, candidate in enumerate(recorded[1:], start=1):  # each candidate is a child of a keep before it
        keeps_then = [on_branch_as(e) for e in recorded[:i] if e.status == "keep"]
        assert str(repo.get(candidate.commit_sha).parents[0].id) == candidate.parent_sha
        assert candidate.parent_sha in keeps_then

    tsv = autoresearch(workspace, "results", "-o", "-").stdout.splitlines()
    assert tsv[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
    assert [line.split("\t")[0] for line in tsv[1:]] == [e.commit_sha[:7] for e in recorded]

    board = autoresearch(workspace, "leaderboard", "--json")
    assert board.returncode == 0 and f'"commit": "{kept[-1].commit_sha[:7]}"' in board.stdout

    exported = autoresearch(workspace, "export", "--best")
    best = min(kept, key=lambda e: e.val_bpb)
    assert exported.stdout.startswith("# Exported by autoresearch from run 't1'")
    assert exported.stdout.endswith(gitrepo.read_file(repo, best.commit_sha).decode())

    status = autoresearch(workspace, "status")
    assert "run t1: finished" in status.stdout and f"{best.val_bpb:.6f}" in status.stdout


def test_a_runner_killed_twice_resumes_and_loses_nothing(workspace, docker_client):
    recorded_before: list[store.Experiment] = []
    for _ in range(2):
        seen = {e.id for e in experiments(workspace)}
        runner = start_runner(workspace, "--tag", "k", "--max-experiments", "4")
        wait_for(lambda seen=seen: any(e.status == "running" and e.id not in seen and points(workspace, e.id)
                                       for e in experiments(workspace)),
                 what="a new experiment to report training progress")
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        runner.stdout.close()
        now = experiments(workspace)
        for before in recorded_before:  # what was recorded is still there, unchanged
            assert next(e for e in now if e.id == before.id) == before
        recorded_before = [e for e in now if e.status != "running"]

    leftovers = [c for c in docker_client.containers.list(all=True, filters={"label": LABEL})
                 if c.labels.get("autoresearch.runner_pid") == str(runner.pid)]
    assert leftovers, "the killed runner's container should still be there for the next runner to clean"

    done = autoresearch(workspace, "run", "--tag", "k", "--max-experiments", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming after" in done.stdout and "re-running the interrupted" in done.stdout
    final = experiments(workspace)
    killed = [e for e in final if e.status == "killed"]
    assert len(killed) == 2 and all("interrupted" in e.exit_reason for e in killed)
    assert len(final) == 6 and [e.status for e in final[:2]] == ["killed", "killed"]  # interrupted ones uncounted
    assert final[2].description == "baseline (re-run)" and final[2].status == "keep"
    assert not [c for c in docker_client.containers.list(all=True, filters={"label": LABEL})
                if c.labels.get("autoresearch.runner_pid") == str(runner.pid)], "orphans were not removed"


def test_a_detached_runner_is_steered_and_stopped_by_commands(workspace):
    started = autoresearch(workspace, "run", "--tag", "d", "--detach")
    assert started.returncode == 0, started.stderr
    assert "runner started in the background" in started.stdout
    busy = autoresearch(workspace, "run", "--tag", "d")
    assert busy.returncode == 2 and "already running" in busy.stderr

    wait_for(lambda: any(e.status == "running" for e in experiments(workspace)), what="the baseline to start")
    status = autoresearch(workspace, "status", "--json")
    assert '"alive": true' in status.stdout

    stopped = autoresearch(workspace, "stop", "--now")
    assert "taken by the runner" in stopped.stdout
    conn = store.open_store(workspace / ".autoresearch" / "store.db", readonly=True)
    wait_for(lambda: store.run_by_tag(conn, "d").state == "stopped", timeout=120, what="the runner to stop")
    run = store.run_by_tag(conn, "d")
    conn.close()
    assert run.note == "stopped on request"
    assert experiments(workspace)[0].exit_reason == "skipped by the user"
    assert not report.runner_alive(run)
    wait_for(lambda: "stopped" in (workspace / ".autoresearch" / "runner.log").read_text(), what="the log")


def test_commands_outside_a_workspace_say_what_to_do(tmp_path):
    for args in (["run"], ["status"], ["leaderboard"], ["stop"], ["export", "--best"]):
        result = autoresearch(tmp_path, *args, timeout=60)
        assert result.returncode == 2
        assert result.stderr.strip() == ("autoresearch: not inside an autoresearch workspace: create one with "
                                         "`autoresearch init DIR`, then run this command inside DIR")


def test_a_malformed_config_names_the_line(workspace):
    config = workspace / "autoresearch.toml"
    config.write_text(config.read_text().replace('name = "sweep"', 'nmae = "sweep"'))
    result = autoresearch(workspace, "run", timeout=60)
    assert result.returncode == 2 and "line" in result.stderr and "nmae" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unknown_agent_is_refused_before_anything_runs(workspace):
    config = workspace / "autoresearch.toml"
    config.write_text(config.read_text().replace('name = "sweep"', 'name = "gpt"'))
    result = autoresearch(workspace, "run", timeout=60)
    assert result.returncode == 2 and "gpt" in result.stderr
    assert not (workspace / ".autoresearch" / "store.db").exists() or experiments(workspace) == []


def test_init_refuses_an_existing_workspace(workspace):
    result = autoresearch(workspace, "init", str(workspace), timeout=60)
    assert result.returncode == 2 and "already a workspace" in result.stderr



def claude_config(root: Path, base_url: str) -> None:
    config = root / "autoresearch.toml"
    text = config.read_text().replace('name = "sweep"', f'name = "claude"\nbase_url = "{base_url}"')
    config.write_text(text.replace("max_retries = 4", "max_retries = 0"))


def test_a_refused_api_key_stops_the_run_before_any_experiment(tmp_path):
    root = init_workspace(tmp_path / "ws")
    api = FakeAPI([Reply(401, error_body("authentication_error", "invalid x-api-key"))]).start()
    try:
        claude_config(root, api.base_url)
        result = subprocess.run([sys.executable, "-m", "autoresearch.runner.cli", "run"], cwd=root, text=True,
                                capture_output=True, timeout=60, env={**os.environ, "ANTHROPIC_API_KEY": "sk-bad"})
    finally:
        api.stop()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "autoresearch: the claude agent cannot start: the API key was refused (401): invalid x-api-key"]
    assert experiments(root) == [] and len(api.requests) == 1


def test_claude_proposes_through_the_loop_and_every_call_is_logged(workspace, monkeypatch):
    key = "sk-ant-loop-test-secret"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    edit = {"old": "WARMDOWN_RATIO = 0.5", "new": "WARMDOWN_RATIO = 0.4"}
    script = [Reply(200, {"type": "model", "id": "claude-sonnet-4-5", "display_name": "x",
                          "created_at": "2026-01-01T00:00:00Z"}),
              Reply(529, error_body("overloaded_error", "Overloaded")),  # the loop backs off and asks again
              ok(tool_use("replace_in_train_py", edit, "t1"), tool_use("submit", {"description": "shorter warmdown"},
                                                                       "t2"))]
    api = FakeAPI(script).start()
    try:
        claude_config(workspace, api.base_url)
        done = autoresearch(workspace, "run", "--max-experiments", "2")
    finally:
        api.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the agent failed (the API answered 529" in done.stdout
    second = experiments(workspace)[1]
    assert second.description == "shorter warmdown" and second.status in ("keep", "discard")
    repo = pygit2.Repository(str(workspace))
    assert b"WARMDOWN_RATIO = 0.4" in gitrepo.read_file(repo, second.commit_sha)

    conn = store.open_store(workspace / ".autoresearch" / "store.db", readonly=True)
    turns = conn.execute("SELECT experiment_id, error, cost_usd FROM agent_turns ORDER BY id").fetchall()
    spent = store.spent_usd(conn, 1)
    conn.close()
    assert [tuple(t) for t in turns] == [(None, "Overloaded", 0.0), (second.id, None, pytest.approx(0.0006))]
    assert spent == pytest.approx(0.0006)
    for path in (workspace / ".autoresearch").rglob("*"):  # the key stays in the runner's memory
        assert not path.is_file() or key.encode() not in path.read_bytes(), path


def test_the_docker_engine_going_away_mid_experiment_loses_nothing(workspace, docker_client, tmp_path):
    proxy = EngineProxy(tmp_path / "engine.sock").start()
    env = {**os.environ, "DOCKER_HOST": proxy.docker_host}
    runner = subprocess.Popen([sys.executable, "-m", "autoresearch.runner.cli", "run", "--max-experiments", "1"],
                              cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: any(e.status == "running" and points(workspace, e.id) for e in experiments(workspace)),
             what="the baseline to report progress")
    proxy.cut()
    wait_for(lambda: experiments(workspace)[0].status == "killed", timeout=60, what="the runner to notice")
    time.sleep(3)  # the engine is away a while
    proxy.start()
    output, _ = runner.communicate(timeout=300)
    assert runner.returncode == 0, output
    assert "waiting up to 15 min" in output and "the docker sandbox is back" in output
    interrupted, rerun = experiments(workspace)
    assert interrupted.status == "killed" and interrupted.exit_reason.startswith("interrupted: the Docker engine")
    assert (rerun.description, rerun.status) == ("baseline (re-run)", "keep")
    mine = [f"{k}={v}" for k, v in workspace_labels(workspace).items()]
    assert not docker_client.containers.list(
        all=True, filters={"label": [LABEL, *mine, f"autoresearch.experiment={interrupted.id}"]})


def test_noise_repeats_the_baseline_with_seeds_and_sets_the_keep_threshold(workspace):
    done = autoresearch(workspace, "noise", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "seed 1: val_bpb" in done.stdout and "seed 2: val_bpb" in done.stdout
    repeats = experiments(workspace)
    assert [e.description.split()[-2:] for e in repeats] == [["seed", "1"], ["seed", "2"]]
    assert all(e.run_id is None and e.status == "ok" for e in repeats)
    conn = store.open_store(workspace / ".autoresearch" / "store.db", readonly=True)
    noise = store.latest_noise(conn)
    conn.close()
    values = [e.val_bpb for e in repeats]
    assert noise.values_json == values and noise.mean_bpb == pytest.approx(sum(values) / 2)
    assert noise.std_bpb == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    config = load_config(workspace / "autoresearch.toml").keep
    conn = store.open_store(workspace / ".autoresearch" / "store.db", readonly=True)
    assert keep_threshold(conn, config) == max(config.threshold, config.noise_multiplier * noise.std_bpb)
    conn.close()
    assert autoresearch(workspace, "noise", "1").returncode == 2  # one run has no spread


def test_two_cpu_slots_train_at_once_on_their_own_cores_and_the_run_measures_its_noise(cpu_image, tmp_path,
                                                                                      monkeypatch):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip(reason="two CPU slots need two cores of their own")
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    root = init_workspace(tmp_path / "ws")
    config = root / "autoresearch.toml"
    config.write_text(config.read_text().replace("noise_seeds = 3", "noise_seeds = 2")
                      + f"\n[budget]\nseconds = {BUDGET_S}\n")
    client = docker.from_env()
    seen: dict[str, str] = {}  # container name -> its cpuset, while the run goes
    runner = start_runner(root, "--tag", "two", "--max-experiments", "3", "--slots", "2")
    try:
        while runner.poll() is None:
            mine = [f"{key}={value}" for key, value in workspace_labels(root).items()]
            for container in client.containers.list(filters={"label": [LABEL, *mine]}):
                if container.labels.get("autoresearch.phase") == "train":
                    seen[container.name] = container.attrs["HostConfig"]["CpusetCpus"]
            time.sleep(0.5)
    finally:
        if runner.poll() is None:
            runner.kill()
        client.close()
    output = runner.stdout.read()
    assert runner.returncode == 0, output

    rows = experiments(root)
    noise = [e for e in rows if e.role == "noise"]
    candidates = [e for e in rows if e.role is None][1:]
    assert len(noise) == 1 and noise[0].seed == 1 and noise[0].status == "ok"
    assert len(candidates) == 2 and all(e.status in ("keep", "discard") for e in candidates)
    trained_together = [e for e in candidates if e.started_at < noise[0].ended_at and noise[0].started_at < e.ended_at]
    assert trained_together, "a candidate trained beside the noise seed"
    slots = local_slots(ExecutorConfig(slots=2), [], "cpu")
    assert {e.slot for e in rows} == {slot.name for slot in slots}
    assert set(seen.values()) == {slot.cpuset for slot in slots}, seen  # each container pinned to its slot's cores
    conn = store.open_store(root / ".autoresearch" / "store.db", readonly=True)
    try:
        run = store.run_by_tag(conn, "two")
        measured = store.latest_noise(conn, run.id)
    finally:
        conn.close()
    assert measured.run_id == run.id and measured.runs == 2
    assert "noise: val_bpb spreads" in output

"""The read models the CLI and the TUI share: status groups, best, leaderboard, the runner, budget and sandbox."""

import json
import os
import socket
import time
from pathlib import Path

import pytest

from autoresearch.runner.errors import UserError
from autoresearch.runner.record import store, views
from autoresearch.runner.record.status import (
    CRASHED,
    FAILED,
    INTERRUPTED,
    JUDGED,
    LIVE,
    OPEN,
    SCORED,
    UNSETTLED,
    RunState,
    Status,
    interrupted,
)

# (status, val_bpb) of a run as the loop records it: each keep beats the one kept before it.
PLAN = (
    (Status.KEEP, 1.000), (Status.DISCARD, 1.010), (Status.KEEP, 0.990), (Status.CRASH, None),
    (Status.DISCARD, 0.995), (Status.KEEP, 0.980), (Status.BLOCKED, None), (Status.VIOLATION, None),
    (Status.RUNNING, None),
)


@pytest.fixture
def conn(tmp_path: Path):
    conn = store.open_store(tmp_path / "store.db")
    yield conn
    conn.close()


def seeded_run(conn, plan=PLAN, **run_fields) -> store.Run:
    run_id = store.create_run(conn, tag="t", agent="claude", **run_fields)
    for seq, (status, val) in enumerate(plan, start=1):
        store.create_experiment(conn, run_id=run_id, seq=seq, description=f"experiment {seq}", status=status,
                                val_bpb=val, commit_sha=None if status == Status.BLOCKED else f"{seq:040x}")
    return store.get_run(conn, run_id)


# --- the status groups ---------------------------------------------------------------------------------


def test_every_status_is_in_exactly_one_group():
    groups = (OPEN, SCORED, JUDGED, FAILED, frozenset({Status.BLOCKED}))
    for status in Status:
        assert sum(status in group for group in groups) == 1, status
    assert FAILED - {Status.VIOLATION} == CRASHED and OPEN | SCORED == UNSETTLED
    assert {RunState.RUNNING, RunState.PAUSED} == LIVE


def test_groups_hold_the_stored_strings():
    assert "crash" in FAILED and "violation" not in CRASHED and "pending" in OPEN and "ok" in UNSETTLED
    assert Status.KEEP == "keep" and f"{Status.KILLED}" == "killed" and json.dumps(Status.OK) == '"ok"'


def test_interrupted_is_the_exit_reason_prefix(conn):
    run = seeded_run(conn, plan=())
    closed = store.create_experiment(conn, run_id=run.id, description="x", status=Status.KILLED,
                                     exit_reason=f"{INTERRUPTED} the runner stopped during this experiment")
    skipped = store.create_experiment(conn, run_id=run.id, description="y", status=Status.KILLED,
                                      exit_reason="skipped by the user")
    assert interrupted(store.get_experiment(conn, closed))
    assert not interrupted(store.get_experiment(conn, skipped))
    assert not interrupted(store.get_experiment(conn, store.create_experiment(conn, run_id=run.id, description="z")))


# --- best, baseline, leaderboard -----------------------------------------------------------------------


def test_best_is_the_lowest_kept_and_so_the_last_kept(conn):
    experiments = store.list_experiments(conn, seeded_run(conn).id)
    best = views.best(experiments)
    kept = [e for e in experiments if e.status == Status.KEEP]
    assert best.seq == 6 and best.val_bpb == 0.980
    assert best == kept[-1]  # the loop's best (the last kept): the same experiment, since each keep beats the last
    assert views.baseline(experiments).seq == 1


def test_best_ignores_discards_and_unscored_keeps_and_is_none_without_a_keep(conn):
    plan = ((Status.DISCARD, 0.5), (Status.KEEP, None), (Status.OK, 0.4))
    experiments = store.list_experiments(conn, seeded_run(conn, plan).id)
    assert views.best(experiments) is None
    assert views.best([]) is None and views.baseline([]) is None


def test_the_leaderboard_ranks_kept_experiments_best_first_with_gains_over_the_baseline(conn):
    run = seeded_run(conn)
    rows = views.leaderboard(conn, run)
    assert [(r.rank, r.seq) for r in rows] == [(1, 6), (2, 3), (3, 1)]
    assert [round(r.gain, 6) for r in rows] == [0.02, 0.01, 0.0]
    assert rows[0].commit == f"{6:040x}"[:7]
    assert rows == views.leaderboard_rows(store.list_experiments(conn, run.id))  # the TUI's, from what it read
    assert views.leaderboard_rows([]) == []


def test_counts_and_the_status_of_a_run(conn):
    run = seeded_run(conn)
    status = views.run_status(conn, run)
    assert status.counts == {"keep": 3, "discard": 2, "crash": 1, "blocked": 1, "violation": 1, "running": 1}
    assert (status.best_val_bpb, status.baseline_val_bpb, status.best_commit) == (0.980, 1.000, f"{6:040x}")
    assert status.state == "running" and status.alive and status.running == "#9 experiment 9"


def test_results_tsv_writes_every_unjudged_status_as_crash(conn):
    lines = views.results_tsv(conn, seeded_run(conn)).splitlines()
    assert [line.split("\t")[3] for line in lines[1:]] == ["keep", "discard", "keep", "crash", "discard", "keep",
                                                         "crash", "crash", "crash"]
    assert lines[8].endswith("[violation] experiment 8")


def test_best_experiment_is_the_best_and_a_clear_error_before_any(conn):
    run = seeded_run(conn)
    assert views.best_experiment(conn, run) == views.best(store.list_experiments(conn, run.id))
    empty = seeded_run(conn, plan=((Status.CRASH, None),))
    with pytest.raises(UserError, match="no kept experiment yet"):
        views.best_experiment(conn, empty)


# --- the runner: alive or dead -------------------------------------------------------------------------


def runner(conn, **fields) -> store.Run:
    run = seeded_run(conn, plan=())
    store.update_run(conn, run.id, **fields)
    return store.get_run(conn, run.id)


def test_a_fresh_heartbeat_of_a_live_process_is_alive(conn):
    run = runner(conn, pid=os.getpid(), host=socket.gethostname(), heartbeat_at=time.time())
    assert views.runner_alive(run) and views.run_state(run) == "running"


def test_a_stale_heartbeat_or_a_gone_process_is_a_dead_runner(conn):
    now = time.time()
    stale = runner(conn, heartbeat_at=now - views.HEARTBEAT_STALE_S - 1)
    assert not views.runner_alive(stale, now) and views.run_state(stale, now) == "dead"
    assert views.heartbeat_age(stale, now) == pytest.approx(views.HEARTBEAT_STALE_S + 1)
    gone = runner(conn, pid=2**22 + 12345, host=socket.gethostname(), heartbeat_at=now)  # above Linux's pid_max
    assert views.run_state(gone, now) == "dead"
    elsewhere = runner(conn, pid=2**22 + 12345, host="another-host", heartbeat_at=now, state=RunState.PAUSED)
    assert views.runner_alive(elsewhere, now) and views.run_state(elsewhere, now) == "paused"
    status = views.run_status(conn, stale)
    assert (status.state, status.alive, status.running) == ("dead", False, None)
    assert "the runner died" in views.render_status(status)


def test_an_ended_run_keeps_its_state_and_has_no_runner(conn):
    run = runner(conn, state=RunState.FINISHED, heartbeat_at=time.time())
    assert not views.runner_alive(run) and views.run_state(run) == "finished"
    assert views.heartbeat_age(runner(conn, heartbeat_at=None), 0.0) is None


# --- spend, budget, sandbox ----------------------------------------------------------------------------


def test_spend_is_the_runs_agent_calls(conn):
    run, other = seeded_run(conn), seeded_run(conn, plan=())
    for run_id, cost in ((run.id, 0.25), (run.id, 0.5), (run.id, None), (other.id, 9.0)):
        store.add_agent_turn(conn, run_id=run_id, experiment_id=None, model="m", usage={"cost_usd": cost},
                             latency_s=1.0, request={}, response={}, error=None)
    assert store.spent_usd(conn, run.id) == pytest.approx(0.75)
    assert views.run_status(conn, run).spent_usd == pytest.approx(0.75)
    assert "spent $0.75 on the agent" in views.render_status(views.run_status(conn, run))


@pytest.mark.parametrize(("recorded", "policy", "expected"), [
    (90.0, "[limits]\ntime_budget_s = 300\n", 90.0),  # recorded: the policy is not read
    (None, "[limits]\ntime_budget_s = 300\n", 300.0),  # an older run: from its policy
    (None, "[limits]\ntime_budget_s = 0\n", None),
    (None, "[limits]\n", None),
    (None, "limits = 3\n", None),
    (None, "not toml [", None),
    (0.0, "", None),
])
def test_the_budget_is_recorded_else_read_from_an_older_runs_policy(conn, recorded, policy, expected):
    run = seeded_run(conn, plan=(), time_budget_s=recorded, policy_toml=policy)
    assert views.run_budget_s(run) == expected


@pytest.mark.parametrize(("sandbox", "label", "isolated"), [
    ("docker", "sandbox: docker", True),
    ("process", "sandbox: process (NOT ISOLATED)", False),
    (None, None, None),
])
def test_the_sandbox_is_in_the_status_and_a_process_one_is_announced(conn, sandbox, label, isolated):
    run = seeded_run(conn, sandbox=sandbox)
    assert (views.sandbox_label(run.sandbox), views.isolated(run.sandbox)) == (label, isolated)
    status = views.run_status(conn, run)
    as_json = json.loads(json.dumps(views.status_dict(status)))
    assert (as_json["sandbox"], as_json["isolated"]) == (sandbox, isolated)
    text = views.render_status(status)
    if label is None:
        assert "sandbox" not in text
    else:
        assert text.splitlines()[2].startswith(f"  {label}")
    assert ("without isolation" in text) == (isolated is False)

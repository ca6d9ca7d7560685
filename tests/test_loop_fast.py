"""The research loop on the fake sandbox: the loop's and the trial's logic in seconds, without Docker.

Everything but the sandbox is real: the workspace, git, the store, the static policy, the dynamic
rules, the judge, the replay agent, the steering thread, and (where a case needs a process) the
`autoresearch` command in a subprocess. The fake runs each phase as a real child process scripted by
the candidate's `# fake-sandbox:` line (tests/fake_workspace.py). What is asserted is the record: the
store's rows, the git branch, refs and notes, and the run row. tests/test_loop.py keeps the same
loop on the real engine (the slow tier).
"""

import dataclasses
import hashlib
import json
import signal
import time
from pathlib import Path

import psutil
import pytest

from autoresearch.runner import loop as loop_module
from autoresearch.runner import steering
from autoresearch.runner.agents import Proposal, ProposalContext
from autoresearch.runner.agents.replay import ReplayAgent
from autoresearch.runner.loop import MAX_BLOCKED_IN_A_ROW
from autoresearch.runner.phases.compile_seed import seed_digest
from autoresearch.runner.record import gitrepo, store, views
from autoresearch.runner.record.status import RunState, Status
from autoresearch.runner.sandbox.base import RUNNER_PID_LABEL
from tests.fake_workspace import BASELINE, FakeWorkspace, edit, wait_for

WARNING = "WARNING: the fake sandbox runs candidates WITHOUT isolation"


@pytest.fixture
def fw(tmp_path, monkeypatch) -> FakeWorkspace:
    return FakeWorkspace.make(tmp_path, monkeypatch)


@pytest.fixture
def fast_steering(monkeypatch):
    """The in-process runner reads its commands every 0.1 s instead of every second."""
    monkeypatch.setattr(steering, "TICK_S", 0.1)


@pytest.fixture
def fast_engine_poll(monkeypatch):
    """The loop polls a lost engine every 0.1 s instead of every 5 s."""
    monkeypatch.setattr(loop_module, "ENGINE_POLL_S", 0.1)


# ---- the baseline and the keep rule


def test_the_baseline_is_kept_first_then_only_a_clear_improvement_advances_the_branch(fw):
    fw.replay(edit("better", bpb=0.9), edit("worse", bpb=1.1), edit("within the threshold", bpb=0.895),
              edit("better again", bpb=0.85))
    assert fw.loop() == 0

    recorded = fw.experiments()
    assert [(e.seq, e.description, e.status, e.val_bpb) for e in recorded] == [
        (1, "baseline", Status.KEEP, 1.0), (2, "better", Status.KEEP, 0.9), (3, "worse", Status.DISCARD, 1.1),
        (4, "within the threshold", Status.DISCARD, 0.895), (5, "better again", Status.KEEP, 0.85)]
    assert [e.test_bpb for e in recorded] == [1.0, 0.9, None, None, 0.85]  # only a kept model is scored on test
    baseline, better, _, within, again = recorded

    repo = fw.repo()
    assert gitrepo.branch_tip(repo, "t") == again.commit_sha
    assert [e.parent_sha for e in recorded[1:]] == [baseline.commit_sha, *[better.commit_sha] * 3]
    for e in recorded:
        assert gitrepo.experiment_ref(repo, "t", e.seq) == e.commit_sha
        assert json.loads(gitrepo.read_note(repo, e.commit_sha))["status"] == e.status
        assert e.description in repo.get(e.commit_sha).message
    assert b'"bpb": 0.895' in gitrepo.read_file(repo, within.commit_sha)

    run = fw.run_row()  # the exhausted replay agent ends the run as finished
    assert (run.state, run.note) == (RunState.FINISHED, "replay finished: 4 edits applied")
    assert (run.time_budget_s, run.sandbox, run.agent, run.ended_at is not None) == (1.0, "fake", "replay", True)
    assert fw.said[-1] == "run t finished: replay finished: 4 edits applied"
    assert [c.best_val_bpb for c in fw.contexts] == [1.0, 0.9, 0.9, 0.9, 0.85]


@pytest.mark.parametrize(("script", "status", "reason"), [
    ({"exit_code": 1}, Status.CRASH, "exit code 1: RuntimeError: scripted failure (exit code 1)"),
    ({"score": "violation"}, Status.VIOLATION, "scripted violation"),
])
def test_a_baseline_that_does_not_score_stops_the_run_with_exit_code_1(tmp_path, monkeypatch, script, status,
                                                                         reason):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, baseline={"seconds": 0.3, **script})
    done = fw.cli("run", "--tag", "t")
    note = f"the baseline did not score ({status}: {reason})"
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"run t stopped: {note}" in done.stdout

    [baseline] = fw.experiments()
    assert (baseline.description, baseline.status, baseline.exit_reason) == ("baseline", status, reason)
    run = fw.run_row()
    assert (run.state, run.note) == (RunState.STOPPED, note)
    repo = fw.repo()
    assert gitrepo.branch_tip(repo, "t") == str(repo.head.target)  # the run's branch never moved
    assert gitrepo.experiment_ref(repo, "t", 1) == baseline.commit_sha


# ---- caps


def test_max_experiments_stops_the_run_and_max_usd_counts_the_runs_recorded_spending(fw):
    fw.replay(*(edit(f"candidate {i}", bpb=1.0 - i / 10) for i in range(1, 6)))
    assert fw.loop(max_experiments=3) == 0
    assert [e.description for e in fw.experiments()] == ["baseline", "candidate 1", "candidate 2"]
    run = fw.run_row()
    assert (run.state, run.note) == (RunState.FINISHED, "reached 3 experiments (cap 3)")

    # The replay agent costs nothing, so spending is recorded as a claude agent's turn would be; the cap counts
    # the whole run's spending, so a resumed run stops at once. The resume records its own budget.
    conn = store.open_store(fw.store_path)
    store.add_agent_turn(conn, run_id=run.id, experiment_id=None, model="m", usage={"cost_usd": 0.75}, latency_s=0.1,
                         request={}, response={}, error=None)
    conn.close()
    assert fw.loop(max_experiments=10, max_usd=0.5, time_budget_s=2) == 0
    assert len(fw.experiments()) == 3
    run = fw.run_row()
    assert (run.state, run.note, run.time_budget_s) == (RunState.FINISHED, "spent $0.75 (cap $0.50)", 2.0)
    assert "run t: resuming after 3 experiments" in fw.said


def set_caps(fw: FakeWorkspace, **caps) -> None:
    """Add keys to the workspace's [caps] in autoresearch.toml."""
    config = fw.root / "autoresearch.toml"
    lines = "".join(f"{key} = {value}\n" for key, value in caps.items())
    config.write_text(config.read_text().replace("[caps]\n", f"[caps]\n{lines}"))


def test_a_target_ends_the_run_at_the_first_keep_that_reaches_it_the_flag_over_the_config(fw):
    set_caps(fw, target_val_bpb=0.5)  # never reached: the flag decides
    fw.replay(edit("better", bpb=0.97), edit("on target", bpb=0.95), edit("never run", bpb=0.9))
    assert fw.loop(target_bpb=0.96) == 0
    assert fw.statuses() == [("baseline", Status.KEEP), ("better", Status.KEEP), ("on target", Status.KEEP)]
    run = fw.run_row()
    assert (run.state, run.note) == (RunState.FINISHED, "reached the target val_bpb 0.96 (kept #3: 0.950000)")
    assert fw.said[-1] == f"run t finished: {run.note}"


def test_a_target_counts_a_close_keep_only_once_its_second_seed_confirms_it(tmp_path, monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, noise_seeds=3,
                            baseline={**BASELINE, "bpb_by_seed": {"1": 1.02, "2": 0.98}})  # std 0.02
    set_caps(fw, target_val_bpb=0.93)
    # lucky gains 0.07, under 4 std: its second seed (1.0) makes the mean 0.965, not a keep; clear gains 0.1
    fw.replay(edit("lucky", bpb=0.93, bpb_by_seed={str(loop_module.CONFIRM_SEED): 1.0}), edit("clear", bpb=0.9),
              edit("never run", bpb=0.8))
    assert fw.loop() == 0
    candidates = [(e.description, e.status) for e in fw.experiments() if e.role is None]
    assert candidates == [("baseline", Status.KEEP), ("lucky", Status.DISCARD), ("clear", Status.KEEP)]
    assert fw.run_row().note == "reached the target val_bpb 0.93 (kept #6: 0.900000)"


def test_patience_ends_the_run_after_candidates_in_a_row_without_a_keep_the_noise_seeds_aside(tmp_path,
                                                                                                 monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, noise_seeds=2)
    set_caps(fw, patience=9)  # the flag's 3 decides
    fw.replay(edit("better", bpb=0.9), edit("worse", bpb=0.95), edit("crashes", exit_code=1),
              edit("blocked", prefix="import subprocess\n"), edit("never run", bpb=0.5))
    assert fw.loop(patience=3) == 0
    assert fw.statuses() == [("baseline", Status.KEEP), ("baseline: noise seed 1", Status.OK),
                             ("better", Status.KEEP), ("worse", Status.DISCARD), ("crashes", Status.CRASH),
                             ("blocked", Status.BLOCKED)]
    assert fw.run_row().note == "3 candidates in a row ended without a keep (patience 3)"


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--target-bpb", "0", "--target-bpb must be positive, got 0"),
    ("--patience", "-2", "--patience must be positive, got -2"),
])
def test_a_target_or_patience_that_is_not_positive_is_refused_in_one_line(fw, flag, value, message):
    done = fw.cli("run", flag, value)
    assert (done.returncode, done.stderr) == (2, f"autoresearch: {message}\n")
    assert not fw.store_path.exists()


# ---- a runner killed mid-experiment


def test_a_runner_killed_mid_experiment_resumes_reruns_it_and_loses_nothing(tmp_path, monkeypatch):
    # The interrupted candidate leaves its seconds to the defaults file: 30 s while the first runner trains it
    # (so its orphaned phase is surely alive when the next runner starts), 0.3 s for the re-run.
    fw = FakeWorkspace.make(tmp_path, monkeypatch, defaults={"seconds": 30})
    fw.replay(edit("slow", seconds=None, bpb=0.9), edit("never reached", bpb=0.8))
    runner = fw.start("--tag", "t", "--max-experiments", "2")
    try:
        wait_for(lambda: fw.training("slow"), what="the candidate to train")
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        runner.stdout.close()
    before = fw.experiments()
    assert [(e.description, e.status) for e in before] == [("baseline", "keep"), ("slow", "running")]
    assert views.run_state(fw.run_row()) == "dead"
    orphans = [r for r in fw.fake_records() if r["labels"].get(RUNNER_PID_LABEL) == str(runner.pid)]
    phases = [r for r in orphans if "pid" in r]
    assert len(phases) == 1 and psutil.pid_exists(phases[0]["pid"]), "the dead runner's phase should still run"
    assert any("path" in r for r in orphans), "the dead runner's hand-over should still be there"

    fw.set_defaults(seconds=0.3)
    done = fw.cli("run", "--tag", "t", "--max-experiments", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run t: resuming after 2 experiments; re-running the interrupted #2" in done.stdout

    baseline, interrupted, rerun = fw.experiments()
    assert baseline == before[0]  # what was recorded stays as it was
    assert (interrupted.id, interrupted.status, interrupted.exit_reason) == (
        before[1].id, Status.KILLED, "interrupted: the runner stopped during this experiment")
    assert (rerun.seq, rerun.description, rerun.status, rerun.val_bpb) == (3, "slow (re-run)", Status.KEEP, 0.9)
    assert rerun.train_py_sha256 == interrupted.train_py_sha256 and rerun.parent_sha == baseline.commit_sha
    assert gitrepo.branch_tip(fw.repo(), "t") == rerun.commit_sha
    run = fw.run_row()  # the interrupted experiment does not count toward the cap
    assert (run.state, run.note) == (RunState.FINISHED, "reached 2 experiments (cap 2)")
    assert not [r for r in fw.fake_records() if r["labels"].get(RUNNER_PID_LABEL) == str(runner.pid)]
    assert not any(psutil.pid_exists(p["pid"]) and psutil.Process(p["pid"]).status() != psutil.STATUS_ZOMBIE
                   for p in phases), "the orphaned phase was not ended"
    assert not any(Path(r["path"]).exists() for r in orphans if "path" in r)


# ---- steering: skip, pause, resume, stop


def test_skip_kills_the_running_experiment_and_the_loop_goes_on(fw, fast_steering):
    fw.replay(edit("long", seconds=30, bpb=0.5), edit("next", bpb=0.9))

    def skip() -> None:
        wait_for(lambda: fw.training("long"), what="the long candidate to train")
        sent = fw.cli("skip", timeout=60)
        assert "skip: taken by the runner" in sent.stdout, sent.stdout + sent.stderr

    with fw.meanwhile(skip):
        assert fw.loop(timeout=25) == 0
    assert [(e.description, e.status, e.exit_reason) for e in fw.experiments()] == [
        ("baseline", Status.KEEP, "finished and scored"), ("long", Status.KILLED, "skipped by the user"),
        ("next", Status.KEEP, "finished and scored")]
    assert fw.contexts[1].last_failure.startswith("killed: skipped by the user\n")
    assert fw.run_row().state == RunState.FINISHED


def test_a_skipped_baseline_is_run_again_not_a_failed_run(tmp_path, monkeypatch, fast_steering):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, baseline={"bpb": 1.0}, defaults={"seconds": 30})

    def skip() -> None:
        wait_for(lambda: fw.training("baseline"), what="the baseline to train")
        fw.set_defaults(seconds=0.3)  # its second run is quick
        fw.command("skip")

    with fw.meanwhile(skip):
        assert fw.loop(max_experiments=2, timeout=25) == 0
    assert fw.statuses() == [("baseline", Status.KILLED), ("baseline", Status.KEEP)]
    assert fw.run_row().note == "reached 2 experiments (cap 2)"


def test_pause_waits_between_experiments_resume_goes_on_and_stop_ends_the_run(fw, fast_steering):
    fw.replay(edit("first", seconds=0.6, bpb=0.9), edit("second", seconds=0.6, bpb=0.8),
              edit("never proposed", bpb=0.7))
    seen: dict[str, object] = {}

    def steer() -> None:
        wait_for(lambda: fw.training("first"), what="the first candidate to train")
        fw.command("pause")
        wait_for(lambda: fw.run_row().state == RunState.PAUSED, what="the run to pause")
        seen["paused with"] = fw.statuses()
        time.sleep(1)  # no experiment starts while paused
        seen["a second later"] = fw.statuses()
        fw.command("resume")
        wait_for(lambda: fw.training("second"), what="the second candidate to start after resume")
        fw.command("stop")

    with fw.meanwhile(steer):
        assert fw.loop() == 0
    assert seen["paused with"] == seen["a second later"] == [("baseline", Status.KEEP), ("first", Status.KEEP)]
    assert "paused: `autoresearch resume` goes on" in fw.said
    assert fw.statuses() == [("baseline", Status.KEEP), ("first", Status.KEEP), ("second", Status.KEEP)]
    run = fw.run_row()  # stop lets the running experiment finish
    assert (run.state, run.note) == (RunState.STOPPED, "stopped on request")
    assert len(fw.contexts) == 2


# ---- the engine going away


@pytest.mark.parametrize("lost_in", ["baseline", "candidate"])
def test_an_engine_lost_mid_experiment_is_waited_for_and_the_experiment_rerun_uncounted(
        tmp_path, monkeypatch, fast_engine_poll, lost_in):
    lose = {"seconds": 0.6, "engine_lost": "once"}
    fw = FakeWorkspace.make(tmp_path, monkeypatch, defaults={"engine_down_s": 0.5},
                            baseline={"bpb": 1.0, **(lose if lost_in == "baseline" else {"seconds": 0.3})})
    fw.replay(edit("candidate", bpb=0.9, **(lose if lost_in == "candidate" else {})), edit("never proposed"))
    assert fw.loop(max_experiments=2, timeout=30) == 0

    rows = fw.experiments()
    reason = "interrupted: the fake engine went away during the train (scripted engine_lost)"
    lost = rows[0] if lost_in == "baseline" else rows[1]
    assert (lost.description, lost.status, lost.exit_reason) == (lost_in, Status.KILLED, reason)
    assert [(e.description, e.status) for e in rows if e is not lost] == [
        ("baseline" + (" (re-run)" if lost_in == "baseline" else ""), Status.KEEP),
        ("candidate" + (" (re-run)" if lost_in == "candidate" else ""), Status.KEEP)]
    assert f"{reason}; waiting up to 15 min for it to come back" in fw.said
    assert "the fake sandbox is back: re-running the interrupted experiments" in fw.said
    run = fw.run_row()  # three experiments, the interrupted one not counted
    assert (run.state, run.note) == (RunState.FINISHED, "reached 2 experiments (cap 2)")
    assert gitrepo.experiment_ref(fw.repo(), "t", lost.seq) == lost.commit_sha
    assert fw.fake_records() == []  # nothing of the lost experiment is left in the engine


def test_a_candidate_that_takes_the_engine_down_every_time_stops_the_run_after_three(tmp_path, monkeypatch,
                                                                                     fast_engine_poll):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, defaults={"engine_down_s": 0.1})
    fw.replay(edit("poison", bpb=0.9, seconds=0.4, engine_lost=True))
    assert fw.loop(max_experiments=5, timeout=25) == 2
    assert fw.statuses() == [("baseline", Status.KEEP), ("poison", Status.KILLED),
                             ("poison (re-run)", Status.KILLED), ("poison (re-run)", Status.KILLED)]
    run = fw.run_row()
    assert run.state == RunState.STOPPED
    assert run.note.startswith("the fake sandbox failed under 3 experiments in a row")


def test_a_stop_while_the_engine_is_away_ends_the_run_as_stopped(tmp_path, monkeypatch, fast_engine_poll):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, defaults={"engine_down_s": 60})
    fw.replay(edit("candidate", bpb=0.9, seconds=0.4, engine_lost="once"))

    def stop_while_waiting() -> None:
        wait_for(lambda: any("waiting up to" in line for line in fw.said), timeout=20, what="the wait")
        fw.command("stop")

    with fw.meanwhile(stop_while_waiting):
        assert fw.loop(max_experiments=3, timeout=25) == 0
    assert fw.statuses() == [("baseline", Status.KEEP), ("candidate", Status.KILLED)]
    assert (fw.run_row().state, fw.run_row().note) == (RunState.STOPPED, "stopped on request")


# ---- the static policy


def test_ten_blocked_candidates_in_a_row_stop_the_run(fw):
    blocked = [edit(f"blocked {i}", prefix="import subprocess\n") for i in range(1, 20)]
    fw.replay(*blocked[:9], edit("runs", bpb=0.9), *blocked[9:], edit("never proposed"))
    assert MAX_BLOCKED_IN_A_ROW == 10
    assert fw.loop() == 2

    rows = fw.experiments()
    assert [e.status for e in rows] == [Status.KEEP, *[Status.BLOCKED] * 9, Status.KEEP, *[Status.BLOCKED] * 10]
    run = fw.run_row()  # nine blocked, then one that runs, resets the count
    assert (run.state, run.note) == (RunState.STOPPED,
                                     "the agent cannot go on: the policy blocked 10 candidates in a row")
    findings = fw.read(lambda conn: store.list_findings(conn, rows[1].id))
    assert any(f.finding.rule_id == "static.forbidden_import" and f.finding.action == "block" for f in findings)
    repo = fw.repo()
    for e in rows:  # a blocked candidate is never committed
        assert (e.commit_sha is None) == (e.status == Status.BLOCKED)
        assert (gitrepo.experiment_ref(repo, "t", e.seq) is None) == (e.status == Status.BLOCKED)
    assert gitrepo.branch_tip(repo, "t") == rows[10].commit_sha
    assert "blocked by the policy: imports forbidden module subprocess" in fw.said


# ---- failures


def test_failures_are_recorded_and_the_next_proposal_sees_the_last_ones_log(tmp_path, monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch)
    fw.replay(edit("crashes", exit_code=1), edit("runs out of memory", oom=True),
              edit("breaks a rule", score="violation"), edit("scoring crashes", score="crash"),
              edit("works", bpb=0.9), edit("works too", bpb=0.95))
    assert fw.loop() == 0

    expected = [
        ("baseline", Status.KEEP, "finished and scored"),
        ("crashes", Status.CRASH, "exit code 1: RuntimeError: scripted failure (exit code 1)"),
        ("runs out of memory", Status.OOM, "out of memory (OOMKilled)"),
        ("breaks a rule", Status.VIOLATION, "scripted violation"),
        ("scoring crashes", Status.CRASH,
         "scoring gave no verdict (exit code 1): RuntimeError: scripted scoring crash"),
        ("works", Status.KEEP, "finished and scored"),
        ("works too", Status.DISCARD, "finished and scored"),
    ]
    rows = fw.experiments()
    assert [(e.description, e.status, e.exit_reason) for e in rows] == expected
    assert all(e.val_bpb is None for e in rows[1:5])
    repo = fw.repo()
    for e in rows[1:5]:
        assert json.loads(gitrepo.read_note(repo, e.commit_sha))["status"] == e.status
    assert gitrepo.branch_tip(repo, "t") == rows[5].commit_sha

    # proposal k is made after experiment k: each sees the failure just before it, with the log's end
    failures = [c.last_failure for c in fw.contexts]
    assert failures[0] is None and failures[5] is None and failures[6] is None
    for failure, (_, status, reason) in zip(failures[1:5], expected[1:5], strict=True):
        assert failure.startswith(f"{status}: {reason}\n"), failure[:200]
    assert "Traceback (most recent call last):" in failures[1]
    assert "progress step=4" in failures[2] and "val_bpb" not in failures[2]  # the OOM'd run printed no summary
    assert [h.status for h in fw.contexts[-1].history] == [s for _, s, _ in expected]


def test_a_proposals_notes_reach_the_next_proposal_and_the_store_with_the_runs_memory(fw, monkeypatch):
    notes = {"better": "LR is fine\ntry depth next", "worse": None, "third": ""}  # None: left unchanged
    propose = ReplayAgent.propose

    def with_notes(agent: ReplayAgent, context: ProposalContext) -> Proposal:
        proposal = propose(agent, context)
        return dataclasses.replace(proposal, notes=notes[proposal.description])

    monkeypatch.setattr(ReplayAgent, "propose", with_notes)
    fw.replay(edit("better", bpb=0.9), edit("worse", bpb=1.1), edit("third", bpb=0.95))
    assert fw.loop() == 0

    # proposal k reads the notes proposal k-1 left (the last call is the one that found the replay exhausted)
    assert [c.notes for c in fw.contexts] == ["", notes["better"], notes["better"], ""]
    rows = {e.description: e for e in fw.experiments()}
    recorded = fw.read(lambda conn: [(r["experiment_id"], r["text"]) for r in conn.execute(
        "SELECT experiment_id, text FROM agent_notes ORDER BY id")])
    assert recorded == [(rows["better"].id, notes["better"]), (rows["third"].id, "")]
    kept_at_worse = fw.read(lambda conn: store.notes_at(conn, rows["worse"].id))
    assert kept_at_worse.text == notes["better"] and kept_at_worse.experiment_id == rows["better"].id

    # the rest of the memory, from the record: deltas, the kept change with its diff, the last run's figures
    last = fw.contexts[-1]
    assert [(h.description, h.delta) for h in last.history[1:]] == [
        ("better", pytest.approx(-0.1)), ("worse", pytest.approx(0.2)), ("third", pytest.approx(0.05))]
    assert [(c.seq, c.near_miss, c.gain) for c in last.recent_changes] == [(2, False, pytest.approx(0.1))]
    assert '"bpb": 0.9' in last.recent_changes[0].diff
    summary = last.last_summary
    assert (summary.seq, summary.status, summary.val_bpb) == (4, Status.DISCARD, 0.95)
    assert (summary.final_loss, summary.tok_per_s, summary.steps, summary.flat_step) == (3.0, 1000.0, 4, 4)


def test_a_candidate_past_the_hard_deadline_is_recorded_as_timeout(tmp_path, monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, deadline_allowance_s=0.5)  # the hard deadline: 1 + 0.5 s
    fw.replay(edit("runs past the deadline", seconds=3))
    assert fw.loop() == 0
    timed_out = fw.experiments()[1]
    assert (timed_out.status, timed_out.exit_reason) == (Status.TIMEOUT, "killed at the hard deadline")
    assert fw.contexts[1].last_failure.startswith("timeout: killed at the hard deadline\n")


# ---- the sandbox's isolation


@pytest.mark.parametrize("isolated", [True, False])
def test_the_no_isolation_warning_is_printed_only_for_a_provider_that_does_not_isolate(tmp_path, monkeypatch,
                                                                                        isolated):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, defaults={"isolated": isolated})
    assert fw.loop(max_experiments=1) == 0
    assert any(line.startswith(WARNING) for line in fw.said) is not isolated
    assert fw.statuses() == [("baseline", Status.KEEP)]
    assert fw.run_row().sandbox == "fake"


def test_the_run_says_and_records_which_corpus_auto_chose(tmp_path, monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch)
    assert fw.loop(max_experiments=1) == 0
    assert fw.run_row().source == "offline"  # the tests' hub is a closed port: auto takes the bundled corpus
    assert any(line.startswith("data: the offline corpus (auto: http://127.0.0.1:9/no-hub does not answer")
               for line in fw.said)


# ---- the compile seed (the real providers' side: tests/sandbox/test_compile_seed.py)


def seed_folders(fw: FakeWorkspace) -> list[Path]:
    return sorted((fw.root.parent / "cache" / "compile-seeds").glob("*/*"))


def test_only_the_baseline_seeds_the_runs_compile_cache_and_the_run_records_its_digest(tmp_path, monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, baseline={**BASELINE, "compile_cache": {"kernel.py": "BASELINE"}})
    fw.replay(edit("plants", bpb=0.9, compile_cache={"planted.py": "PLANTED"}), edit("next", bpb=0.95))
    assert fw.loop() == 0

    baseline = fw.experiments()[0]
    seed = fw.run_row().compile_seed_json
    (folder,) = seed_folders(fw)
    assert [path.name for path in folder.iterdir()] == ["kernel.py"]  # a later experiment's cache never lands
    assert (seed["experiment_id"], seed["files"], seed["digest"]) == (baseline.id, 1, seed_digest(folder).digest)
    assert seed["image_id"] == "fake:cpu:" + hashlib.sha256(b"fake:cpu").hexdigest()[:12]
    assert [line for line in fw.said if line.startswith("compile cache:")] == [
        f"compile cache: seeded: 1 files, 0.0 MiB, digest {seed['digest'][:12]}"]


def test_a_seed_changed_after_it_was_recorded_is_refused_and_the_experiments_compile_cold(tmp_path, monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, baseline={**BASELINE, "compile_cache": {"kernel.py": "BASELINE"}})
    fw.replay(edit("better", bpb=0.9), edit("worse", bpb=0.95))
    recorded = loop_module.Loop._compile_seeded

    def then_tampered(self, result, image_id, baseline):  # as a process-provider candidate could, on the host
        recorded(self, result, image_id, baseline)
        if result.compile_seed is not None:
            (folder,) = seed_folders(fw)
            folder.chmod(0o755)
            (folder / "kernel.py").chmod(0o644)
            (folder / "kernel.py").write_text("PLANTED")

    monkeypatch.setattr(loop_module.Loop, "_compile_seeded", then_tampered)
    assert fw.loop() == 0
    assert fw.statuses() == [("baseline", Status.KEEP), ("better", Status.KEEP), ("worse", Status.DISCARD)]
    refused = [line for line in fw.said if line.startswith("compile cache: cold: the run's seed was refused")]
    assert len(refused) == 2 and "(its digest is " in refused[0]

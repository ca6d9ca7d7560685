"""The fake provider's own behaviour: its scripting, and that what it writes passes the runner's real checks."""

import json
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from autoresearch.runner.errors import UserError
from autoresearch.runner.phases.data import split_files
from autoresearch.runner.phases.metrics import parse_progress, parse_summary
from autoresearch.runner.sandbox import FAKE_SCRIPT_ENV as ENV
from autoresearch.runner.sandbox.base import (
    DEADLINE,
    PHASE_LABEL,
    RUNNER_PID_LABEL,
    Mount,
    PhaseSpec,
    SandboxUnavailable,
)
from autoresearch.runner.sandbox.fake_provider import FakeSandbox, directives, load_defaults
from autoresearch.runner.sandbox.registry import open_sandbox

DEAD_PID = "999999999"


@pytest.fixture
def fake(fake_defaults: Path) -> FakeSandbox:
    return FakeSandbox.open()


def set_defaults(path: Path, **scripting) -> None:
    """Rewrite the defaults file (the fake reads it again for every phase)."""
    path.write_text(json.dumps(scripting))


def candidate(tmp_path: Path, directive: dict | None = None) -> Path:
    path = tmp_path / f"train-{uuid.uuid4().hex[:8]}.py"
    head = f"# fake-sandbox: {json.dumps(directive)}\n" if directive is not None else ""
    path.write_text(head + "import torch  # never runs under the fake\n")
    return path


def train(fake: FakeSandbox, tmp_path: Path, source: Path, handover=None, watch=None, deadline_s: float = 60,
          labels: dict | None = None):
    mounts = [Mount(source, "/task/train.py", read_only=False)]
    if handover is not None:
        mounts.append(handover.mount("/handover", read_only=False))
    spec = PhaseSpec(image=fake.image("cpu"), command=["python3", "/task/train.py"], mounts=mounts,
                     environment={"AUTORESEARCH_HANDOVER": "/handover"},
                     labels={**(labels or {}), PHASE_LABEL: "train"}, deadline_s=deadline_s)
    lines: list[str] = []
    return fake.run(spec, tmp_path / "train.log", lines.append, watch), lines


def score(fake: FakeSandbox, tmp_path: Path, handover, split: str = "val"):
    """The score phase as runner/phases/experiment.py builds it: (result, verdict folder, nonce)."""
    verdict_dir = tmp_path / f"verdict-{uuid.uuid4().hex[:8]}"
    verdict_dir.mkdir()
    nonce = uuid.uuid4().hex
    spec = PhaseSpec(image=fake.image("cpu"),
                     command=["python3", "-I", "/task/prepare.py", "evaluate", "--handover", "/handover", "--data",
                              "/data", "--split", split, "--verdict", "/verdict"],
                     mounts=[Mount(tmp_path / "prepare.py", "/task/prepare.py"), handover.mount(),
                             Mount(verdict_dir, "/verdict", read_only=False)],
                     environment={"AUTORESEARCH_NONCE": nonce}, labels={PHASE_LABEL: f"score-{split}"})
    return fake.run(spec, tmp_path / "score.log"), verdict_dir, nonce


# ---- scripting


def test_directives_are_read_from_comment_lines_and_merged_in_order():
    source = ('# fake-sandbox: {"seconds": 2, "bpb": 0.9}\nimport torch\n'
              '   #fake-sandbox:{"bpb": 0.8, "score": "violation"}  \nx = "# fake-sandbox: not at a line start"\n')
    assert directives(source) == {"seconds": 2, "bpb": 0.8, "score": "violation"}
    assert directives("import torch\n") == {}


@pytest.mark.parametrize("line", ['# fake-sandbox: {"secnds": 2}', '# fake-sandbox: {"score": "great"}',
                                  '# fake-sandbox: {"seconds": }'])
def test_a_bad_directive_is_an_error_not_a_silent_default(line):
    with pytest.raises(ValueError):
        directives(line + "\n")


def test_defaults_file_empty_or_with_keys(tmp_path):
    path = tmp_path / "defaults.json"
    path.write_text("")
    assert load_defaults(path) == {}
    path.write_text("{}")
    assert load_defaults(path) == {}
    path.write_text('{"bpb": 0.7, "engine_down_s": 0.2}')
    assert load_defaults(path) == {"bpb": 0.7, "engine_down_s": 0.2}
    path.write_text('{"bbp": 0.7}')
    with pytest.raises(ValueError, match="bbp"):
        load_defaults(path)
    with pytest.raises(UserError):
        load_defaults(tmp_path / "missing.json")


def test_open_sandbox_gives_the_fake_only_to_tests(fake_defaults, monkeypatch):
    assert isinstance(open_sandbox("fake"), FakeSandbox)
    monkeypatch.delenv(ENV)
    with pytest.raises(UserError, match="tests only"):
        open_sandbox("fake")


def test_provider_basics(fake, fake_defaults):
    assert (fake.name, fake.isolated, fake.image("gpu"), fake.reachable()) == ("fake", True, "fake:gpu", True)
    assert fake.state_dir == fake_defaults.with_name("fake-sandbox.json.state")
    set_defaults(fake_defaults, isolated=False)
    assert FakeSandbox.open().isolated is False


def test_default_train_phase_prints_progress_and_summary_and_hands_over(fake, tmp_path):
    handover = fake.open_handover("fake:cpu", 64, {})
    result, lines = train(fake, tmp_path, candidate(tmp_path, {"seconds": 0.5, "bpb": 0.93}), handover)
    assert (result.exit_code, result.killed_by, result.oom_killed) == (0, None, False)
    points = [p for p in map(parse_progress, lines) if p is not None]
    assert [p.step for p in points] == [1, 2, 3, 4]
    assert points[0].loss > points[-1].loss
    summary = parse_summary(result.log_tail)
    assert summary["val_bpb"] == pytest.approx(0.93) and summary["num_steps"] == 4
    assert 0.45 < result.run_seconds < 5
    model = json.loads((handover.path / "model.graph").read_text())
    assert model["bpb"] == 0.93 and model["score"] == "ok"
    handover.release()
    assert not handover.path.exists()


def test_defaults_file_scripts_candidates_without_a_directive(fake, fake_defaults, tmp_path):
    set_defaults(fake_defaults, seconds=0.1, bpb=0.71, exit_code=0)
    result, _ = train(fake, tmp_path, candidate(tmp_path))
    assert parse_summary(result.log_tail)["val_bpb"] == pytest.approx(0.71)
    result, _ = train(fake, tmp_path, candidate(tmp_path, {"bpb": 0.5}))  # the directive wins
    assert parse_summary(result.log_tail)["val_bpb"] == pytest.approx(0.5)


def test_scripted_lines_at_times_and_exit_code(fake, tmp_path):
    source = candidate(tmp_path, {"seconds": 0.3, "lines": ["a", [0.0, "first"], "b"], "exit_code": 7})
    result, lines = train(fake, tmp_path, source)
    assert lines == ["first", "a", "b"]
    assert result.exit_code == 7


def test_a_long_script_floods_a_capped_log(fake, tmp_path):
    source = candidate(tmp_path, {"seconds": 0.1, "lines": [[0, f"line {i} " + "x" * 100] for i in range(5000)]})
    spec = PhaseSpec(image="fake:cpu", command=["python3", "/task/train.py"], mounts=[Mount(source, "/task/train.py")])
    lines: list[str] = []
    result = fake.run(spec, tmp_path / "flood.log", lines.append, max_log_bytes=4096)
    assert len(lines) == 5000 and lines[-1].startswith("line 4999 ")
    assert result.log_bytes > 500_000 and result.log_dropped_bytes > 0
    assert (tmp_path / "flood.log").stat().st_size < 8192


def test_failing_candidate_ends_with_a_traceback_and_no_summary(fake, tmp_path):
    result, lines = train(fake, tmp_path, candidate(tmp_path, {"seconds": 0.1, "exit_code": 1}))
    assert result.exit_code == 1
    assert lines[-1].startswith("RuntimeError") and "---" not in lines


def test_oom(fake, tmp_path):
    handover = fake.open_handover("fake:cpu", 64, {})
    result, lines = train(fake, tmp_path, candidate(tmp_path, {"seconds": 0.1, "oom": True}), handover)
    assert (result.oom_killed, result.exit_code, result.killed_by) == (True, 137, None)
    assert "---" not in lines and not (handover.path / "model.graph").exists()
    handover.release()


def test_deadline_kills_before_the_handover_is_written(fake, tmp_path):
    handover = fake.open_handover("fake:cpu", 64, {})
    began = time.monotonic()
    result, _ = train(fake, tmp_path, candidate(tmp_path, {"seconds": 30}), handover, deadline_s=0.5)
    assert (result.killed_by, result.exit_code, result.timed_out) == (DEADLINE, None, True)
    assert time.monotonic() - began < 5
    assert not (handover.path / "model.graph").exists()
    handover.release()


# ---- scoring: the verdict as task/prepare.py writes it, checked by the runner's own read_verdict


@pytest.mark.parametrize(("scripted", "exit_code", "accepted"),
                         [("ok", 0, "ok"), ("violation", 3, "violation"), ("error", 3, "crash")])
def test_score_writes_the_verdict_with_the_nonce(fake, tmp_path, scripted, exit_code, accepted):
    from autoresearch.runner.phases.experiment import read_verdict

    handover = fake.open_handover("fake:cpu", 64, {})
    train(fake, tmp_path, candidate(tmp_path, {"seconds": 0.1, "bpb": 0.88, "score": scripted}), handover)
    result, verdict_dir, nonce = score(fake, tmp_path, handover, split="test")
    verdict = json.loads((verdict_dir / "verdict.json").read_text())
    assert (verdict["status"], verdict["nonce"], verdict["split"], result.exit_code) == (scripted, nonce, "test",
                                                                                        exit_code)
    accepted_verdict = read_verdict(verdict_dir, nonce, "test", result)
    assert accepted_verdict.status == accepted
    if scripted == "ok":
        assert accepted_verdict.bpb == 0.88
    handover.release()


def test_score_crash_leaves_no_verdict(fake, tmp_path):
    from autoresearch.runner.phases.experiment import read_verdict

    handover = fake.open_handover("fake:cpu", 64, {})
    train(fake, tmp_path, candidate(tmp_path, {"seconds": 0.1, "score": "crash", "score_seconds": 0.2}), handover)
    result, verdict_dir, nonce = score(fake, tmp_path, handover)
    assert result.exit_code == 1 and not (verdict_dir / "verdict.json").exists()
    assert 0.15 < result.run_seconds < 5
    verdict = read_verdict(verdict_dir, nonce, "val", result)
    assert verdict.status == "crash" and "no verdict" in verdict.reason
    handover.release()


def test_score_without_a_model_is_an_error_verdict(fake, tmp_path):
    handover = fake.open_handover("fake:cpu", 64, {})
    train(fake, tmp_path, candidate(tmp_path, {"seconds": 0.1, "handover": False}), handover)
    result, verdict_dir, _ = score(fake, tmp_path, handover)
    verdict = json.loads((verdict_dir / "verdict.json").read_text())
    assert (verdict["status"], result.exit_code) == ("error", 3)
    assert "model.graph" in verdict["reason"]
    handover.release()


def test_prepare_phase_writes_valid_data(fake, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    spec = PhaseSpec(image=fake.image("cpu"), command=["python3", "/task/prepare.py", "data", "--source", "offline",
                                                       "--out", "/data"],
                     mounts=[Mount(tmp_path / "prepare.py", "/task/prepare.py"), Mount(out, "/data", read_only=False)],
                     labels={PHASE_LABEL: "prepare"})
    assert fake.run(spec, tmp_path / "prepare.log").exit_code == 0
    for split in ("train", "val", "test"):
        files = split_files(out, split)
        assert all(path.exists() for path in files) and files[-1].name == f"{split}_000.bin"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["vocab_size"] == 4096


def test_run_experiment_end_to_end_on_the_fake(fake, tmp_path):
    """The runner's real experiment code (mounts, monitor, verdict checks) with the fake underneath."""
    from autoresearch.runner.check.policy import load_policy
    from autoresearch.runner.phases.experiment import run_experiment
    from autoresearch.runner.task_files import default_task_dir

    data = tmp_path / "data"
    data.mkdir()
    fake.run(PhaseSpec(image="fake:cpu", command=["python3", "/task/prepare.py", "data", "--out", "/data"],
                       mounts=[Mount(data, "/data", read_only=False)], labels={PHASE_LABEL: "prepare"}),
             tmp_path / "prepare.log")
    outcome = run_experiment(fake, image="fake:cpu", task_dir=default_task_dir(),
                             train_py=candidate(tmp_path, {"seconds": 0.3, "bpb": 0.97}), data=data,
                             work_dir=tmp_path / "exp", limits=load_policy().limits)
    assert (outcome.status, outcome.val_bpb) == ("ok", 0.97), outcome.reason
    assert len(outcome.progress) == 4 and outcome.reported["val_bpb"] == pytest.approx(0.97)


# ---- the engine


def test_engine_lost_raises_and_the_engine_stays_down(fake, fake_defaults, tmp_path):
    set_defaults(fake_defaults, engine_down_s=0.5)
    source = candidate(tmp_path, {"seconds": 0.4, "engine_lost": True})
    began = time.monotonic()
    with pytest.raises(SandboxUnavailable, match="went away"):
        train(fake, tmp_path, source)
    assert time.monotonic() - began < 3
    assert not fake.reachable()
    with pytest.raises(SandboxUnavailable):
        train(fake, tmp_path, candidate(tmp_path, {"seconds": 0.1}))
    time.sleep(0.6)
    assert fake.reachable()


def test_engine_lost_once_lets_the_retry_succeed(fake, tmp_path):
    source = candidate(tmp_path, {"seconds": 0.2, "engine_lost": "once"})
    with pytest.raises(SandboxUnavailable):
        train(fake, tmp_path, source)
    fake.recover()
    result, _ = train(fake, tmp_path, source)
    assert result.exit_code == 0


def test_engine_lost_during_scoring(fake, tmp_path):
    handover = fake.open_handover("fake:cpu", 64, {})
    train(fake, tmp_path, candidate(tmp_path, {"seconds": 0.1, "score": "engine_lost"}), handover)
    with pytest.raises(SandboxUnavailable):
        score(fake, tmp_path, handover)
    handover.release()


def test_engine_down_in_the_defaults(fake, fake_defaults):
    set_defaults(fake_defaults, engine_down=True)
    assert not fake.reachable()
    with pytest.raises(SandboxUnavailable):
        FakeSandbox.open()
    with pytest.raises(SandboxUnavailable):
        fake.open_handover("fake:cpu", 64, {})
    set_defaults(fake_defaults)
    assert fake.reachable()


# ---- orphans


def test_remove_orphans_ends_a_dead_runners_running_phase(fake, tmp_path):
    labels = {"autoresearch.test": uuid.uuid4().hex, RUNNER_PID_LABEL: DEAD_PID}
    results = []
    runner = threading.Thread(target=lambda: results.append(
        train(fake, tmp_path, candidate(tmp_path, {"seconds": 30}), labels=labels)[0]))
    runner.start()
    deadline = time.monotonic() + 10
    removed = []
    while not removed and time.monotonic() < deadline:
        removed = fake.remove_orphans({"autoresearch.test": labels["autoresearch.test"]}, lambda pid: False)
        time.sleep(0.05)
    runner.join(timeout=10)
    assert removed and removed[0].startswith("fake-phase-")
    assert results and results[0].exit_code == 137 and results[0].killed_by is None


def test_remove_orphans_keeps_a_live_runners_handover(fake):
    live = fake.open_handover("fake:cpu", 16, {RUNNER_PID_LABEL: str(os.getpid()), "autoresearch.test": "x"})
    assert fake.remove_orphans({"autoresearch.test": "x"}, lambda pid: pid == os.getpid()) == []
    assert live.path.exists()
    assert fake.remove_orphans({"autoresearch.test": "x"}, lambda pid: False) == [live.path.name]
    assert not live.path.exists()
    live.release()

"""The self-check suite every sandbox provider must pass (docker, process, fake), as inspect_ai checks each
SandboxEnvironment against one suite.

Each phase runs a small Python script as /task/train.py whose real code (what docker and process run)
and `# fake-sandbox:` directive (what the fake plays) describe the same behaviour, so one test serves all.
"""

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from autoresearch.runner.sandbox.base import (
    DEADLINE,
    PHASE_LABEL,
    RUNNER_PID_LABEL,
    Mount,
    PhaseResult,
    PhaseSpec,
    Sandbox,
    remove_labelled,
)
from autoresearch.runner.sandbox.monitor import SKIPPED, Monitor

TEST_LABEL = "autoresearch.test"  # keeps each test's phases and hand-overs apart from everything else
DEAD_PID = "999999999"  # above any pid_max: no runner has it

# A stand-in for task/prepare.py's evaluation (the real one needs torch and data): reads the hand-over's
# model.graph ({"bpb": ...}) and writes the verdict as the real scorer does. The fake plays prepare.py itself.
SCORER = '''
import json, os, sys
args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
with open(os.path.join(args["--handover"], "model.graph")) as f:
    model = json.load(f)
result = {"status": "ok", "bpb": float(model["bpb"]), "split": args["--split"],
          "nonce": os.environ["AUTORESEARCH_NONCE"]}
with open(os.path.join(args["--verdict"], "verdict.json"), "x") as f:
    json.dump(result, f)
print(json.dumps(result))
'''


@pytest.fixture
def labels() -> dict[str, str]:
    return {TEST_LABEL: uuid.uuid4().hex, RUNNER_PID_LABEL: str(os.getpid())}


def train_phase(sandbox: Sandbox, tmp_path: Path, code: str, directive: dict, labels: dict[str, str],
                mounts: tuple[Mount, ...] = (), deadline_s: float = 120.0) -> PhaseSpec:
    """A train phase running code as /task/train.py (the fake reads the directive instead)."""
    script = tmp_path / f"train-{uuid.uuid4().hex[:8]}.py"
    script.write_text(f"# fake-sandbox: {json.dumps(directive)}\n{code}")
    script.chmod(0o644)
    return PhaseSpec(image=sandbox.image("cpu"), command=["python3", "/task/train.py"],
                     mounts=[Mount(script, "/task/train.py"), *mounts],
                     environment={"AUTORESEARCH_HANDOVER": "/handover"},  # as task code finds it
                     labels={**labels, PHASE_LABEL: "train"}, deadline_s=deadline_s)


def run(sandbox: Sandbox, spec: PhaseSpec, tmp_path: Path, watch=None) -> tuple[PhaseResult, list[str], Path]:
    lines: list[str] = []
    log = tmp_path / f"phase-{uuid.uuid4().hex[:8]}.log"
    return sandbox.run(spec, log, lines.append, watch), lines, log


def watching(on_pid: Callable[[int], None] | None = None, **monitor_args) -> Callable:
    """A Watch: the real host Monitor on the phase's first process."""
    def watch(pid: int, kill: Callable[[str], None]) -> Monitor:
        if on_pid is not None:
            on_pid(pid)
        return Monitor(pid, None, kill, interval_s=0.1, **monitor_args).start()
    return watch


def test_opened_provider_answers(sandbox):
    assert sandbox.reachable()
    assert isinstance(sandbox.image("cpu"), str)
    assert sandbox.name in ("docker", "process", "fake")


def test_image_id_names_the_image_the_same_way_every_time(sandbox):
    image = sandbox.image("cpu")
    assert sandbox.image_id(image) == sandbox.image_id(image) and sandbox.image_id(image)


def test_exit_code_and_output_reach_on_line_and_the_log(sandbox, tmp_path, labels):
    spec = train_phase(sandbox, tmp_path, 'print("hello", flush=True)\nprint("world")\nraise SystemExit(3)\n',
                       {"seconds": 0.2, "lines": ["hello", "world"], "exit_code": 3}, labels)
    result, lines, log = run(sandbox, spec, tmp_path)
    assert (result.exit_code, result.killed_by, result.timed_out, result.oom_killed) == (3, None, False, False)
    assert [line for line in lines if line in ("hello", "world")] == ["hello", "world"]
    assert "hello\nworld\n" in log.read_text()
    assert "hello\nworld\n" in result.log_tail and "hello" in result.log_head
    assert result.log_bytes >= len("hello\nworld\n") and result.log_dropped_bytes == 0
    assert result.run_seconds >= 0 and result.start_seconds >= 0


def test_clean_exit_is_zero(sandbox, tmp_path, labels):
    spec = train_phase(sandbox, tmp_path, 'print("done")\n', {"seconds": 0.1, "lines": ["done"]}, labels)
    result, lines, _ = run(sandbox, spec, tmp_path)
    assert result.exit_code == 0 and result.killed_by is None
    assert "done" in lines


def test_deadline_kills_the_phase(sandbox, tmp_path, labels):
    spec = train_phase(sandbox, tmp_path, 'import time\nprint("started", flush=True)\ntime.sleep(120)\n',
                       {"seconds": 120, "lines": [[0, "started"]]}, labels, deadline_s=2.0)
    began = time.monotonic()
    result, lines, _ = run(sandbox, spec, tmp_path)
    assert result.killed_by == DEADLINE and result.timed_out
    assert result.exit_code is None
    assert time.monotonic() - began < 30
    assert "started" in lines


def test_watch_gets_the_pid_and_its_kill_ends_the_phase(sandbox, tmp_path, labels):
    pids: list[int] = []
    skip = threading.Event()
    skip.set()  # the user skipped it: the monitor kills at its first sample
    spec = train_phase(sandbox, tmp_path, 'import time\ntime.sleep(120)\n', {"seconds": 120, "lines": []}, labels)
    began = time.monotonic()
    result, _, _ = run(sandbox, spec, tmp_path, watching(pids.append, cancel=skip))
    assert pids and pids[0] > 0
    assert result.killed_by == SKIPPED and not result.timed_out
    assert result.exit_code != 0
    assert result.usage is not None
    assert time.monotonic() - began < 30


def test_monitor_memory_cap_kills_the_phase(sandbox, tmp_path, labels):
    code = 'import time\nheld = b"\\1" * (200 * 2**20)\nprint("allocated", flush=True)\ntime.sleep(120)\n'
    spec = train_phase(sandbox, tmp_path, code, {"seconds": 120, "memory_mb": 200, "lines": []}, labels)
    result, _, _ = run(sandbox, spec, tmp_path, watching(mem_cap_mb=100))
    assert result.killed_by == "memory_cap"
    assert result.usage is not None and result.usage.limit_hit == "memory_cap"
    assert result.usage.peak_mem_mb > 100


def test_handover_written_by_one_phase_is_read_by_the_next(sandbox, tmp_path, labels):
    handover = sandbox.open_handover(sandbox.image("cpu"), 64, labels)
    try:
        code = ('import json, os\nfolder = os.environ["AUTORESEARCH_HANDOVER"]\n'
                'with open(os.path.join(folder, "model.graph"), "w") as f:\n    json.dump({"bpb": 1.25}, f)\n')
        spec = train_phase(sandbox, tmp_path, code, {"seconds": 0.1, "bpb": 1.25, "lines": []}, labels,
                           mounts=(handover.mount("/handover", read_only=False),))
        trained, _, _ = run(sandbox, spec, tmp_path)
        assert trained.exit_code == 0, trained.log_tail

        scorer = tmp_path / "prepare.py"
        scorer.write_text(SCORER)
        scorer.chmod(0o644)
        verdict_dir = tmp_path / "verdict"
        verdict_dir.mkdir()
        verdict_dir.chmod(0o777)  # the phase's user may not be ours
        nonce = uuid.uuid4().hex
        score = PhaseSpec(
            image=sandbox.image("cpu"),
            command=["python3", "-I", "/task/prepare.py", "evaluate", "--handover", "/handover", "--data", "/data",
                     "--split", "val", "--verdict", "/verdict"],
            mounts=[Mount(scorer, "/task/prepare.py"), handover.mount(),
                    Mount(verdict_dir, "/verdict", read_only=False)],
            environment={"AUTORESEARCH_NONCE": nonce}, labels={**labels, PHASE_LABEL: "score-val"}, deadline_s=120)
        scored, _, _ = run(sandbox, score, tmp_path)
        assert scored.exit_code == 0, scored.log_tail
        verdict = json.loads((verdict_dir / "verdict.json").read_text())
        assert (verdict["status"], verdict["bpb"], verdict["split"], verdict["nonce"]) == ("ok", 1.25, "val", nonce)
    finally:
        handover.release()
        handover.release()  # safe twice


def test_remove_orphans_removes_only_dead_runners_leftovers_with_the_labels(sandbox, labels):
    image = sandbox.image("cpu")
    mine = {TEST_LABEL: labels[TEST_LABEL]}
    others = {TEST_LABEL: uuid.uuid4().hex}
    alive = {labels[RUNNER_PID_LABEL]}
    opened = [sandbox.open_handover(image, 16, {**mine, RUNNER_PID_LABEL: DEAD_PID}),
              sandbox.open_handover(image, 16, {**mine, RUNNER_PID_LABEL: labels[RUNNER_PID_LABEL]}),
              sandbox.open_handover(image, 16, {**others, RUNNER_PID_LABEL: DEAD_PID})]
    try:
        assert sandbox.remove_orphans(mine, lambda pid: str(pid) in alive)  # the dead runner's
        assert sandbox.remove_orphans(mine, lambda pid: str(pid) in alive) == []  # gone; the live one's stays
        assert sandbox.remove_orphans(mine, lambda pid: False)  # the live runner's, once it counts as dead
        assert sandbox.remove_orphans(others, lambda pid: True) == []  # another's leftovers, runner alive
        assert remove_labelled(sandbox, others)  # left alone until now
        assert remove_labelled(sandbox, mine) == remove_labelled(sandbox, others) == []
    finally:
        for handover in opened:
            handover.release()

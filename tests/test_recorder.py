"""One recorder owns each experiment row: every create and update goes through runner/record/recorder.py."""

import ast
from pathlib import Path

import autoresearch.runner as runner_package
from autoresearch.runner.check.findings import Finding
from autoresearch.runner.record import store
from autoresearch.runner.record.recorder import ExperimentRecorder
from autoresearch.runner.record.status import INTERRUPTED, Status

ROW_WRITERS = {"create_experiment", "update_experiment"}
OWNERS = {"record/store.py", "record/recorder.py"}


def test_no_module_but_the_recorder_writes_experiment_rows():
    root = Path(runner_package.__file__).parent
    writers = set()
    for path in root.rglob("*.py"):
        name = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ROW_WRITERS and name not in OWNERS:
                writers.add(f"{name}:{node.lineno}")
    assert not writers, f"experiment rows written outside the recorder: {sorted(writers)}"


def test_a_row_from_start_to_judgement(tmp_path):
    conn = store.open_store(tmp_path / "store.db")
    recorder = ExperimentRecorder(conn)
    finding = Finding("static.size", "info", "flag", "large", {})
    exp_id = recorder.started([finding], run_id=None, seq=1, description="try", train_py_sha256="0" * 64)
    assert store.get_experiment(conn, exp_id).status == Status.RUNNING
    recorder.ended(exp_id, Status.OK, [], exit_reason="finished and scored", val_bpb=1.5)
    recorder.judged(exp_id, Status.KEEP, test_bpb=1.6)
    row = store.get_experiment(conn, exp_id)
    assert (row.status, row.val_bpb, row.test_bpb) == (Status.KEEP, 1.5, 1.6)
    assert row.ended_at is not None
    assert [f.finding.rule_id for f in store.list_findings(conn, exp_id)] == ["static.size"]


def test_blocked_and_interrupted_rows_are_closed(tmp_path):
    conn = store.open_store(tmp_path / "store.db")
    recorder = ExperimentRecorder(conn)
    blocked = recorder.blocked("blocked by policy before running", [], run_id=None, seq=1, description="x")
    running = recorder.started([], run_id=None, seq=2, description="y")
    recorder.interrupted(running, f"{INTERRUPTED} the runner stopped during this experiment")
    rows = {e.id: e for e in store.list_experiments(conn)}
    assert rows[blocked].status == Status.BLOCKED and rows[blocked].ended_at is not None
    assert rows[running].status == Status.KILLED and rows[running].exit_reason.startswith(INTERRUPTED)

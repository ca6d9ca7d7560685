"""The loop with a coding-agent CLI (claude-code's machinery: the real agent image, entry script and gateway, with a
shell script standing in for the CLI; tests/clis runs the real one) on the fake sandbox: a proposal becomes an
experiment with its model calls and notes, a confinement violation is recorded with its evidence and never run,
and the dollar cap ends the run."""

import json
import sqlite3

import pytest

from autoresearch.runner.agents.cli_agent import ClaudeCodeAgent
from autoresearch.runner.record import store
from autoresearch.runner.record.status import RunState, Status
from tests.agents.fake_api import FakeAPI, streamed
from tests.fake_workspace import FakeWorkspace
from tests.security.test_hostile_agent import REAL_KEY, call

EDIT = "echo '# a comment the agent added' >> train.py; echo 'add a comment' > description.txt; " \
       "echo 'comments do nothing' > notes.md\n"


@pytest.fixture
def upstream():
    server = FakeAPI([streamed({"type": "text", "text": "ok"}, input_tokens=100_000, output_tokens=10_000)] * 50)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cli_workspace(claude_code_image, upstream, tmp_path, monkeypatch):
    def make(script: str, *, max_usd: float | None = None, max_experiments: int = 2) -> FakeWorkspace:
        fw = FakeWorkspace.make(tmp_path, monkeypatch)
        config = (fw.root / "autoresearch.toml").read_text()
        config = config.replace('name = "replay"', f'name = "claude-code"\nbase_url = "{upstream.base_url}"')
        config = config.replace("max_usd = false", f"max_usd = {max_usd if max_usd is not None else 'false'}\n"
                                f"max_experiments = {max_experiments}")
        (fw.root / "autoresearch.toml").write_text(config)
        monkeypatch.setenv("ANTHROPIC_API_KEY", REAL_KEY)
        monkeypatch.setattr(ClaudeCodeAgent, "argv", lambda self: ["sh", "-c", script])
        return fw

    return make


def test_a_cli_proposal_becomes_an_experiment_with_its_calls_and_notes(cli_workspace, upstream):
    fw = cli_workspace(call() + EDIT, max_experiments=2)
    assert fw.loop() == 0
    candidate = next(e for e in fw.experiments() if e.description == "add a comment")
    assert candidate.status in (Status.KEEP, Status.DISCARD) and candidate.commit_sha
    conn = sqlite3.connect(fw.store_path)
    turns = conn.execute("SELECT experiment_id, input_tokens, cost_usd FROM agent_turns").fetchall()
    assert (candidate.id, 100_000, pytest.approx(0.45)) in turns  # 100k in at $3, 10k out at $15
    assert fw.read(lambda c: store.latest_notes(c, fw.run_row().id)) == "comments do nothing\n"
    assert all(REAL_KEY not in json.dumps(row) for row in conn.execute("SELECT * FROM agent_turns"))
    assert upstream.requests[0].headers["x-api-key"] == REAL_KEY


def test_a_confinement_violation_is_recorded_with_evidence_and_never_run(cli_workspace, monkeypatch):
    from autoresearch.runner import loop as loop_module

    monkeypatch.setattr(loop_module, "MAX_BLOCKED_IN_A_ROW", 2)
    fw = cli_workspace("echo 'LR = 1' > train.py; chmod 000 train.py", max_experiments=5)
    assert fw.loop() == 2
    violations = [e for e in fw.experiments() if e.status == Status.VIOLATION]
    assert len(violations) == 2 and all(e.commit_sha is None and e.train_py_sha256 is None for e in violations)
    findings = fw.read(lambda c: store.list_findings(c, violations[0].id))
    finding = findings[0].finding
    assert finding.rule_id == "agent.confinement" and finding.evidence["removed"] == ["train.py"]
    run = fw.run_row()
    assert run.state == RunState.STOPPED and "broke the agent's confinement" in run.note


def test_the_dollar_cap_ends_the_run(cli_workspace, upstream):
    fw = cli_workspace(call() + call() + EDIT, max_usd=0.5, max_experiments=5)
    fw.loop()
    run = fw.run_row()
    assert "cap" in run.note and len(upstream.requests) == 2  # $0.45 each: the third call would pass the cap
    spent = fw.read(lambda c: store.spent_usd(c, run.id))
    assert spent == pytest.approx(0.9)

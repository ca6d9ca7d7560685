"""Bad input for the coding-agent CLIs, on the real agent image, entry script and gateway, with a shell script
standing in for the CLI (tests/clis runs the real ones): what no retry can help stops the run in one line, the
rest is a failed proposal the loop retries, and nothing is ever half-applied."""

import threading
import time

import pytest

from autoresearch.runner.agents.base import AgentError, AgentFatal, AgentHost, AgentSettings
from autoresearch.runner.agents.gateway import Upstream
from autoresearch.runner.agents.workdir import NoChange
from tests.agents.conftest import TurnLog
from tests.agents.fake_api import FakeAPI, Reply, error_body, streamed
from tests.security.test_hostile_agent import EDIT, REAL_KEY, ScriptedCli, call, context


@pytest.fixture
def make(claude_code_image, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", REAL_KEY)
    made = []

    def make_agent(script: list, **settings):
        upstream = FakeAPI(script, unix_socket=tmp_path / f"up{len(made)}.sock").start()
        agent = ScriptedCli(AgentSettings(name="claude-code", cli_timeout_s=60, **settings), TurnLog(),
                            AgentHost(tmp_path, labels={"autoresearch.test": "cli-agent"}))
        agent.upstream = Upstream("http://localhost", "anthropic", REAL_KEY, unix_socket=upstream.unix_socket)
        made.append((agent, upstream))
        return agent, upstream

    yield make_agent
    for agent, upstream in made:
        agent.close()
        upstream.stop()


@pytest.mark.parametrize(("reply", "message"), [
    (Reply(401, error_body("authentication_error", "invalid x-api-key")), "refused the key"),
    (Reply(403, error_body("permission_error", "no access")), "lacks permission"),
    (Reply(404, error_body("not_found_error", "model: claude-nope")), "check \\[agent\\] model"),
    (Reply(400, error_body("invalid_request_error", "Your credit balance is too low")), "refused to bill"),
])
def test_what_no_retry_can_help_is_fatal(make, tmp_path, reply, message):
    agent, _ = make([reply])
    agent.script = call() + EDIT
    with pytest.raises(AgentFatal, match=message):
        agent.propose(context(tmp_path))


def test_an_upstream_outage_is_a_failed_proposal_to_retry(make, tmp_path):
    agent, _ = make([Reply(529, error_body("overloaded_error", "overloaded"))])
    agent.script = call() + "exit 1"
    with pytest.raises(AgentError, match="exited 1") as caught:
        agent.propose(context(tmp_path))
    assert not isinstance(caught.value, AgentFatal)


def test_a_missing_cli_binary_is_fatal_with_the_fix(make, tmp_path):
    agent, _ = make([])
    agent.script = "exec no-such-cli --version"
    with pytest.raises(AgentFatal, match="autoresearch image --agent claude-code --force"):
        agent.propose(context(tmp_path))


def test_a_missing_image_is_fatal_at_preflight_with_the_fix(make):
    agent, _ = make([])
    agent.image = "autoresearch-agent-claude-code:0.0.0-missing"
    with pytest.raises(AgentFatal, match="autoresearch image --agent claude-code"):
        agent.preflight()


def test_a_gateway_that_dies_mid_proposal_fails_that_proposal_only(make, tmp_path):
    agent, _ = make([streamed({"type": "text", "text": "ok"})] * 5)
    agent.script = "sleep 2; " + call() + EDIT  # the call comes after the gateway died
    killer = threading.Timer(1.0, lambda: agent._gateway.close())
    killer.start()
    with pytest.raises(AgentError, match="gateway stopped during the proposal"):
        agent.propose(context(tmp_path))
    assert "gateway said" not in agent.last_run.output  # the CLI's call found no gateway
    agent.script = call() + EDIT
    began = time.monotonic()
    proposal = agent.propose(context(tmp_path))  # a new gateway for the next proposal
    assert proposal.train_py == "LR = 0.04\n" and len(proposal.turn_ids) == 1 and time.monotonic() - began < 30


def test_a_cli_that_ends_in_error_leaves_no_proposal_even_with_a_valid_train_py(make, tmp_path):
    agent, _ = make([])
    agent.script = EDIT + "exit 3"  # e.g. Claude Code at its turn limit: its edit may be half an idea
    with pytest.raises(AgentError, match=r"exited 3, so its train\.py is discarded"):
        agent.propose(context(tmp_path))


def test_no_proposal_is_half_applied(make, tmp_path):
    agent, _ = make([])
    agent.script = "echo 'LR = 0.04' > train.py; echo 'half' > description.txt; echo 'def (' >> train.py"
    with pytest.raises(NoChange, match="does not parse"):
        agent.propose(context(tmp_path))

"""A hostile coding agent in its agent container: each attack, written as the agent would run it, and its precise
outcome. The "CLI" here is a shell script run by the claude-code agent's own machinery (the real agent image,
the real entry script, the real gateway and the real judging of /work); `make clis` drives the real CLIs with
hostile scripted models too (tests/clis). The container is the boundary; nothing here relies on a CLI's
permission flags.
"""

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from autoresearch.runner.agents.base import (
    AgentError,
    AgentFatal,
    AgentHost,
    AgentSettings,
    AgentViolation,
    ProposalContext,
)
from autoresearch.runner.agents.cli_agent import ClaudeCodeAgent
from autoresearch.runner.agents.gateway import PLACEHOLDER_KEY, Upstream
from autoresearch.runner.agents.workdir import NoChange
from autoresearch.runner.sandbox.base import LABEL
from tests.agents.conftest import TurnLog
from tests.agents.fake_api import FakeAPI, Reply, message_events

REAL_KEY = "sk-ant-REAL-key-never-in-a-container-0123456789"
CALL = """python3 - <<'PY'
import json, socket
s = socket.socket(socket.AF_UNIX)
s.connect("/run/gateway/gateway.sock")
body = json.dumps({"model": "claude-fake", "max_tokens": 16, "stream": True,
                   "messages": [{"role": "user", "content": "hi"}]})
s.sendall((f"POST {PATH} HTTP/1.1\\r\\nHost: localhost\\r\\nx-api-key: {KEY}\\r\\n"
           f"content-type: application/json\\r\\ncontent-length: {len(body)}\\r\\nconnection: close\\r\\n\\r\\n"
           + body).encode())
print("gateway said:", s.recv(4096).decode(errors="replace").split("\\r\\n")[0])
PY
"""


class ScriptedCli(ClaudeCodeAgent):
    """The claude-code agent with a shell script standing in for the CLI."""

    script = ""

    def argv(self) -> list[str]:
        return ["sh", "-c", self.script]


def call(path: str = "/v1/messages", key: str = PLACEHOLDER_KEY) -> str:
    return CALL.replace("{PATH}", path).replace("{KEY}", key)


def streamed(text: str = "ok") -> Reply:
    return Reply(200, message_events([{"type": "text", "text": text}], stop_reason="end_turn"))


@pytest.fixture
def upstream(tmp_path_factory) -> Iterator[FakeAPI]:
    socket_dir = tmp_path_factory.mktemp("up")
    server = FakeAPI([streamed() for _ in range(10)], unix_socket=socket_dir / "api.sock").start()
    yield server
    server.stop()


@pytest.fixture
def agent(claude_code_image, upstream, tmp_path, monkeypatch) -> Iterator[ScriptedCli]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", REAL_KEY)
    made = ScriptedCli(AgentSettings(name="claude-code", cli_timeout_s=60), TurnLog(),
                       AgentHost(tmp_path, labels={"autoresearch.test": "hostile-agent"}))
    made.upstream = Upstream("http://localhost", "anthropic", REAL_KEY, unix_socket=upstream.unix_socket)
    yield made
    made.close()


def context(tmp_path: Path) -> ProposalContext:
    return ProposalContext(program_md="# program\n", prepare_py="TIME_BUDGET = 300\n", train_py="LR = 0.02\n",
                           history=[], last_failure=None, best_val_bpb=None)


def propose(agent: ScriptedCli, script: str, tmp_path: Path):
    agent.script = script
    return agent.propose(context(tmp_path))


EDIT = "echo 'LR = 0.04' > train.py; echo 'raise LR' > description.txt\n"


def test_the_agent_cannot_change_the_read_only_task_files(agent, tmp_path):
    proposal = propose(agent, "echo 'TIME_BUDGET = 9999' > prepare.py; chmod 666 prepare.py; mv prepare.py p.py;"
                              " rm -f program.md; cp train.py prepare.py;" + EDIT, tmp_path)
    assert (proposal.train_py, proposal.description) == ("LR = 0.04\n", "raise LR")
    assert agent.last_run.output.count("Permission denied") >= 4  # every write to the folder was refused


def test_train_py_cannot_become_a_link_or_be_replaced(agent, tmp_path):
    with pytest.raises(NoChange, match="without changing"):
        propose(agent, "rm -f train.py; ln -sf /etc/passwd train.py; mv /tmp/x train.py; "
                       "ln -s /run/gateway/gateway.sock /work/t.py; true", tmp_path)
    assert "Permission denied" in agent.last_run.output


def test_an_unreadable_train_py_is_a_violation_with_evidence(agent, tmp_path):
    with pytest.raises(AgentViolation) as caught:
        propose(agent, "echo 'LR = 1' > train.py; chmod 000 train.py", tmp_path)
    assert caught.value.finding.evidence["removed"] == ["train.py"]


def test_no_data_store_or_git_is_in_the_container(agent, tmp_path):
    with pytest.raises(NoChange):
        propose(agent, "cat /proc/mounts; find / -xdev \\( -name '*.bin' -o -name '*.sqlite*' -o -name '.git' "
                       "-o -name 'autoresearch.toml' -o -name 'tokenizer*' \\) 2>/dev/null; echo find-done", tmp_path)
    output = agent.last_run.output
    targets = {line.split()[1] for line in output.splitlines() if line.startswith(("tmpfs", "/dev", "overlay"))}
    assert {"/in", "/run/gateway", "/work"} <= targets and not any("data" in t or "store" in t for t in targets)
    found = output.split("find-done")[0].splitlines()
    assert [line for line in found if line.startswith("/") and not line.startswith(("/work/", "/in/task/"))
            and " " not in line] == []


def test_no_network_but_loopback(agent, tmp_path):
    script = ("cat /proc/net/dev | tail -n +3 | cut -d: -f1; python3 -c \"import socket\n"
              "for host in ('1.1.1.1', '172.17.0.1'):\n"
              "    try: socket.create_connection((host, 443), timeout=2)\n"
              "    except OSError as e: print(host, e.strerror)\n"
              "try: socket.getaddrinfo('api.anthropic.com', 443)\n"
              "except OSError as e: print('dns', type(e).__name__)\"")
    with pytest.raises(NoChange):
        propose(agent, script, tmp_path)
    output = agent.last_run.output
    assert output.split()[0] == "lo" and "1.1.1.1 Network is unreachable" in output
    assert "172.17.0.1 Network is unreachable" in output and "dns gaierror" in output


def test_the_key_never_enters_the_container(agent, upstream, tmp_path):
    proposal = propose(agent, "env > notes.md; cat /proc/*/environ >> notes.md 2>/dev/null; " + call() + EDIT,
                       tmp_path)
    assert "gateway said: HTTP/1.1 200" in agent.last_run.output
    assert PLACEHOLDER_KEY in proposal.notes and REAL_KEY not in proposal.notes
    assert upstream.requests[0].headers["x-api-key"] == REAL_KEY  # the gateway swapped it in, outside
    rows = json.dumps(agent._log_turn.rows)
    assert REAL_KEY not in rows and REAL_KEY not in agent.last_run.output and len(proposal.turn_ids) == 1


def test_the_gateway_refuses_a_wrong_key_and_other_paths(agent, upstream, tmp_path):
    with pytest.raises(NoChange):
        propose(agent, call(key="sk-ant-guess") + call(path="/v1/models") + call(path="/admin"), tmp_path)
    said = [line for line in agent.last_run.output.splitlines() if line.startswith("gateway said")]
    assert said == ["gateway said: HTTP/1.1 401 Unauthorized", "gateway said: HTTP/1.1 404 Not Found",
                    "gateway said: HTTP/1.1 404 Not Found"], said
    assert upstream.requests == [] and len(agent._gateway.refusals) == 3


def test_spending_past_the_dollar_cap_stops_the_run(agent, upstream, tmp_path):
    agent._host = AgentHost(tmp_path, dollars_left=lambda: 0.0, labels=agent._host.labels)
    with pytest.raises(AgentFatal, match="dollar cap"):
        propose(agent, call() + call() + EDIT, tmp_path)
    assert upstream.requests == []


def test_a_background_process_cannot_change_train_py_after_the_cli_ends(agent, tmp_path):
    proposal = propose(agent, "(sleep 1; echo 'LR = 666' > train.py) & " + EDIT, tmp_path)
    assert proposal.train_py == "LR = 0.04\n"


def test_a_cli_past_its_deadline_is_stopped_and_its_container_removed(agent, tmp_path):
    agent._settings = AgentSettings(name="claude-code", cli_timeout_s=2)
    with pytest.raises(AgentError, match="ran past its 2 s"):
        propose(agent, "sleep 60", tmp_path)
    client = docker.from_env()
    left = client.containers.list(all=True, filters={"label": [LABEL, "autoresearch.test=hostile-agent"]})
    client.close()
    assert left == []


def test_escalation_is_refused(agent, tmp_path):
    with pytest.raises(NoChange):
        propose(agent, "kill -9 1 2>&1; su -c id root 2>&1 </dev/null; cat /proc/1/environ 2>&1; "
                       f"python3 -c {shlex.quote('import os; os.setuid(0)')} 2>&1 | tail -1; id -u", tmp_path)
    output = agent.last_run.output
    assert "Operation not permitted" in output and output.strip().endswith("1000")

"""`autoresearch agents [--json]`: every agent, whether it is ready here, and the fix when not; the doctor's agent
check says the same for the configured one."""

import json
import os
import subprocess
import sys
from pathlib import Path

from autoresearch.runner.agents import REGISTRY

KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")


def agents(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in KEYS}
    return subprocess.run([sys.executable, "-m", "autoresearch.runner.cli", "agents", *args], cwd=cwd, text=True,
                          capture_output=True, env={**clean, **env}, timeout=120, check=False)


def by_name(done: subprocess.CompletedProcess) -> dict[str, dict]:
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)}


def test_without_keys_or_docker_every_agent_says_what_it_lacks_and_the_fix(tmp_path):
    rows = by_name(agents(tmp_path, "--json", DOCKER_HOST=f"unix://{tmp_path}/no.sock"))
    assert list(rows) == list(REGISTRY)
    assert rows["sweep"]["ready"] and rows["sweep"]["fix"] is None
    assert not rows["claude"]["ready"] and rows["claude"]["fix"].startswith("export ANTHROPIC_API_KEY=...")
    assert not rows["openai"]["ready"] and "base_url" in rows["openai"]["fix"]
    assert "CLAUDE_CODE_OAUTH_TOKEN" in rows["claude-code"]["fix"]
    docker = {c["check"]: c for c in rows["codex"]["checks"]}["docker"]
    assert docker == {"check": "docker", "ok": False, "detail": "the Docker engine does not answer"}
    assert not rows["replay"]["ready"] and "replay_file" in rows["replay"]["fix"]


def test_the_table_gives_one_line_per_agent_and_the_fix_under_it(tmp_path):
    done = agents(tmp_path, ANTHROPIC_API_KEY="sk-test", DOCKER_HOST=f"unix://{tmp_path}/no.sock")
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["agent", "kind", "ready", "detail"]
    claude = next(line for line in lines if line.startswith("claude "))
    assert claude.split()[:3] == ["claude", "api", "yes"]
    code = lines.index(next(line for line in lines if line.startswith("claude-code ")))
    assert "no" in lines[code].split()[:3] and lines[code + 1].strip() == "fix: start dockerd (or set DOCKER_HOST)"


def test_a_subscription_token_or_a_local_server_stands_in_for_a_key(tmp_path):
    subprocess.run([sys.executable, "-m", "autoresearch.runner.cli", "init", str(tmp_path / "ws")], check=True,
                   capture_output=True, timeout=120)
    ws = tmp_path / "ws"
    (ws / "autoresearch.toml").write_text('[agent]\nname = "openai"\nbase_url = "http://127.0.0.1:8000/v1"\n')
    rows = by_name(agents(ws, "--json", CLAUDE_CODE_OAUTH_TOKEN="sk-ant-oat01-x"))
    assert rows["openai"]["ready"], rows["openai"]
    key = {c["check"]: c for c in rows["claude-code"]["checks"]}["key"]
    assert key["ok"] and "subscription" in key["detail"]


def test_a_built_agent_image_makes_its_cli_agent_ready(claude_code_image, tmp_path):
    rows = by_name(agents(tmp_path, "--json", ANTHROPIC_API_KEY="sk-test"))
    assert rows["claude-code"]["ready"], rows["claude-code"]
    image = {c["check"]: c for c in rows["claude-code"]["checks"]}["image"]
    assert image["detail"] == f"{claude_code_image} is built"

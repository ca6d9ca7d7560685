"""The import boundaries hold: the import-linter contracts of pyproject.toml, and what a cold start loads.

lint-imports checks the static graph (every import statement, lazy ones in functions included); the
sys.modules tests check what a fresh interpreter actually loads for the TUI and for a read-only command,
so a heavy SDK (docker-py, requests, anthropic, torch) or matplotlib never creeps back into their start-up time.
"""

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("docker", "requests", "anthropic", "openai", "httpx2", "torch", "matplotlib")

# Prints the heavy top-level packages in sys.modules after the code before it ran, as one JSON list.
REPORT = f"import json, sys; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"


def loaded_after(code: str, cwd: Path) -> list[str]:
    """The heavy packages a fresh interpreter has loaded after running code in cwd."""
    done = subprocess.run([sys.executable, "-c", f"{code}\n{REPORT}"], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_lint_imports_keeps_every_contract():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    command = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout
    assert len(contracts) >= 4  # the TUI apart, and no SDK in the settings, the store, the TUI or the engine core


def test_the_tui_starts_without_the_heavy_sdks(tmp_path):
    assert loaded_after("import autoresearch.tui.app", tmp_path) == []


def test_the_settings_and_the_agent_registry_load_no_heavy_sdk(tmp_path):
    code = "import autoresearch.runner.config, autoresearch.runner.agents, autoresearch.runner.workspace"
    assert loaded_after(code, tmp_path) == []


def test_importing_the_cli_and_its_parser_loads_no_heavy_sdk(tmp_path):
    assert loaded_after("from autoresearch.runner.cli import build_parser\nbuild_parser()", tmp_path) == []


@pytest.mark.parametrize("command", ["status", "leaderboard", "results", "audit"])
def test_a_read_only_command_loads_no_heavy_sdk(tmp_path, command):
    """The command runs for real in a workspace that has not run yet: every import on its path happens,
    then it stops with a one-line error (or, for audit, reports nothing recorded)."""
    (tmp_path / "autoresearch.toml").write_text("")
    code = f"from autoresearch.runner.cli import main\nmain([{command!r}])"
    assert loaded_after(code, tmp_path) == []

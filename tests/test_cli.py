"""The command line as a user meets it: bad input gets one line and a non-zero exit, never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch.runner.record import store


def autoresearch(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autoresearch.runner.cli", *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=600,
    )


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache, so the scratch workspace (and its store) is this test's own."""
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_try_a_missing_file(tmp_path, cache):
    line = one_line_error(autoresearch("try", "nope.py", cwd=tmp_path))
    assert line.startswith("autoresearch: cannot read nope.py")


def test_try_with_a_policy_of_an_unknown_key(tmp_path, cache):
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "bad.toml").write_text('extends = "default"\n[limits]\ntime_budget = 10\n')
    line = one_line_error(autoresearch("try", "train.py", "--policy", "bad.toml", cwd=tmp_path))
    assert "bad.toml" in line and "time_budget" in line
    assert not (cache / "scratch" / ".autoresearch" / "store.db").exists()  # nothing recorded


def test_try_with_a_policy_of_a_wrong_type(tmp_path, cache):
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "bad.toml").write_text('extends = "default"\n[limits]\npids_limit = "many"\n')
    line = one_line_error(autoresearch("try", "train.py", "--policy", "bad.toml", cwd=tmp_path))
    assert "bad.toml" in line and "pids_limit" in line


def test_try_without_a_docker_engine_records_nothing(tmp_path, cache):
    (tmp_path / "train.py").write_text("print('hi')\n")
    done = autoresearch("try", "train.py", cwd=tmp_path, env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert one_line_error(done).startswith("autoresearch: no Docker engine is reachable")
    assert not (cache / "scratch" / ".autoresearch" / "store.db").exists()


def test_image_without_a_docker_engine(tmp_path, cache):
    done = autoresearch("image", "--flavor", "cpu", cwd=tmp_path, env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert "no Docker engine is reachable" in one_line_error(done)


def test_try_a_bad_budget(tmp_path, cache):
    (tmp_path / "train.py").write_text("print('hi')\n")
    assert "--budget must be positive" in one_line_error(autoresearch("try", "train.py", "--budget", "0", cwd=tmp_path))


@pytest.mark.parametrize("content", [b"", b"def (:\n", b"x = 1\n" * 50_000], ids=["empty", "not-python", "huge"])
def test_try_a_bad_candidate_is_blocked_recorded_and_audited(tmp_path, cache, content):
    (tmp_path / "train.py").write_bytes(content)
    done = autoresearch("try", "train.py", "--json", cwd=tmp_path)
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["status"] == "blocked" and result["findings"]
    conn = store.open_store(cache / "scratch" / ".autoresearch" / "store.db", readonly=True)
    assert [e.status for e in store.list_experiments(conn)] == ["blocked"]
    conn.close()
    audit = json.loads(autoresearch("audit", "--json", cwd=tmp_path).stdout)
    assert audit and audit[0]["rule_id"] == result["findings"][0]["rule_id"]


def test_audit_with_nothing_recorded(tmp_path, cache):
    done = autoresearch("audit", cwd=tmp_path)
    assert done.returncode == 0 and "no experiments recorded yet" in done.stdout
    assert json.loads(autoresearch("audit", "--json", cwd=tmp_path).stdout) == []


@pytest.mark.docker
def test_try_runs_a_candidate_end_to_end_and_prints_json(tmp_path, cache, cpu_image):
    candidate = tmp_path / "train.py"
    candidate.write_text((Path(__file__).parent / "security" / "uniform_export.py").read_text())
    done = autoresearch("try", str(candidate), "--budget", "5", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["status"] == "ok" and result["val_bpb"] > 3.0  # the uniform model
    assert result["monitor"].startswith("no GPU assigned")
    assert Path(result["log_path"]).is_file()
    human = autoresearch("audit", cwd=tmp_path)
    assert human.returncode == 0


def new_workspace(tmp_path: Path, config: str) -> Path:
    root = tmp_path / "ws"
    assert autoresearch("init", str(root), cwd=tmp_path).returncode == 0
    (root / "autoresearch.toml").write_text(config)
    return root


def test_run_with_an_unknown_sandbox_provider_says_which_are_known(tmp_path, cache):
    root = new_workspace(tmp_path, '[sandbox]\nprovider = "podman"\n')
    line = one_line_error(autoresearch("run", "--max-experiments", "1", cwd=root))
    assert "[sandbox] provider must be one of docker, process" in line and "line 2" in line
    assert not (root / ".autoresearch" / "store.db").exists()


def test_an_unknown_sandbox_flag_is_refused_by_the_parser(tmp_path, cache):
    (tmp_path / "train.py").write_text("print('hi')\n")
    done = autoresearch("try", "train.py", "--sandbox", "podman", cwd=tmp_path)
    assert done.returncode == 2 and "invalid choice: 'podman'" in done.stderr
    assert not (cache / "scratch" / ".autoresearch" / "store.db").exists()


def test_the_process_provider_is_refused_where_docker_answers_unless_asked_on_the_command_line(
        tmp_path, cache, docker_client):
    root = new_workspace(tmp_path, '[sandbox]\nprovider = "process"\n[agent]\nname = "sweep"\n')
    line = one_line_error(autoresearch("run", "--max-experiments", "1", cwd=root))
    assert "without isolation" in line and "--sandbox process" in line
    assert not (root / ".autoresearch" / "store.db").exists()  # refused before the run was recorded

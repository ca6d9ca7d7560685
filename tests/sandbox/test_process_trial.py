"""`autoresearch try --sandbox process`: the bundled train.py trained and scored for real without Docker."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch.runner.record import store
from autoresearch.runner.task_files import default_task_dir

pytestmark = pytest.mark.slow


def autoresearch(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AUTORESEARCH_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "autoresearch.runner.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_try_on_the_process_provider_scores_and_records_that_it_was_not_isolated(tmp_path):
    candidate = tmp_path / "train.py"
    candidate.write_text((default_task_dir() / "train.py").read_text())
    done = autoresearch("try", "train.py", "--sandbox", "process", "--flavor", "cpu", "--budget", "5", "--json",
                        cwd=tmp_path, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["status"] == "ok" and result["val_bpb"] > 0
    assert (result["sandbox"], result["isolated"]) == ("process", False)
    conn = store.open_store(tmp_path / "cache" / "scratch" / ".autoresearch" / "store.db", readonly=True)
    assert store.get_experiment(conn, result["experiment_id"]).sandbox == "process"
    conn.close()
    shown = autoresearch("try", "train.py", "--sandbox", "process", "--flavor", "cpu", "--budget", "2",
                         cwd=tmp_path, cache=tmp_path / "cache")
    assert "WARNING: ran in the process sandbox, WITHOUT isolation" in shown.stdout

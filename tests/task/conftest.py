"""Fixtures for testing the task's own code (prepare.py, train.py) on the host, with torch."""

import sys
from pathlib import Path

import pytest

TASK_DIR = Path(__file__).resolve().parents[2] / "task"
sys.path.insert(0, str(TASK_DIR))


@pytest.fixture(scope="session")
def prepare():
    import prepare as module

    return module


@pytest.fixture(scope="session")
def offline_data(tmp_path_factory, prepare) -> Path:
    """The offline corpus prepared once for the session, as `prepare.py data` makes it."""
    out = tmp_path_factory.mktemp("data") / "offline"
    assert prepare.main(["data", "--source", "offline", "--out", str(out)]) == 0
    return out

"""Fixtures for the agents' tests: a fake Messages API, a recording turn logger and a small context."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from autoresearch.runner.agents import HistoryRow, ProposalContext
from tests.agents.fake_api import FakeAPI

API_KEY = "sk-ant-test-0123456789-secret"

TRAIN_PY = '''\
"""A tiny train.py."""

LR = 0.02  # learning rate
DEPTH = 4


def main():
    print("step")
    print("step")
'''


@dataclass
class TurnLog:
    """A log_turn that keeps every call's keyword arguments and returns row ids 1, 2, ..."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, **row: Any) -> int:
        self.rows.append(row)
        return len(self.rows)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPI]:
    """A started fake API, with ANTHROPIC_API_KEY set to a test key."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    server = FakeAPI().start()
    yield server
    server.stop()


@pytest.fixture
def context() -> ProposalContext:
    return ProposalContext(
        program_md="# The research program\nLower val_bpb.",
        prepare_py="TIME_BUDGET = 300\n",
        train_py=TRAIN_PY,
        history=[HistoryRow(1, "abc1234", 1.2345678, "keep", "baseline")],
        last_failure=None,
        best_val_bpb=1.2345678,
    )

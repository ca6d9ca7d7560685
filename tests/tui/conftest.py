"""Fixtures of the TUI's tests: a seeded workspace, the app on it with a frozen clock, and waiting."""

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from autoresearch.runner.workspace import Workspace
from autoresearch.tui.app import AutoresearchApp
from tests.tui.seed import NOW, Seeded, seed_workspace


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    return seed_workspace(tmp_path / "ws")


def make_app(ws: Workspace, **options) -> AutoresearchApp:
    """The app on ws with the clock frozen at the seed's NOW."""
    return AutoresearchApp(ws, clock=lambda: NOW, **options)


async def wait_for(pilot: Pilot, predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Let the app run until predicate() is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await pilot.pause(0.02)


async def shown(pilot: Pilot) -> None:
    """Wait until the dashboard shows the store's first snapshot, and the screen is drawn."""
    app = pilot.app
    await wait_for(pilot, lambda: app.dashboard is not None and app.dashboard.snapshot is not None, what="a snapshot")
    await pilot.pause()


@pytest.fixture
def anyio_backend() -> str:
    """The Pilot tests run on asyncio, through anyio's pytest plugin (anyio comes with the anthropic SDK)."""
    return "asyncio"

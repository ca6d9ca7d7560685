"""Fixtures of the TUI's tests: a seeded workspace, the app on it with a frozen clock, and waiting."""

import json
import sys
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
    """The app on ws with the clock frozen at the seed's NOW, and without the doctor's checks of the machine
    (a subprocess whose report differs per machine) unless options pass a doctor command (see test_checks.py)."""
    options.setdefault("doctor", None)
    return AutoresearchApp(ws, clock=lambda: NOW, **options)


def fake_doctor(report: object, code: int = 0, stderr: str = "", wait_for_file: Path | None = None) -> list[str]:
    """A command standing in for `autoresearch doctor --json`: prints report (as JSON unless it is a str;
    `{cwd}` in it becomes the folder it runs in) and stderr, and exits with code. With wait_for_file, it
    first waits for that file to exist (10 s at most), so a test can see the checks still running."""
    text = report if isinstance(report, str) else json.dumps(report)
    lines = ["import os, sys, time"]
    if wait_for_file is not None:
        lines += ["deadline = time.monotonic() + 10",
                  f"while not os.path.exists({str(wait_for_file)!r}) and time.monotonic() < deadline:",
                  "    time.sleep(0.02)"]
    lines += [f"sys.stdout.write({text!r}.replace('{{cwd}}', os.getcwd()))", f"sys.stderr.write({stderr!r})",
              f"sys.exit({code})"]
    return [sys.executable, "-c", "\n".join(lines)]


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

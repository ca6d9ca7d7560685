"""The TUI against a real run of the CPU loop: it shows the running experiment, then the kept baseline."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from autoresearch.runner import control
from autoresearch.runner.errors import UserError
from autoresearch.runner.init import init_workspace
from autoresearch.runner.workspace import Workspace, find_workspace
from autoresearch.tui.app import AutoresearchApp
from autoresearch.tui.history import HistoryTable
from autoresearch.tui.leaderboard import LeaderboardTable
from tests.tui.conftest import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.anyio]


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    return not running(pid)


def stop(ws: Workspace, pid: int) -> None:
    """End the runner this test started the way a user does (stop, skip), else with Ctrl-C; wait for it."""
    if not running(pid):
        return
    for kind in ("stop", "skip"):
        with contextlib.suppress(UserError):
            control.send(ws, kind, "t")
    if not wait_gone(pid, 120):
        os.kill(pid, signal.SIGINT)
        wait_gone(pid, 60)


async def test_the_dashboard_follows_a_real_cpu_run(cpu_image, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    root = init_workspace(tmp_path / "ws")
    config = root / "autoresearch.toml"
    config.write_text(config.read_text().replace("noise_seeds = 3", "noise_seeds = 1") + "\n[budget]\nseconds = 4\n")
    started = subprocess.run([sys.executable, "-m", "autoresearch.runner.cli", "run", "--tag", "t",
                              "--max-experiments", "2", "--detach"], cwd=root, capture_output=True, text=True,
                             check=False)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int(re.search(r"pid (\d+)", started.stdout).group(1))
    ws = find_workspace(root)
    app = AutoresearchApp(ws, readonly=True)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            def experiments():
                snapshot = app.snapshot
                return snapshot.experiments if snapshot is not None else ()

            await wait_for(pilot, lambda: any(e.status == "running" for e in experiments()), timeout=600,
                           what="the running baseline")
            history = app.dashboard.query_one(HistoryTable)
            # The snapshot lands before the table repaints: wait for the drawn line, not the data.
            await wait_for(pilot, lambda: "▶ running" in history.render_line(1).text, timeout=30,
                           what="the running row drawn")
            assert "baseline" in history.render_line(1).text
            await wait_for(pilot, lambda: any(e.status == "keep" for e in experiments()), timeout=600,
                           what="the kept baseline")
            await wait_for(pilot, lambda: "★ keep" in "".join(history.render_line(y).text for y in (1, 2)),
                           timeout=30, what="the kept row drawn")
            await pilot.press("2")
            leaderboard = app.dashboard.query_one(LeaderboardTable)
            await wait_for(pilot, lambda: leaderboard.rows, timeout=30, what="the leaderboard's rows")
            assert leaderboard.rows[0].description == "baseline" and leaderboard.rows[0].val_bpb > 0
            summary = app.dashboard.query_one("#summary")
            await wait_for(pilot, lambda: "best " in "".join(
                strip.text for strip in summary.render_lines(summary.region.reset_offset)), timeout=30,
                what="the best in the summary")
    finally:
        stop(ws, pid)

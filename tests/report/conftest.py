"""A seeded workspace for the report's tests: tests/tui/seed.py's run, plus a hostile keep and violation and the
run's own noise, all recorded through the store's functions."""

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest

from autoresearch.runner.record import gitrepo, store
from tests.tui.seed import PLAN, Seeded, seed_workspace

# Markup of every kind a description can smuggle: HTML, Markdown links, images, emphasis, code, a table cell,
# matplotlib's mathtext, and a terminal escape.
HOSTILE = ("<script>alert(1)</script> [click](http://evil.example/x) ![pixel](http://evil.example/p.png) "
           "**bold** `code` | cell $\\frac{1}{$ \x1b[31mred")
NOISE_STD = 0.003  # twice that is 0.006: #3's gain (0.006896) lies outside, #7's, #11's and #13's within
REPORT_PLAN = (
    *PLAN[:-1],
    ("violation", None, None, f"{HOSTILE} (violation)", ("LR = 0.010", "LR = 0.010  # read val")),
    ("keep", 0.979000, 0.980100, HOSTILE, ("WARMUP = 100", "WARMUP = 50")),
    PLAN[-1],
)
FAILURES_ONLY = (
    ("crash", None, None, "WIDTH 512 with a typo", ("WIDTH = 256", "WIDTH = 512x")),
    ("blocked", None, None, "read the validation shard directly", None),
    ("violation", None, None, "overwrite prepare.py's evaluation", ("LR = 0.010", "LR = 0.010  # patch eval")),
    ("timeout", None, None, "train twice as long", ("WARMUP = 100", "WARMUP = 100  # x2 steps")),
)


@dataclass(frozen=True)
class Opened:
    seeded: Seeded
    conn: sqlite3.Connection
    run: store.Run
    repo: pygit2.Repository


def seed_report_workspace(root: Path, plan: tuple = REPORT_PLAN, noise: bool = True) -> Seeded:
    seeded = seed_workspace(root, plan=plan)
    if noise:
        conn = store.open_store(seeded.ws.store_path)
        try:
            store.add_noise(conn, None, [0.9949, 0.9979, 1.0009], 0.9979, NOISE_STD, run_id=seeded.run_id)
        finally:
            conn.close()
    return seeded


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    return seed_report_workspace(tmp_path / "ws")


@pytest.fixture
def opened(seeded: Seeded):
    conn = store.open_store(seeded.ws.store_path, readonly=True)
    try:
        yield Opened(seeded, conn, store.get_run(conn, seeded.run_id), gitrepo.open_repo(seeded.ws.root))
    finally:
        conn.close()

"""`autoresearch report` and `autoresearch plot` as a user runs them in a workspace; bad input is one line, exit 2."""

import os
from pathlib import Path

import pytest

from autoresearch.runner.record import store
from autoresearch.runner.workspace import Workspace
from tests.report.test_progress_png import png_size
from tests.test_cli import autoresearch, one_line_error
from tests.tui.seed import Seeded


def test_report_writes_the_html_page_by_default(seeded: Seeded):
    done = autoresearch("report", cwd=seeded.ws.root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "wrote report.html and progress.png"
    page = (seeded.ws.root / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "Kept changes (5)" in page
    assert png_size((seeded.ws.root / "progress.png").read_bytes()) == (1320, 715)  # the chart to share, too


def test_report_in_markdown_writes_the_chart_beside_it(seeded: Seeded, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    done = autoresearch("report", "--format", "md", "-o", str(out / "night.md"), "--tag", "main", cwd=seeded.ws.root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {out / 'night.md'} and {out / 'progress.png'}"
    assert "![progress of run main](progress.png)" in (out / "night.md").read_text()
    assert png_size((out / "progress.png").read_bytes()) == (1320, 715)


def test_plot_writes_progress_png_alone(seeded: Seeded):
    done = autoresearch("plot", cwd=seeded.ws.root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "wrote progress.png"
    assert png_size((seeded.ws.root / "progress.png").read_bytes()) == (1320, 715)
    done = autoresearch("plot", "--hours", "-o", "hours.png", "--tag", "main", cwd=seeded.ws.root)
    assert done.returncode == 0 and (seeded.ws.root / "hours.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("command", ["report", "plot"])
def test_a_tag_that_does_not_exist(seeded: Seeded, command: str):
    line = one_line_error(autoresearch(command, "--tag", "nope", cwd=seeded.ws.root))
    assert line == "autoresearch: no run tagged 'nope' in this workspace"


@pytest.mark.parametrize("command", ["report", "plot"])
def test_a_run_with_no_experiment(tmp_path: Path, command: str):
    ws = Workspace(root=tmp_path, task_dir=tmp_path, is_scratch=False)
    (tmp_path / "autoresearch.toml").write_text("")
    conn = store.open_store(ws.store_path)
    try:
        store.create_run(conn, tag="fresh", agent="sweep")
    finally:
        conn.close()
    done = autoresearch(command, cwd=tmp_path)
    assert done.returncode == 2
    assert one_line_error(done) == "autoresearch: run fresh has no experiment yet: nothing to report"


@pytest.mark.parametrize("command", ["report", "plot"])
@pytest.mark.parametrize(("output", "says"), [
    ("missing/out.file", "missing is not an existing directory"),
    (".", "it is a directory"),
    ("train.py/out.file", "train.py is not an existing directory"),  # a file where a folder should be
    ("/sys/out.file", "cannot write /sys/out.file: "),  # the kernel's read-only place, even for root
])
def test_an_output_that_cannot_be_written(seeded: Seeded, command: str, output: str, says: str):
    (seeded.ws.root / "train.py").write_text("")
    done = autoresearch(command, "-o", output, cwd=seeded.ws.root)
    assert done.returncode == 2
    line = one_line_error(done)
    assert line.startswith(f"autoresearch: cannot write {output}") and says in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory anyway")
def test_a_read_only_directory(seeded: Seeded, tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    line = one_line_error(autoresearch("report", "-o", str(locked / "r.html"), cwd=seeded.ws.root))
    assert line == f"autoresearch: cannot write {locked / 'r.html'}: Permission denied"


def test_an_unknown_format(seeded: Seeded):
    done = autoresearch("report", "--format", "pdf", cwd=seeded.ws.root)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "argument --format: invalid choice: 'pdf' (choose from 'html', 'md')" in done.stderr

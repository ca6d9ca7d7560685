"""`autoresearch report`: a run's report written as HTML (the chart inline) or Markdown, progress.png beside it."""

import sqlite3
from pathlib import Path

import pygit2

from autoresearch.runner.record import store
from autoresearch.runner.report import FORMATS, facts, output, queries
from autoresearch.runner.report.html_page import render_html
from autoresearch.runner.report.markdown_page import render_markdown
from autoresearch.runner.report.progress_png import chart_png

CHART_NAME = "progress.png"  # the Markdown report's chart, in its folder


def write_report(conn: sqlite3.Connection, repo: pygit2.Repository | None, run: store.Run, path: Path,
                 form: str = "html") -> list[Path]:
    """Write run's report to path in form (html or md), and progress.png beside it (the page holds it inline too,
    the Markdown links it); returns the files written, the chart first."""
    if form not in FORMATS:
        raise ValueError(f"unknown report format {form!r}")
    chart = path.parent / CHART_NAME
    for target in (path, chart):
        output.checked(target)
    experiments = queries.run_experiments(conn, run)
    report = facts.gather(conn, repo, run, experiments)
    png = chart_png(run, experiments)
    page = render_html(report, png) if form == "html" else render_markdown(report, CHART_NAME)
    written = output.write(path, page)
    return [output.write(chart, png), written]

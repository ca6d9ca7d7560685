"""`autoresearch report`: a run's report written as HTML (the chart inline) or Markdown (the chart beside it)."""

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
    """Write run's report to path in form (html or md); returns the files written (md: the chart too)."""
    if form not in FORMATS:
        raise ValueError(f"unknown report format {form!r}")
    chart = path.parent / CHART_NAME
    for target in (path, chart) if form == "md" else (path,):
        output.checked(target)
    experiments = queries.run_experiments(conn, run)
    report = facts.gather(conn, repo, run, experiments)
    png = chart_png(run, experiments)
    if form == "html":
        return [output.write(path, render_html(report, png))]
    return [output.write(chart, png), output.write(path, render_markdown(report, CHART_NAME))]

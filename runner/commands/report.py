"""The morning after: `report` (one page of what a run did, HTML or Markdown) and `plot` (progress.png alone)."""

import argparse
from pathlib import Path

from autoresearch.runner.commands import reader, workspace
from autoresearch.runner.errors import UserError
from autoresearch.runner.report import FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="write a run's report: a self-contained HTML page or its Markdown twin")
    report.add_argument("--format", choices=FORMATS, default="html",
                        help="html (default; the chart inline) or md; progress.png is written beside either")
    report.add_argument("-o", "--output", type=Path, help="the file (default: report.html or report.md)")
    report.add_argument("--tag", help="the run (default: the latest)")
    report.set_defaults(func=cmd_report)

    plot = sub.add_parser("plot", help="draw a run's progress.png: every experiment, the kept frontier, the baseline")
    plot.add_argument("-o", "--output", type=Path, default=Path("progress.png"), help="default: progress.png")
    plot.add_argument("--tag", help="the run (default: the latest)")
    plot.add_argument("--hours", action="store_true", help="hours since the run started on x (default: experiments)")
    plot.set_defaults(func=cmd_plot)


def cmd_report(args: argparse.Namespace) -> int:
    from autoresearch.runner.record import gitrepo
    from autoresearch.runner.record.views import pick_run
    from autoresearch.runner.report.write import write_report

    ws = workspace()
    path = args.output or Path(f"report.{args.format}")
    try:
        repo = gitrepo.open_repo(ws.root)
    except UserError:  # no git: the report says the diffs were not recorded
        repo = None
    conn = reader(ws)
    try:
        written = write_report(conn, repo, pick_run(conn, args.tag), path, args.format)
    finally:
        conn.close()
    print("wrote " + " and ".join(str(p) for p in reversed(written)))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from autoresearch.runner.record.views import pick_run
    from autoresearch.runner.report.progress_png import write_progress_png

    conn = reader(workspace())
    try:
        path = write_progress_png(conn, pick_run(conn, args.tag), args.output, hours=args.hours)
    finally:
        conn.close()
    print(f"wrote {path}")
    return 0

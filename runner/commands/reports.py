"""Reading what was recorded, never changing it: `status`, `leaderboard`, `results`, `export` and `audit`."""

import argparse
import sys
from pathlib import Path

from autoresearch.runner.commands import reader, workspace


def register(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="what is running, the best so far and what was spent")
    status.add_argument("--tag", help="the run (default: the latest)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    board = sub.add_parser("leaderboard", help="the kept commits of a run, best first")
    board.add_argument("--tag", help="the run (default: the latest)")
    board.add_argument("--json", action="store_true")
    board.set_defaults(func=cmd_leaderboard)

    results = sub.add_parser("results", help="write autoresearch's results.tsv for a run")
    results.add_argument("--tag", help="the run (default: the latest)")
    results.add_argument("-o", "--output", type=Path, default=Path("results.tsv"), help="- for stdout")
    results.set_defaults(func=cmd_results)

    export = sub.add_parser("export", help="write the best train.py of a run, with its provenance")
    export.add_argument("--best", action="store_true", required=True, help="the best kept experiment")
    export.add_argument("--tag", help="the run (default: the latest)")
    export.add_argument("-o", "--output", type=Path, help="a file (default: stdout)")
    export.add_argument("--diff", action="store_true", help="show the best against the baseline instead")
    export.set_defaults(func=cmd_export)

    audit = sub.add_parser("audit", help="list every policy finding of the workspace, with its evidence")
    audit.add_argument("--json", action="store_true", help="one JSON list, for jq and friends")
    audit.set_defaults(func=cmd_audit)


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from autoresearch.runner.record.views import pick_run, render_status, run_status, status_dict

    conn = reader(workspace())
    try:
        status = run_status(conn, pick_run(conn, args.tag))
    finally:
        conn.close()
    print(json.dumps(status_dict(status)) if args.json else render_status(status))
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from autoresearch.runner.record.views import leaderboard, pick_run, render_leaderboard

    conn = reader(workspace())
    try:
        rows = leaderboard(conn, pick_run(conn, args.tag))
    finally:
        conn.close()
    print(json.dumps([dataclasses.asdict(r) for r in rows]) if args.json else render_leaderboard(rows))
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from autoresearch.runner.record.views import pick_run, results_tsv

    conn = reader(workspace())
    try:
        text = results_tsv(conn, pick_run(conn, args.tag))
    finally:
        conn.close()
    if args.output == Path("-"):
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output} ({text.count(chr(10)) - 1} experiments)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autoresearch.runner.record import gitrepo
    from autoresearch.runner.record.views import diff_against_baseline, export_best, pick_run

    ws = workspace()
    conn = reader(ws)
    try:
        run = pick_run(conn, args.tag)
        repo = gitrepo.open_repo(ws.root)
        text = diff_against_baseline(conn, repo, run) if args.diff else export_best(conn, repo, run)
    finally:
        conn.close()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Works in the scratch workspace too: `autoresearch try` records there."""
    from autoresearch.runner.audit import audit
    from autoresearch.runner.record import store
    from autoresearch.runner.workspace import find_workspace

    ws = find_workspace()
    if not ws.store_path.exists():
        if args.json:
            print("[]")
        else:
            print(f"no experiments recorded yet in {ws.root}")
        return 0
    conn = store.open_store(ws.store_path, readonly=True)
    try:
        return audit(conn, args.json)
    finally:
        conn.close()

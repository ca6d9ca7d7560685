"""The `autoresearch` command line: one sub-command per job, each a thin call into a module."""

import argparse
import errno
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from autoresearch.runner.errors import UserError


def _cmd_image(args: argparse.Namespace) -> int:
    from autoresearch.runner.sandbox import images

    images.build_image(flavor=args.flavor, force=args.force)
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from autoresearch.runner.phases import data
    from autoresearch.runner.task_files import default_task_dir

    print(data.prepare_data(default_task_dir(), source=args.source, flavor=args.flavor))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.loop is not None:
        from autoresearch.runner.bench.loop_bench import run_loop_bench

        run_loop_bench(experiments=args.loop, budget_s=args.budget, as_json=args.json)
        return 0
    from autoresearch.runner.bench import task_bench as bench

    bench.run_task_bench(runs=args.runs, budget_s=args.budget, as_json=args.json)
    return 0


def _cmd_try(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from autoresearch.runner.check.policy import load_policy
    from autoresearch.runner.trial import try_candidate
    from autoresearch.runner.workspace import find_workspace

    policy = load_policy(args.policy)
    if args.budget is not None:
        if args.budget <= 0:
            raise UserError(f"--budget must be positive, got {args.budget:g}")
        policy = dataclasses.replace(policy, limits=dataclasses.replace(policy.limits, time_budget_s=args.budget))
    result = try_candidate(find_workspace(), args.train_py, policy, flavor=args.flavor, echo=args.verbose)
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
    else:
        from autoresearch.runner.trial import describe

        print(describe(result))
    return 0 if result.status == "ok" else 1


def _cmd_audit(args: argparse.Namespace) -> int:
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


def _cmd_migrate(args: argparse.Namespace) -> int:
    from autoresearch.runner.record import store
    from autoresearch.runner.workspace import find_workspace

    ws = find_workspace()
    if not ws.store_path.exists():
        print(f"no store in {ws.root} yet: nothing to migrate")
        return 0
    store.open_store(ws.store_path).close()  # a writable open applies the missing migrations
    print(f"{ws.store_path} is at schema version {store.SCHEMA_VERSION}")
    return 0


def _workspace():
    from autoresearch.runner.loop import require_workspace
    from autoresearch.runner.workspace import find_workspace

    ws = find_workspace()
    require_workspace(ws)
    return ws


def _reader(ws):
    """A read-only store connection, or a UserError when nothing has run yet."""
    from autoresearch.runner.record import store

    if not ws.store_path.exists():
        raise UserError(f"nothing has run in {ws.root} yet: start with `autoresearch run`")
    return store.open_store(ws.store_path, readonly=True)


def _cmd_init(args: argparse.Namespace) -> int:
    from autoresearch.runner.init import init_workspace

    root = init_workspace(args.dir)
    print(f"workspace ready in {root}\n  next: cd {root} && autoresearch run --detach  (or autoresearch-tui)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from autoresearch.runner.loop import RunOptions, run_loop

    for name in ("max_experiments", "max_hours", "max_usd"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value:g}")
    ws = _workspace()
    if args.detach:
        from autoresearch.runner.control import detach

        argv = ["--tag", args.tag] + [f"--{n.replace('_', '-')}={getattr(args, n)}" for n in
                                      ("max_experiments", "max_hours", "max_usd") if getattr(args, n) is not None]
        pid, log = detach(ws, argv)
        print(f"runner started in the background (pid {pid}), logging to {log}\n"
              "  watch: autoresearch status, autoresearch-tui   stop: autoresearch stop")
        return 0
    options = RunOptions(args.tag, max_experiments=args.max_experiments, max_hours=args.max_hours,
                         max_usd=args.max_usd)
    return run_loop(ws, options, say=lambda line: print(line, flush=True))


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from autoresearch.runner.record.views import pick_run, render_status, run_status, status_dict

    conn = _reader(_workspace())
    try:
        status = run_status(conn, pick_run(conn, args.tag))
    finally:
        conn.close()
    print(json.dumps(status_dict(status)) if args.json else render_status(status))
    return 0


def _cmd_control(args: argparse.Namespace) -> int:
    from autoresearch.runner.control import send

    ws = _workspace()
    print(send(ws, args.command, args.tag))
    if getattr(args, "now", False):
        print(send(ws, "skip", args.tag))
    return 0


def _cmd_noise(args: argparse.Namespace) -> int:
    from autoresearch.runner.noise import measure_noise

    noise = measure_noise(_workspace(), args.runs, args.tag)
    print(f"val_bpb over {len(noise.values)} seeds of {noise.commit[:8]}: mean {noise.mean:.6f}, "
          f"std {noise.std:.6f}")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from autoresearch.runner.record.views import leaderboard, pick_run, render_leaderboard

    conn = _reader(_workspace())
    try:
        rows = leaderboard(conn, pick_run(conn, args.tag))
    finally:
        conn.close()
    print(json.dumps([dataclasses.asdict(r) for r in rows]) if args.json else render_leaderboard(rows))
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from autoresearch.runner.record.views import pick_run, results_tsv

    conn = _reader(_workspace())
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


def _cmd_export(args: argparse.Namespace) -> int:
    from autoresearch.runner.record import gitrepo
    from autoresearch.runner.record.views import diff_against_baseline, export_best, pick_run

    ws = _workspace()
    conn = _reader(ws)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoresearch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    image = sub.add_parser("image", help="build the experiment image (offline, from a local wheelhouse)")
    image.add_argument("--flavor", choices=["auto", "cpu", "cuda"], default="auto")
    image.add_argument("--force", action="store_true", help="rebuild even when the image is up to date")
    image.set_defaults(func=_cmd_image)

    prepare = sub.add_parser("prepare", help="prepare the task's data once, in a container of the image")
    prepare.add_argument("--source", choices=["offline", "web"], default="offline")
    prepare.add_argument("--flavor", choices=["auto", "cpu", "cuda"], default="auto")
    prepare.set_defaults(func=_cmd_prepare)

    trial = sub.add_parser("try", help="run one experiment with TRAIN_PY exactly as the loop would, and record it")
    trial.add_argument("train_py", type=Path, metavar="TRAIN_PY")
    trial.add_argument("--policy", type=Path, help="a policy TOML file (default: the bundled default policy)")
    trial.add_argument("--budget", type=float, help="training seconds (default: the policy's time_budget_s)")
    trial.add_argument("--flavor", choices=["auto", "cpu", "cuda"], default="auto")
    trial.add_argument("--json", action="store_true", help="print the result as one JSON object")
    trial.add_argument("-v", "--verbose", action="store_true", help="echo the training output as it comes")
    trial.set_defaults(func=_cmd_try)

    audit = sub.add_parser("audit", help="list every policy finding of the workspace, with its evidence")
    audit.add_argument("--json", action="store_true", help="one JSON list, for jq and friends")
    audit.set_defaults(func=_cmd_audit)

    migrate = sub.add_parser("migrate", help="upgrade the workspace's store to this version's schema")
    migrate.set_defaults(func=_cmd_migrate)

    init = sub.add_parser("init", help="make a workspace: a git repository with the task and autoresearch.toml")
    init.add_argument("dir", type=Path, nargs="?", default=Path("."), metavar="DIR")
    init.set_defaults(func=_cmd_init)

    run = sub.add_parser("run", help="run the research loop of this workspace (resumes the tag's run)")
    run.add_argument("--tag", default="main", help="the run's name; its branch is autoresearch/TAG (default: main)")
    run.add_argument("--detach", action="store_true", help="keep running after this terminal closes")
    run.add_argument("--max-experiments", type=int, help="stop when the run has this many experiments")
    run.add_argument("--max-hours", type=float, help="stop after this many hours")
    run.add_argument("--max-usd", type=float, help="stop when the agent has cost this many dollars")
    run.set_defaults(func=_cmd_run)

    status = sub.add_parser("status", help="what is running, the best so far and what was spent")
    status.add_argument("--tag", help="the run (default: the latest)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_cmd_status)

    for kind, text in (("stop", "stop the run after the current experiment"),
                       ("pause", "pause the run after the current experiment"),
                       ("resume", "resume a paused run"), ("skip", "kill the running experiment and go on")):
        control = sub.add_parser(kind, help=text)
        control.add_argument("--tag", help="the run (default: the latest)")
        if kind == "stop":
            control.add_argument("--now", action="store_true", help="also kill the running experiment")
        control.set_defaults(func=_cmd_control)

    noise = sub.add_parser("noise", help="repeat the best train.py with N seeds and store the spread")
    noise.add_argument("runs", type=int, metavar="N")
    noise.add_argument("--tag", help="the run whose best to repeat (default: HEAD's train.py)")
    noise.set_defaults(func=_cmd_noise)

    board = sub.add_parser("leaderboard", help="the kept commits of a run, best first")
    board.add_argument("--tag", help="the run (default: the latest)")
    board.add_argument("--json", action="store_true")
    board.set_defaults(func=_cmd_leaderboard)

    results = sub.add_parser("results", help="write autoresearch's results.tsv for a run")
    results.add_argument("--tag", help="the run (default: the latest)")
    results.add_argument("-o", "--output", type=Path, default=Path("results.tsv"), help="- for stdout")
    results.set_defaults(func=_cmd_results)

    export = sub.add_parser("export", help="write the best train.py of a run, with its provenance")
    export.add_argument("--best", action="store_true", required=True, help="the best kept experiment")
    export.add_argument("--tag", help="the run (default: the latest)")
    export.add_argument("-o", "--output", type=Path, help="a file (default: stdout)")
    export.add_argument("--diff", action="store_true", help="show the best against the baseline instead")
    export.set_defaults(func=_cmd_export)

    bench = sub.add_parser("bench", help="time the phases of one CPU-profile experiment (or, with --loop N, a loop)")
    bench.add_argument("--loop", type=int, metavar="N", help="run a sweep loop of N experiments instead")
    bench.add_argument("--runs", type=int, default=3)
    bench.add_argument("--budget", type=float, default=20.0, help="training seconds per run")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as exc:
        print(f"autoresearch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autoresearch: interrupted", file=sys.stderr)
        return 130
    except (OSError, sqlite3.OperationalError) as exc:
        problem = storage_problem(exc)
        if problem is None:
            raise
        print(f"autoresearch: {problem} ({exc}): free some space or fix the disk, then run the command again; "
              "everything recorded so far is intact (each record is one SQLite transaction)", file=sys.stderr)
        return 1


def storage_problem(exc: BaseException) -> str | None:
    """What to call a failure of the disk under the store or the logs; None for any other error."""
    if disk_full(exc):
        return "the disk is full"
    if getattr(exc, "sqlite_errorname", "").startswith("SQLITE_IOERR"):
        return "the store cannot be written (is the disk full?)"
    return None


def disk_full(exc: BaseException) -> bool:
    """ENOSPC from the OS, or SQLite's SQLITE_FULL."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL"


if __name__ == "__main__":
    sys.exit(main())

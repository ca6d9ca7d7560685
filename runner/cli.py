"""The `autoresearch` command line: one sub-command per job, each a thin call into a module."""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from autoresearch.runner.errors import UserError


def _cmd_image(args: argparse.Namespace) -> int:
    from autoresearch.runner import images

    images.build_image(flavor=args.flavor, force=args.force)
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from autoresearch.runner import data
    from autoresearch.runner.task_files import default_task_dir

    print(data.prepare_data(default_task_dir(), source=args.source, flavor=args.flavor))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from autoresearch.runner import bench

    bench.run_task_bench(runs=args.runs, budget_s=args.budget, as_json=args.json)
    return 0


def _cmd_try(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from autoresearch.runner.policy import load_policy
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
    from autoresearch.runner import store
    from autoresearch.runner.audit import audit
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
    from autoresearch.runner import store
    from autoresearch.runner.workspace import find_workspace

    ws = find_workspace()
    if not ws.store_path.exists():
        print(f"no store in {ws.root} yet: nothing to migrate")
        return 0
    store.open_store(ws.store_path).close()  # a writable open applies the missing migrations
    print(f"{ws.store_path} is at schema version {store.SCHEMA_VERSION}")
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

    bench = sub.add_parser("bench", help="time the phases of one experiment of the CPU profile")
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


if __name__ == "__main__":
    sys.exit(main())

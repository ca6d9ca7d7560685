"""The `autoresearch` command line: one sub-command per job, each a thin call into a module."""

import argparse
import sys
from collections.abc import Callable

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

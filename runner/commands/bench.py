"""`bench`: time the phases of one CPU-profile experiment, or of a short sweep loop."""

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="time the phases of one CPU-profile experiment (or, with --loop N, a loop)")
    bench.add_argument("--loop", type=int, metavar="N", help="run a sweep loop of N experiments instead")
    bench.add_argument("--runs", type=int, default=3)
    bench.add_argument("--budget", type=float, default=20.0, help="training seconds per run")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.loop is not None:
        from autoresearch.runner.bench.loop_bench import run_loop_bench

        run_loop_bench(experiments=args.loop, budget_s=args.budget, as_json=args.json)
        return 0
    from autoresearch.runner.bench.task_bench import run_task_bench

    run_task_bench(runs=args.runs, budget_s=args.budget, as_json=args.json)
    return 0

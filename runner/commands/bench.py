"""`bench`: time the phases of one CPU-profile experiment, of a short sweep loop, the GPU profile on a GPU, or the
report of a large run."""

import argparse
from pathlib import Path

from autoresearch.runner.config import EXECUTORS
from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox import CHOICES as SANDBOX_CHOICES


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="time the phases of one CPU-profile experiment (or, with --loop N, a "
                                         "loop; with --gpu, the GPU profile on this machine's GPU)")
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument("--loop", type=int, metavar="N", help="run a sweep loop of N experiments instead")
    mode.add_argument("--slots", metavar="N[,N...]",
                      help="the loop's throughput with N slots at once (e.g. 1,2,4,8), on a simulated training phase")
    mode.add_argument("--gpu", action="store_true",
                      help="the GPU profile for the full budget, compile cold then warm (make gpu-check)")
    mode.add_argument("--report", type=int, metavar="N",
                      help="the seconds `autoresearch report` and progress.png take for a made-up run of N experiments")
    bench.add_argument("--runs", type=int, default=3)
    bench.add_argument("--budget", type=float,
                       help="training seconds per run (default: 20; with --gpu the policy's, 300)")
    bench.add_argument("--sandbox", choices=SANDBOX_CHOICES,
                       help="with --gpu: how phases run (default: docker; process where Docker is absent)")
    bench.add_argument("-o", "--output", type=Path, help="with --gpu: where the JSON report goes (default: "
                                                          "gpu-bench.json)")
    bench.add_argument("--executor", choices=EXECUTORS, default="local", help="with --slots: where slots run")
    bench.add_argument("--think", type=float, default=5.0,
                       help="with --slots: seconds the simulated agent takes per proposal (default: 5)")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.gpu:
        from autoresearch.runner.bench.gpu_bench import run_gpu_bench

        run_gpu_bench(args.output or Path("gpu-bench.json"), budget_s=args.budget, sandbox=args.sandbox,
                      as_json=args.json)
        return 0
    if args.slots is not None:
        from autoresearch.runner.bench.slots_bench import run_slots_bench

        run_slots_bench(slot_counts(args.slots), per_slot=args.runs, think_s=args.think, executor=args.executor,
                        as_json=args.json, **({} if args.budget is None else {"train_s": args.budget}))
        return 0
    if args.report is not None:
        from autoresearch.runner.bench.report_bench import run_report_bench

        run_report_bench(args.report, as_json=args.json)
        return 0
    if args.sandbox or args.output:
        raise UserError("--sandbox and --output go with --gpu (the CPU bench runs in Docker)")
    budget = {} if args.budget is None else {"budget_s": args.budget}
    if args.loop is not None:
        from autoresearch.runner.bench.loop_bench import run_loop_bench

        run_loop_bench(experiments=args.loop, as_json=args.json, **budget)
        return 0
    from autoresearch.runner.bench.task_bench import run_task_bench

    run_task_bench(runs=args.runs, as_json=args.json, **budget)
    return 0


def slot_counts(text: str) -> list[int]:
    """--slots 1,2,4,8 as [1, 2, 4, 8]; a clear error for anything else."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise UserError(f"--slots takes slot counts of 1 or more separated by commas (e.g. 1,2,4,8), got {text!r}")
    return counts

"""The research loop and its controls: `run`, and `stop`, `pause`, `resume`, `skip` sent to a running one."""

import argparse

from autoresearch.runner.commands import add_setting_flags, workspace
from autoresearch.runner.config import EXECUTORS

CAPS = ("max_experiments", "max_hours", "max_usd", "target_bpb", "patience")
CONTROLS = (("stop", "stop the run once the experiments in flight end"),
            ("pause", "pause the run once the experiments in flight end"),
            ("resume", "resume a paused run"), ("skip", "kill the experiments in flight and go on"))


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the research loop of this workspace (resumes the tag's run)")
    run.add_argument("--tag", default="main", help="the run's name; its branch is autoresearch/TAG (default: main)")
    run.add_argument("--detach", action="store_true", help="keep running after this terminal closes")
    run.add_argument("--max-experiments", type=int, help="stop when the run has this many experiments")
    run.add_argument("--max-hours", type=float, help="stop after this many hours")
    run.add_argument("--max-usd", type=float, help="stop when the agent has cost this many dollars")
    run.add_argument("--target-bpb", type=float, metavar="X",
                     help="stop once a kept experiment's val_bpb is X or less (default: [caps] target_val_bpb)")
    run.add_argument("--patience", type=int, metavar="N",
                     help="stop after N candidates in a row without a keep (default: [caps] patience)")
    add_setting_flags(run, "training seconds per experiment (default: [budget] seconds, else the policy's)")
    run.add_argument("--slots", type=int, help="experiments in flight at once (default: [executor] slots: one per "
                                               "GPU of [gpus] ids, or 1 on CPU)")
    run.add_argument("--executor", choices=EXECUTORS, help="where experiments run (default: [executor] name)")
    run.set_defaults(func=cmd_run)

    for kind, text in CONTROLS:
        control = sub.add_parser(kind, help=text)
        control.add_argument("--tag", help="the run (default: the latest)")
        if kind == "stop":
            control.add_argument("--now", action="store_true", help="also kill the running experiment")
        control.set_defaults(func=cmd_control)


def cmd_run(args: argparse.Namespace) -> int:
    from autoresearch.runner.loop import RunOptions, run_loop
    from autoresearch.runner.notify import Notifier, services
    from autoresearch.runner.settings import resolve_settings

    ws = workspace()
    options = RunOptions(args.tag, max_experiments=args.max_experiments, max_hours=args.max_hours,
                         max_usd=args.max_usd, target_bpb=args.target_bpb, patience=args.patience,
                         sandbox=args.sandbox, time_budget_s=args.budget, flavor=args.flavor, slots=args.slots,
                         executor=args.executor)
    if args.detach:
        from autoresearch.runner.control import detach

        services(resolve_settings(ws, options.flags()).notify.urls)  # bad settings fail here, not in the log
        given = {**{name: getattr(args, name) for name in CAPS}, "budget": args.budget, "flavor": args.flavor,
                 "sandbox": args.sandbox, "slots": args.slots, "executor": args.executor}
        argv = ["--tag", args.tag] + [f"--{n.replace('_', '-')}={v}" for n, v in given.items() if v is not None]
        pid, log = detach(ws, argv)
        print(f"runner started in the background (pid {pid}), logging to {log}\n"
              "  watch: autoresearch status, autoresearch-tui   stop: autoresearch stop")
        return 0
    return run_loop(ws, options, say=lambda line: print(line, flush=True), notifier=Notifier)


def cmd_control(args: argparse.Namespace) -> int:
    from autoresearch.runner.control import send

    ws = workspace()
    print(send(ws, args.command, args.tag))
    if getattr(args, "now", False):
        print(send(ws, "skip", args.tag))
    return 0

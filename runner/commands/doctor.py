"""`autoresearch doctor`: whether the configured run can start on this machine, one line per check."""

import argparse

from autoresearch.runner.commands import add_setting_flags


def register(sub: argparse._SubParsersAction) -> None:
    doctor = sub.add_parser("doctor", help="check this machine for the configured run: engine, image, GPUs, disk, "
                                           "network, agent, store")
    add_setting_flags(doctor, "the training seconds the run would use")
    doctor.add_argument("--json", action="store_true", help="one JSON object: ok and the checks")
    doctor.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from autoresearch.runner.doctor import render, run_checks
    from autoresearch.runner.doctor_report import report
    from autoresearch.runner.settings import Flags, resolve_settings
    from autoresearch.runner.workspace import find_workspace

    ws = find_workspace()
    settings = resolve_settings(ws, Flags(time_budget_s=args.budget, flavor=args.flavor, sandbox=args.sandbox))
    checks = run_checks(ws, settings)
    print(json.dumps(report(checks)) if args.json else render(checks))
    return 0 if report(checks)["ok"] else 1

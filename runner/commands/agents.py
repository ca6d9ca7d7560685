"""`autoresearch agents`: every agent, and whether it is ready here (key, binary, image, gateway), with the fix."""

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    agents = sub.add_parser("agents", help="list every agent and whether it is ready here, with the fix when not")
    agents.add_argument("--json", action="store_true", help="one JSON list")
    agents.set_defaults(func=cmd_agents)


def cmd_agents(args: argparse.Namespace) -> int:
    import json

    from autoresearch.runner.agents.readiness import all_readiness, render
    from autoresearch.runner.settings import resolve_settings
    from autoresearch.runner.workspace import find_workspace

    settings = resolve_settings(find_workspace()).agent
    rows = all_readiness(settings)
    print(json.dumps([row.to_dict() for row in rows], indent=1) if args.json else render(rows))
    return 0

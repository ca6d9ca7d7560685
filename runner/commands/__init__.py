"""The command line's command groups, one module each; runner/cli.py wires them.

Each module has register(sub), which adds its sub-commands to the parser's sub-parsers with their
handlers. A handler imports what it needs when it runs, so building the parser (and running a
read-only command such as `status`) never loads docker-py or an agent's SDK.
"""

import argparse
import sqlite3

from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox import CHOICES as SANDBOX_CHOICES
from autoresearch.runner.sandbox.flavors import FLAVORS
from autoresearch.runner.workspace import Workspace

FLAVOR_CHOICES = ("auto", *FLAVORS)


def add_setting_flags(parser: argparse.ArgumentParser, budget_help: str) -> None:
    """The flags that override autoresearch.toml and the policy (runner/settings.py has the precedence)."""
    parser.add_argument("--budget", type=float, help=budget_help)
    parser.add_argument("--flavor", choices=FLAVOR_CHOICES, help="the experiment image (default: [image] flavor)")
    parser.add_argument("--sandbox", choices=SANDBOX_CHOICES,
                        help="how phases run (default: [sandbox] provider, docker); process has no isolation")


def workspace() -> Workspace:
    """The workspace of the current folder; UserError outside one (the scratch workspace does not count)."""
    from autoresearch.runner.workspace import find_workspace, require_workspace

    ws = find_workspace()
    require_workspace(ws)
    return ws


def reader(ws: Workspace) -> sqlite3.Connection:
    """A read-only store connection, or a UserError when nothing has run yet."""
    from autoresearch.runner.record import store

    if not ws.store_path.exists():
        raise UserError(f"nothing has run in {ws.root} yet: start with `autoresearch run`")
    return store.open_store(ws.store_path, readonly=True)

"""The `autoresearch` command line: one sub-command per job, each a thin call into a module."""

# This module only wires the parser: each command group (runner/commands/*.py) registers its sub-commands
# and handlers, and main() turns the errors a user can act on into one line and an exit code.

import argparse
import errno
import sqlite3
import sys
from collections.abc import Callable

from autoresearch.runner.commands import agents, bench, doctor, experiment, node, report, reports, run, setup
from autoresearch.runner.errors import UserError

# the order `autoresearch --help` lists them in
GROUPS = (setup, doctor, agents, run, reports, report, experiment, bench, node)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoresearch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
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

"""Setting a workspace up: `init`, `image`, `prepare` and `migrate`."""

import argparse
from pathlib import Path

from autoresearch.runner.commands import FLAVOR_CHOICES, SANDBOX_CHOICES
from autoresearch.runner.errors import UserError
from autoresearch.runner.phases.sources import CHOICES as SOURCE_CHOICES


def register(sub: argparse._SubParsersAction) -> None:
    init = sub.add_parser("init", help="make a workspace: a git repository with the task and autoresearch.toml")
    init.add_argument("dir", type=Path, nargs="?", default=Path("."), metavar="DIR")
    init.set_defaults(func=cmd_init)

    image = sub.add_parser("image", help="build and self-test the experiment image (from a local wheelhouse)")
    # Checked by the builder, not by argparse: a wrong flavor gets one line with the fix, not a usage block.
    image.add_argument("--flavor", default="auto", metavar="{" + ",".join(FLAVOR_CHOICES) + "}")
    image.add_argument("--force", action="store_true", help="rebuild even when the image is up to date")
    image.add_argument("--base", metavar="IMAGE",
                       help="build on this image (e.g. a pulled PyTorch image) instead of the debootstrapped base")
    image.add_argument("--agent", metavar="{claude-code,codex}",
                       help="build a coding-agent CLI's agent image (Debian plus the pinned CLI from npm) instead")
    image.set_defaults(func=cmd_image)

    prepare = sub.add_parser("prepare", help="prepare the task's data once, in a container of the image")
    prepare.add_argument("--source", choices=SOURCE_CHOICES, help="the data (default: [task] source, auto)")
    prepare.add_argument("--flavor", choices=FLAVOR_CHOICES, help="the experiment image (default: [image] flavor)")
    prepare.add_argument("--sandbox", choices=SANDBOX_CHOICES, help="how the phase runs (default: [sandbox] provider)")
    prepare.set_defaults(func=cmd_prepare)

    migrate = sub.add_parser("migrate", help="upgrade the workspace's store to this version's schema")
    migrate.set_defaults(func=cmd_migrate)


def cmd_init(args: argparse.Namespace) -> int:
    from autoresearch.runner.init import init_workspace

    root = init_workspace(args.dir)
    print(f"workspace ready in {root}\n  next: cd {root} && autoresearch run --detach  (or autoresearch-tui)")
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    if args.agent is not None:
        from autoresearch.runner.agents.cli_images import CLI_PACKAGES, build_agent_image

        if args.agent not in CLI_PACKAGES:
            raise UserError(f"no agent image for {args.agent!r}: choose one of {', '.join(CLI_PACKAGES)}")
        build_agent_image(args.agent, force=args.force)
        return 0
    from autoresearch.runner.sandbox import images

    images.build_image(flavor=args.flavor, force=args.force, base=args.base)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    import sys

    from autoresearch.runner.phases.data import prepare_data
    from autoresearch.runner.phases.sources import resolve_source, source_lines
    from autoresearch.runner.sandbox.registry import open_sandbox
    from autoresearch.runner.settings import Flags, resolve_settings
    from autoresearch.runner.workspace import find_workspace

    ws = find_workspace()
    settings = resolve_settings(ws, Flags(flavor=args.flavor, sandbox=args.sandbox))
    sandbox = open_sandbox(settings.sandbox, settings.sandbox_insisted)
    try:
        source, why = resolve_source(args.source or settings.source)
        print("\n".join(source_lines(source, why, settings.flavor)), file=sys.stderr)
        print(prepare_data(sandbox, sandbox.image(settings.flavor), ws.task_dir, source))
    finally:
        sandbox.close()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from autoresearch.runner.record import store
    from autoresearch.runner.workspace import find_workspace

    ws = find_workspace()
    if not ws.store_path.exists():
        print(f"no store in {ws.root} yet: nothing to migrate")
        return 0
    store.open_store(ws.store_path).close()  # a writable open applies the missing migrations
    print(f"{ws.store_path} is at schema version {store.SCHEMA_VERSION}")
    return 0

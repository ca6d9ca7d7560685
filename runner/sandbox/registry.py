"""Opening a sandbox provider by name: the one place that turns `[sandbox] provider` into a provider.

Each provider's module is imported only when it is chosen, so a run on the process provider never
loads docker-py, and refusals (an unknown name, the fake outside tests, the process provider beside a
Docker engine that answers) are one line that says what to do.
"""

import importlib
import os

from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox import CHOICES, FAKE_SCRIPT_ENV, PROVIDERS
from autoresearch.runner.sandbox.base import Sandbox


def open_sandbox(name: str, insisted: bool = False) -> Sandbox:
    """The provider called name, ready to run phases.

    insisted: the user named it on the command line for this invocation. The process provider (no
    isolation) is refused while Docker answers unless insisted; the fake one outside tests."""
    if name not in PROVIDERS or (name == "fake" and not os.environ.get(FAKE_SCRIPT_ENV)):
        if name == "fake":
            raise UserError(f"the fake sandbox provider is for tests only (they set {FAKE_SCRIPT_ENV})")
        raise UserError(f"unknown sandbox provider {name!r}: set [sandbox] provider in autoresearch.toml "
                        f"(or --sandbox) to one of {', '.join(CHOICES)}")
    if name == "process" and not insisted and _docker_answers():
        raise UserError("[sandbox] provider = \"process\" runs experiments without isolation, and a Docker engine "
                        "answers here: remove it from autoresearch.toml to use Docker, or pass --sandbox process "
                        "to insist")
    module, _, cls = PROVIDERS[name].partition(":")
    return getattr(importlib.import_module(module), cls).open()


def _docker_answers() -> bool:
    from autoresearch.runner.sandbox.engine import engine_reachable

    return engine_reachable()

"""Running task code in isolation: the sandbox providers by name, the host's monitor, images and GPUs.

The interface is in base.py. Providers are looked up by name and imported only when chosen, so
nothing that merely names a provider loads docker-py.
"""

import importlib
import os

from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox.base import Sandbox, SandboxUnavailable

PROVIDERS = {
    "docker": "autoresearch.runner.sandbox.docker_provider:DockerSandbox",
    "process": "autoresearch.runner.sandbox.process_provider:ProcessSandbox",
    "fake": "autoresearch.runner.sandbox.fake_provider:FakeSandbox",
}
CHOICES = ("docker", "process")  # what users may name; fake is for tests only
FAKE_SCRIPT_ENV = "AUTORESEARCH_FAKE_SANDBOX"  # the fake provider's defaults (a JSON file): tests set it

__all__ = ["CHOICES", "PROVIDERS", "Sandbox", "SandboxUnavailable", "open_sandbox"]


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

"""The sandbox providers under test, each opened the way the runner opens it (`Provider.open()`).

`sandbox` is parametrised over every provider: docker needs the engine and the CPU image (the session
fixtures of tests/conftest.py skip without them, or fail under AUTORESEARCH_REQUIRE_DOCKER=1); process
and docker skip, with the reason, while their module or class is not written yet; fake always runs.
"""

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoresearch.runner.sandbox import FAKE_SCRIPT_ENV, PROVIDERS
from autoresearch.runner.sandbox.base import Sandbox, SandboxUnavailable


def provider_class(name: str) -> type:
    """The provider's class, or a skip naming what is missing."""
    module_name, _, class_name = PROVIDERS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        pytest.skip(reason=f"the {name} provider ({module_name}) is not written yet")
    if not hasattr(module, class_name):
        pytest.skip(reason=f"{module_name} has no {class_name} yet")
    return getattr(module, class_name)


@pytest.fixture
def fake_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake provider's defaults file ("{}": built-ins only), named by its env var; its state lies beside it."""
    path = tmp_path / "fake-sandbox.json"
    path.write_text("{}")
    monkeypatch.setenv(FAKE_SCRIPT_ENV, str(path))
    return path


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker), "process", "fake"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """An opened provider, closed after the test."""
    name = request.param
    if name == "docker":
        request.getfixturevalue("cpu_image")  # the engine answers and the image is built (else skip or fail)
    elif name == "fake":
        request.getfixturevalue("fake_defaults")
    cls = provider_class(name)
    try:
        box = cls.open()
    except SandboxUnavailable as exc:
        pytest.skip(reason=f"the {name} provider cannot run phases here: {exc}")
    yield box
    box.close()

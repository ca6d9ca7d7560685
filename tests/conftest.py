"""Session fixtures for tests that need the Docker engine and the CPU experiment image.

Without a reachable engine these tests skip, with the reason in pytest's summary; with
AUTORESEARCH_REQUIRE_DOCKER=1 (what CI sets) they fail instead, so a broken engine cannot pass as green.
"""

import os
from collections.abc import Iterator

import docker
import pytest

from autoresearch.runner.errors import UserError
from autoresearch.runner.phases.sources import HUB_URL_ENV
from autoresearch.runner.sandbox.engine import connect
from autoresearch.runner.sandbox.images import build_image

# Tests never reach the internet: the web corpus's hub is a closed local port, so `[task] source = "auto"` (the
# default) resolves to the offline corpus at once, here and in every subprocess a test starts.
os.environ.setdefault(HUB_URL_ENV, "http://127.0.0.1:9/no-hub")


def _unavailable(reason: str) -> None:
    """Skip the test for reason, or fail it when the environment requires Docker."""
    if os.environ.get("AUTORESEARCH_REQUIRE_DOCKER") == "1":
        pytest.fail(f"AUTORESEARCH_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason=reason)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A docker-py client of the local engine."""
    try:
        client = connect()
    except UserError as exc:
        _unavailable(str(exc))
    yield client
    client.close()


@pytest.fixture(scope="session")
def cpu_image(docker_client: docker.DockerClient) -> str:
    """The tag of the CPU experiment image, built first when missing or out of date."""
    try:
        return build_image("cpu")
    except UserError as exc:
        _unavailable(f"the CPU experiment image cannot be built: {exc}")


@pytest.fixture(scope="session")
def docker_sandbox(docker_client: docker.DockerClient, cpu_image: str) -> Iterator:
    """The docker sandbox provider on the local engine, with the CPU image built."""
    from autoresearch.runner.sandbox.docker_provider import DockerSandbox

    yield DockerSandbox(docker_client)


def cpu_settings(policy=None, budget_s: float | None = None, sandbox: str = "docker"):
    """Settings for a trial outside any workspace: policy (default: the bundled default) on the CPU image."""
    import dataclasses

    from autoresearch.runner.check.policy import load_policy
    from autoresearch.runner.config import Caps, Config
    from autoresearch.runner.settings import Settings

    policy = policy or load_policy()
    if budget_s is not None:
        policy = dataclasses.replace(policy, limits=dataclasses.replace(policy.limits, time_budget_s=budget_s))
    return Settings(config=Config(), policy=policy, flavor="cpu", sandbox=sandbox, sandbox_insisted=False,
                    caps=Caps())


@pytest.fixture(scope="session")
def claude_code_image(docker_client: docker.DockerClient) -> str:
    """The tag of the claude-code agent image (Debian plus Claude Code's binary from npm), built when missing."""
    from autoresearch.runner.agents.cli_images import build_agent_image

    try:
        return build_agent_image("claude-code")
    except UserError as exc:
        _unavailable(f"the claude-code agent image cannot be built: {exc}")


DOCKER_FIXTURES = frozenset({"docker_client", "cpu_image", "docker_sandbox", "claude_code_image"})
CLIS_ENV = "AUTORESEARCH_CLIS"  # set by `make clis`: the real coding-agent CLIs run (tests marked clis)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `docker` every test that uses the engine's fixtures, directly or through other fixtures (fixturenames
    is the closure), so `-m "not docker"` (make test-fast) never reaches for Docker whatever a test forgot."""
    for item in items:
        if DOCKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)
        if item.get_closest_marker("clis") and os.environ.get(CLIS_ENV) != "1":
            item.add_marker(pytest.mark.skip(reason="the real coding-agent CLIs run in `make clis` (opt-in)"))

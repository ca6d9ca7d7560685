"""Connecting to the Docker engine, with one clear line when it is not there."""

from pathlib import Path

import docker
import docker.errors

from autoresearch.runner.errors import UserError


def connect(timeout: int = 10) -> docker.DockerClient:
    """Return a client for the local engine, or raise UserError saying how to start one."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise UserError(
            "no Docker engine is reachable (start dockerd, or set DOCKER_HOST); "
            f"docker said: {str(exc).splitlines()[0][:160]}"
        ) from None
    return client


def docker_root(client: docker.DockerClient) -> Path:
    """Where the engine keeps its images and containers (its data root)."""
    return Path(client.info().get("DockerRootDir", "/var/lib/docker"))


def engine_reachable() -> bool:
    """True when a Docker engine answers a ping."""
    try:
        connect(timeout=5).close()
    except UserError:
        return False
    return True

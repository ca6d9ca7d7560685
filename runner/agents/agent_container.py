"""One run of a coding-agent CLI in a fresh, hardened agent container (the agent images: cli_images.py).

Hardened like the experiment containers and more: read-only root filesystem, no network at all (the gateway's
socket, mounted read-only, is the only way out), every capability dropped but the four the entry script needs
as root to lay /work out and to end the agent (CHOWN, SETUID, SETGID, KILL; the CLI itself runs as uid 1000 with
none), no-new-privileges, pid, memory and CPU limits, an init process, and size-capped tmpfs for /work, the
agent's home and /tmp. The container's own output is the entry script's alone; it is parsed strictly.
"""

import base64
import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import docker.types
import requests

from autoresearch.runner.agents.base import AgentError
from autoresearch.runner.sandbox.base import LABEL
from autoresearch.runner.sandbox.docker_provider import remove_quietly
from autoresearch.runner.sandbox.engine import connect

AGENT_UID = 1000
GATEWAY_DIR = "/run/gateway"  # where the gateway's socket folder is mounted
GATEWAY_SOCKET = f"{GATEWAY_DIR}/gateway.sock"
CAPS = ["CHOWN", "SETUID", "SETGID", "KILL"]  # the entry script's, as root; the CLI runs with none
MAX_LOG_BYTES = 8 * 2**20
AGENT_PHASE = "agent"


@dataclass(frozen=True)
class AgentLimits:
    memory: str = "4g"
    cpus: float = 2.0
    pids_limit: int = 256
    home_size: str = "512m"


@dataclass(frozen=True)
class ContainerRun:
    """What one CLI run left: its exit code, the tar of /work, its output (capped), and where the time went."""

    exit_code: int
    work_tar: bytes
    output: str
    start_s: float  # creating and starting the container
    run_s: float  # the CLI's run, to its exit


def run_agent_container(image: str, argv: list[str], env: dict[str, str], staging: Path, gateway_dir: Path,
                        labels: dict[str, str], timeout_s: float, limits: AgentLimits = AgentLimits()) -> ContainerRun:
    """Run argv in a fresh agent container; AgentError for an engine failure or a CLI past its deadline."""
    began = time.monotonic()
    client = connect(timeout=60)
    container = None
    try:
        container = client.containers.create(
            image, argv, environment=env, user="0:0", read_only=True, network_mode="none",
            labels={LABEL: "1", "autoresearch.phase": AGENT_PHASE, **labels},
            mounts=[docker.types.Mount("/in", str(staging), type="bind", read_only=True),
                    docker.types.Mount(GATEWAY_DIR, str(gateway_dir), type="bind", read_only=True)],
            tmpfs={"/work": "rw,nosuid,nodev,noexec,size=4m,nr_inodes=64,mode=0755",
                   "/home/agent": f"rw,nosuid,nodev,size={limits.home_size},uid={AGENT_UID},gid={AGENT_UID},mode=0700",
                   "/tmp": "rw,nosuid,nodev,size=256m,mode=1777", "/run/agent": "rw,nosuid,nodev,size=2m,mode=0755"},
            cap_drop=["ALL"], cap_add=CAPS, security_opt=["no-new-privileges"], pids_limit=limits.pids_limit,
            mem_limit=limits.memory, memswap_limit=limits.memory, nano_cpus=int(limits.cpus * 1e9), init=True,
            ipc_mode="private", detach=True)
        container.start()
        started = time.monotonic()
        timer = threading.Timer(timeout_s, _kill, (container,))
        timer.daemon = True
        timer.start()
        try:
            status = container.wait(timeout=timeout_s + 120)
        finally:
            timer.cancel()
        ended = time.monotonic()
        if ended - started >= timeout_s:
            raise AgentError(f"the CLI ran past its {timeout_s:.0f} s (cli_timeout_s) and was stopped")
        logs = container.logs(stdout=True, stderr=False, tail="all")[-MAX_LOG_BYTES:]
        exit_code, work, output = _parse(logs, status.get("StatusCode"))
        return ContainerRun(exit_code, work, output, started - began, ended - started)
    except docker.errors.ImageNotFound:
        raise AgentError(f"the agent image {image} is missing: run `autoresearch image --agent ...`") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise AgentError(f"the Docker engine failed running the agent ({str(exc).splitlines()[0][:200]})") from None
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
                remove_quietly(container)
        client.close()


def _kill(container) -> None:
    with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
        container.kill()


def _parse(logs: bytes, status: int | None) -> tuple[int, bytes, str]:
    """The entry script's three lines: the CLI's exit code, /work's tar and the CLI's output, base64."""
    fields: dict[str, str] = {}
    for line in logs.decode(errors="replace").splitlines():
        key, _, value = line.partition(" ")
        if key.startswith("autoresearch-agent-") and key not in fields:
            fields[key] = value.strip()
    try:
        code = int(fields["autoresearch-agent-exit"])
        work = base64.b64decode(fields["autoresearch-agent-work"], validate=True)
        output = base64.b64decode(fields.get("autoresearch-agent-output", ""), validate=True)
    except (KeyError, ValueError):
        raise AgentError(f"the agent container ended (status {status}) without handing back /work") from None
    return code, work, output.decode(errors="replace")

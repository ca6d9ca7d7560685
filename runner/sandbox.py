"""Running task code in fresh, hardened containers (docker-py), one container per phase.

Hardened by default: read-only root filesystem, no network, every capability dropped,
no-new-privileges, a non-root user, pid, memory and CPU limits, an init process, a size-capped
tmpfs /tmp, and only the mounts the phase names. Containers are never reused and never
`auto_remove`d: create, attach the log stream, start, wait (killing at the deadline), collect, remove.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import docker.types
import requests

from autoresearch.runner.errors import UserError

LABEL = "autoresearch"  # every container carries it, so orphans can be found and removed
USER = "1000:1000"


@dataclass(frozen=True)
class Mount:
    """A host path seen at target inside the container."""

    source: Path
    target: str
    read_only: bool = True


@dataclass
class ContainerSpec:
    """Everything one phase's container is made of."""

    image: str
    command: list[str]
    mounts: list[Mount]
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    deadline_s: float = 600.0  # wall-clock seconds from start to kill
    network: bool = False
    memory: str = "8g"
    cpus: float | None = None
    pids_limit: int = 512
    tmpfs_size: str = "1g"
    gpu_uuid: str | None = None


@dataclass
class ContainerResult:
    """How a container ended, with timings measured by the host."""

    exit_code: int | None
    timed_out: bool
    oom_killed: bool
    log_tail: str
    start_seconds: float  # from create to running
    run_seconds: float  # from running to exit
    error: str = ""


def create_container(client: docker.DockerClient, spec: ContainerSpec):
    """Create (not start) the hardened container described by spec."""
    mounts = [
        docker.types.Mount(m.target, str(m.source), type="bind", read_only=m.read_only) for m in spec.mounts
    ]
    device_requests = []
    environment = dict(spec.environment)
    if spec.gpu_uuid:
        device_requests = [docker.types.DeviceRequest(device_ids=[spec.gpu_uuid], capabilities=[["gpu"]])]
        environment["NVIDIA_VISIBLE_DEVICES"] = spec.gpu_uuid
    try:
        return client.containers.create(
            spec.image,
            spec.command,
            mounts=mounts,
            environment=environment,
            labels={LABEL: "1", **spec.labels},
            user=USER,
            working_dir="/task",
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={spec.tmpfs_size}"},
            network_mode="bridge" if spec.network else "none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=spec.pids_limit,
            mem_limit=spec.memory,
            memswap_limit=spec.memory,
            nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
            init=True,
            ipc_mode="private",
            shm_size="1g",
            device_requests=device_requests,
            detach=True,
        )
    except docker.errors.ImageNotFound:
        raise UserError(f"the experiment image {spec.image} is missing: run `make image`") from None


def run_container(
    client: docker.DockerClient,
    spec: ContainerSpec,
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
) -> ContainerResult:
    """Run spec to completion or to its deadline, streaming its output to log_path (and on_line)."""
    created = time.monotonic()
    container = create_container(client, spec)
    try:
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=True)
        reader = threading.Thread(target=_copy_stream, args=(stream, log_path, on_line), daemon=True)
        reader.start()
        container.start()
        started = time.monotonic()
        timed_out = False
        try:
            status = container.wait(timeout=spec.deadline_s)
        except requests.exceptions.RequestException:  # the deadline passed
            timed_out = True
            container.kill()
            status = container.wait(timeout=30)
        ended = time.monotonic()
        reader.join(timeout=10)
        container.reload()
        state = container.attrs["State"]
        return ContainerResult(
            exit_code=None if timed_out else status.get("StatusCode"),
            timed_out=timed_out,
            oom_killed=bool(state.get("OOMKilled")),
            log_tail=tail_of(log_path),
            start_seconds=started - created,
            run_seconds=ended - started,
            error=((status.get("Error") or {}).get("Message") or ""),
        )
    finally:
        container.remove(force=True)


def _copy_stream(stream, log_path: Path, on_line: Callable[[str], None] | None) -> None:
    """Append the container's output to log_path as it comes; hand each complete line to on_line."""
    pending = b""
    with log_path.open("ab") as log:
        for chunk in stream:
            log.write(chunk)
            log.flush()
            if on_line is None:
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                on_line(line.decode("utf-8", "replace"))
        if on_line is not None and pending:
            on_line(pending.decode("utf-8", "replace"))


def tail_of(path: Path, max_bytes: int = 4000) -> str:
    """The last max_bytes of a log file, decoded leniently."""
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - max_bytes))
        return f.read().decode("utf-8", "replace")

"""Running task code in fresh, hardened containers (docker-py), one container per phase.

Hardened by default: read-only root filesystem, no network, every capability dropped,
no-new-privileges, a non-root user, pid, memory and CPU limits, an init process, a size-capped
tmpfs /tmp, and only the mounts the phase names. Containers are never reused and never
`auto_remove`d: create, attach the log stream, start, wait (killing at the deadline), collect, remove.
"""

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import docker.models.containers
import docker.models.volumes
import docker.types
import requests

from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox.logs import CappedLog
from autoresearch.runner.sandbox.monitor import Monitor, Usage

LABEL = "autoresearch"  # every container carries it, so orphans can be found and removed
USER = "1000:1000"
MAX_LINE_BYTES = 64 * 1024  # longer lines reach on_line cut to this


@dataclass(frozen=True)
class Mount:
    """A host path (or, with volume, a Docker volume's name) seen at target inside the container."""

    source: Path | str
    target: str
    read_only: bool = True
    volume: bool = False


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
    """How a container ended, with timings and resource use measured by the host."""

    exit_code: int | None
    timed_out: bool
    oom_killed: bool
    killed_by: str | None  # the policy limit that made the host kill it, e.g. "memory_cap"
    log_head: str
    log_tail: str
    log_bytes: int
    log_dropped_bytes: int
    start_seconds: float  # from create to running
    run_seconds: float  # from running to exit
    usage: Usage | None = None


# Called once the container runs, with its init's host PID and a function that kills it for a reason;
# returns the Monitor watching it.
Watch = Callable[[int, Callable[[str], None]], Monitor]


def create_container(client: docker.DockerClient, spec: ContainerSpec):
    """Create (not start) the hardened container described by spec."""
    mounts = [
        docker.types.Mount(m.target, str(m.source), type="volume" if m.volume else "bind", read_only=m.read_only)
        for m in spec.mounts
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
    watch: Watch | None = None,
    max_log_bytes: int = 20 * 2**20,
) -> ContainerResult:
    """Run spec to completion or to its deadline, streaming its output to a capped log (and on_line)."""
    created = time.monotonic()
    container = create_container(client, spec)
    log = CappedLog(log_path, max_log_bytes)
    killed_by: list[str] = []

    def kill(reason: str) -> None:
        if not killed_by:
            killed_by.append(reason)
            container.kill()

    monitor = None
    try:
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=True)
        reader = threading.Thread(target=_copy_stream, args=(stream, log, on_line), daemon=True)
        reader.start()
        container.start()
        started = time.monotonic()
        if watch is not None:
            container.reload()
            monitor = watch(container.attrs["State"]["Pid"], kill)
        timed_out = False
        try:
            status = container.wait(timeout=spec.deadline_s)
        except requests.exceptions.RequestException:  # the deadline passed
            timed_out = True
            kill("deadline")
            status = container.wait(timeout=30)
        ended = time.monotonic()
        usage = monitor.stop() if monitor else None
        reader.join(timeout=60)  # the stream ends with the container; this only bounds a stuck engine
        container.reload()
        return ContainerResult(
            exit_code=None if timed_out else status.get("StatusCode"),
            timed_out=timed_out,
            oom_killed=bool(container.attrs["State"].get("OOMKilled")),
            killed_by=None if timed_out or not killed_by else killed_by[0],
            log_head=log.head().decode("utf-8", "replace")[:4000],
            log_tail=log.tail().decode("utf-8", "replace")[-8000:],
            log_bytes=log.bytes_seen,
            log_dropped_bytes=log.bytes_dropped,
            start_seconds=started - created,
            run_seconds=ended - started,
            usage=usage,
        )
    finally:
        if monitor is not None:
            monitor.stop()
        log.close()
        remove_quietly(container)


def _copy_stream(stream, log: CappedLog, on_line: Callable[[str], None] | None) -> None:
    """Copy the container's output into the capped log as it comes; hand each complete line to on_line."""
    pending = b""
    for chunk in stream:
        try:
            log.write(chunk)
        except ValueError:  # the log was closed: the runner gave up waiting for this stream
            return
        if on_line is None:
            continue
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            on_line(line.decode("utf-8", "replace"))
        pending = pending[-MAX_LINE_BYTES:]  # a line without end cannot grow without bound
    if on_line is not None and pending:
        on_line(pending.decode("utf-8", "replace"))


def remove_quietly(container: docker.models.containers.Container) -> None:
    """Remove container; one already gone, or being removed by another runner's clean-up, is fine."""
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress
            raise


def remove_labelled(client: docker.DockerClient, labels: dict[str, str]) -> list[str]:
    """Remove every autoresearch container (then hand-over volume) carrying labels, whoever started it."""
    return remove_orphans(client, labels, lambda pid: False)


def remove_orphans(client: docker.DockerClient, labels: dict[str, str], alive: Callable[[int], bool]) -> list[str]:
    """Remove containers, then hand-over volumes, carrying labels whose runner (label autoresearch.runner_pid)
    is gone."""
    filters = {"label": [LABEL, *(f"{k}={v}" for k, v in labels.items())]}

    def orphaned(labels_of: dict[str, str] | None) -> bool:
        pid = (labels_of or {}).get("autoresearch.runner_pid", "")
        return not (pid.isdigit() and alive(int(pid)))

    removed = []
    for container in client.containers.list(all=True, filters=filters):
        if orphaned(container.labels):
            remove_quietly(container)
            removed.append(container.name)
    for volume in client.volumes.list(filters=filters):
        if orphaned(volume.attrs.get("Labels")):
            remove_volume_quietly(volume)
            removed.append(volume.name)
    return removed


def remove_volume_quietly(volume) -> None:
    """Remove a volume; one already gone is fine."""
    with contextlib.suppress(docker.errors.NotFound):
        volume.remove(force=True)


# ---------------------------------------------------------------------------------------------------
# The hand-over: a size-capped tmpfs volume that only the two phases of one experiment see


HANDOVER_MAX_FILES = 16  # inodes of the hand-over filesystem: its root and a few entries, never a tree


@dataclass
class Handover:
    """A per-experiment tmpfs volume (size and inode capped) where training leaves its model.

    tmpfs is the structural cap: a candidate that writes more gets ENOSPC, and nothing it writes ever
    reaches the host's disk. Docker unmounts a tmpfs volume (losing its content) once no container uses
    it, so a keeper container holds it between the training and the scoring phases. The runner never
    reads it: the scorer, trusted code, checks it without following links.
    """

    volume: docker.models.volumes.Volume
    keeper: docker.models.containers.Container

    def mount(self, target: str = "/handover", read_only: bool = True) -> Mount:
        return Mount(self.volume.name, target, read_only=read_only, volume=True)

    def release(self) -> None:
        """Remove the keeper, then the volume (and with it the model); safe to call twice."""
        remove_quietly(self.keeper)
        remove_volume_quietly(self.volume)


def open_handover(client: docker.DockerClient, image: str, size_mb: int, labels: dict[str, str]) -> Handover:
    """Create the hand-over volume and start its keeper."""
    name = f"autoresearch-handover-{uuid.uuid4().hex[:16]}"
    uid, gid = USER.split(":")
    options = f"size={size_mb}m,nr_inodes={HANDOVER_MAX_FILES},uid={uid},gid={gid},mode=0700"
    volume = client.volumes.create(name, driver="local", labels={LABEL: "1", **labels},
                                   driver_opts={"type": "tmpfs", "device": "tmpfs", "o": options})
    spec = ContainerSpec(image=image, command=["sleep", "infinity"], mounts=[Mount(name, "/handover", volume=True)],
                         labels={**labels, "autoresearch.phase": "handover"}, memory="64m", pids_limit=8,
                         tmpfs_size="1m")
    try:
        keeper = create_container(client, spec)
        keeper.start()
    except BaseException:
        remove_volume_quietly(volume)
        raise
    return Handover(volume, keeper)

"""The docker provider: each phase in a fresh, hardened container (docker-py).

Hardened by default: read-only root filesystem, no network, every capability dropped,
no-new-privileges, a non-root user, pid, memory and CPU limits, an init process, a size-capped
tmpfs /tmp (nosuid, nodev, but exec: torch.compile loads the kernels it builds there), and only the
mounts the phase names. Containers are never reused and never `auto_remove`d: create, attach the log
stream, start, wait (killing at the deadline), collect, remove.
An engine that fails or goes away is a SandboxUnavailable, whatever docker-py or requests raised.
"""

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import docker.models.containers
import docker.models.volumes
import docker.types
import requests

from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox.base import (
    DEADLINE,
    LABEL,
    PHASE_LABEL,
    PHASE_UID,
    Mount,
    PhaseResult,
    PhaseSpec,
    Resources,
    SandboxUnavailable,
    Watch,
    ended_phase,
    runner_gone,
)
from autoresearch.runner.sandbox.engine import connect
from autoresearch.runner.sandbox.images import require_image
from autoresearch.runner.sandbox.logs import CappedLog, copy_lines

USER = f"{PHASE_UID}:{PHASE_UID}"
ENGINE_GRACE_S = 120  # past a phase's deadline, how long the engine may take to report its end
HANDOVER_MAX_FILES = 16  # inodes of the hand-over filesystem: its root and a few entries, never a tree


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """docker-py's and requests' failures as SandboxUnavailable (the engine failed or went away)."""
    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise SandboxUnavailable(f"the Docker engine failed ({str(exc).splitlines()[0][:200]})") from exc


class DockerSandbox:
    """Phases in hardened containers of the local Docker engine."""

    name = "docker"
    isolated = True

    def __init__(self, client: docker.DockerClient):
        self.client = client

    @classmethod
    def open(cls) -> "DockerSandbox":
        try:
            return cls(connect())
        except UserError as exc:
            raise SandboxUnavailable(f"{exc}; on a machine without Docker, [sandbox] provider = \"process\" runs "
                                     "experiments as plain processes, without isolation") from None

    def image(self, flavor: str) -> str:
        return require_image(flavor)

    def image_id(self, image: str) -> str:
        with engine_errors():
            return self.client.images.get(image).id

    def run(self, spec: PhaseSpec, log_path: Path, on_line: Callable[[str], None] | None = None,
            watch: Watch | None = None, max_log_bytes: int = 20 * 2**20) -> PhaseResult:
        with engine_errors():
            return run_container(self.client, spec, log_path, on_line, watch, max_log_bytes)

    def open_handover(self, image: str, size_mb: int, labels: dict[str, str]) -> "VolumeHandover":
        with engine_errors():
            return open_handover(self.client, image, size_mb, labels)

    def remove_orphans(self, labels: dict[str, str], alive: Callable[[int], bool]) -> list[str]:
        with engine_errors():
            return remove_orphans(self.client, labels, alive)

    def notice(self) -> str:
        return "docker sandbox: each phase in a fresh hardened container, without network"

    def reachable(self) -> bool:
        try:
            connect(timeout=5).close()
        except UserError:
            return False
        return True

    def close(self) -> None:
        self.client.close()


def create_container(client: docker.DockerClient, spec: PhaseSpec):
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
    limits = spec.resources
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
            tmpfs={"/tmp": f"rw,exec,nosuid,nodev,size={limits.tmpfs_size}"},  # exec: see the docstring
            network_mode="bridge" if spec.network else "none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=limits.pids_limit,
            mem_limit=limits.memory,
            memswap_limit=limits.memory,
            nano_cpus=int(limits.cpus * 1e9) if limits.cpus else None,
            cpuset_cpus=limits.cpuset,
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
    spec: PhaseSpec,
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
    watch: Watch | None = None,
    max_log_bytes: int = 20 * 2**20,
) -> PhaseResult:
    """Run spec to completion or to its deadline, streaming its output to a capped log (and on_line)."""
    created = time.monotonic()
    container = create_container(client, spec)
    log = CappedLog(log_path, max_log_bytes)
    killed_by: list[str] = []

    def kill(reason: str) -> None:
        if not killed_by:
            killed_by.append(reason)
            with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
                container.kill()

    monitor = None
    deadline = threading.Timer(spec.deadline_s, kill, (DEADLINE,))
    deadline.daemon = True
    try:
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=True)
        reader = threading.Thread(target=copy_lines, args=(stream, log, on_line), daemon=True)
        reader.start()
        container.start()
        started = time.monotonic()
        deadline.start()
        if watch is not None:
            container.reload()
            monitor = watch(container.attrs["State"]["Pid"], kill)
        status = container.wait(timeout=spec.deadline_s + ENGINE_GRACE_S)
        ended = time.monotonic()
        deadline.cancel()
        usage = monitor.stop() if monitor else None
        reader.join(timeout=60)  # the stream ends with the container; this only bounds a stuck engine
        container.reload()
        return ended_phase(log, exit_code=status.get("StatusCode"),
                           oom_killed=bool(container.attrs["State"].get("OOMKilled")),
                           killed_by=killed_by[0] if killed_by else None, start_seconds=started - created,
                           run_seconds=ended - started, usage=usage)
    finally:
        deadline.cancel()
        if monitor is not None:
            monitor.stop()
        log.close()
        remove_quietly(container)


def remove_quietly(container: docker.models.containers.Container) -> None:
    """Remove container; one already gone, or being removed by another runner's clean-up, is fine."""
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress
            raise


def remove_orphans(client: docker.DockerClient, labels: dict[str, str], alive: Callable[[int], bool]) -> list[str]:
    """Remove containers, then hand-over volumes, carrying labels whose runner (RUNNER_PID_LABEL) is gone."""
    filters = {"label": [LABEL, *(f"{k}={v}" for k, v in labels.items())]}

    removed = []
    for container in client.containers.list(all=True, filters=filters):
        if runner_gone(container.labels or {}, alive):
            remove_quietly(container)
            removed.append(container.name)
    for volume in client.volumes.list(filters=filters):
        if runner_gone(volume.attrs.get("Labels") or {}, alive):
            remove_volume_quietly(volume)
            removed.append(volume.name)
    return removed


def remove_volume_quietly(volume) -> None:
    """Remove a volume; one already gone is fine."""
    with contextlib.suppress(docker.errors.NotFound):
        volume.remove(force=True)


@dataclass
class VolumeHandover:
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
        with engine_errors():
            remove_quietly(self.keeper)
            remove_volume_quietly(self.volume)


def open_handover(client: docker.DockerClient, image: str, size_mb: int, labels: dict[str, str]) -> VolumeHandover:
    """Create the hand-over volume and start its keeper."""
    name = f"autoresearch-handover-{uuid.uuid4().hex[:16]}"
    uid, gid = USER.split(":")
    options = f"size={size_mb}m,nr_inodes={HANDOVER_MAX_FILES},uid={uid},gid={gid},mode=0700"
    volume = client.volumes.create(name, driver="local", labels={LABEL: "1", **labels},
                                   driver_opts={"type": "tmpfs", "device": "tmpfs", "o": options})
    spec = PhaseSpec(image=image, command=["sleep", "infinity"], mounts=[Mount(name, "/handover", volume=True)],
                     labels={**labels, PHASE_LABEL: "handover"},
                     resources=Resources(memory="64m", pids_limit=8, tmpfs_size="1m"))
    try:
        keeper = create_container(client, spec)
        keeper.start()
    except BaseException:
        remove_volume_quietly(volume)
        raise
    return VolumeHandover(volume, keeper)

"""Watching a running container from the host: GPU through NVML, CPU through its cgroup, memory through psutil.

The monitor samples about twice a second, in a thread, while one phase's container runs. It finds
the container's processes as the descendants of its init process (host PIDs), so it sees exactly the
experiment's processes whatever they call themselves. With an NVIDIA driver it reads the assigned
GPU (utilisation, memory, power, temperature) and the GPU memory of those processes; it integrates
GPU-busy seconds (utilisation x time) and keeps the peak VRAM. Without a driver the same interface
reports the processes' CPU and resident memory, and says so (kind "psutil"). Either way, when the
watched memory passes the cap, or the files the container may write (the hand-over folder, its
train.py) grow past their cap, it calls `kill` once with the reason ("memory_cap", "disk_cap"). On a
machine without a GPU the memory cap applies to resident memory: the same enforcement path, simulated.

GPU or not, it also counts the container's CPU seconds (`Usage.cpu_seconds`) from the container's own
cgroup (cgroup v2 cpu.stat, or v1 cpuacct.usage): the kernel's count of every process the container
ever ran, exited ones included. Where no cgroup of the container's own is readable it falls back to
psutil's sum over the processes it saw, and `Usage.note` says which.
"""

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import psutil

try:
    import pynvml
except ImportError:  # nvidia-ml-py is a dependency, but keep the CPU path alive without it
    pynvml = None


@dataclass(frozen=True)
class Sample:
    """One reading of the watched device and the container's processes."""

    recorded_at: float
    device: str  # "gpu0", ... or "cpu"
    kind: str  # "nvml" or "psutil"
    util_percent: float
    mem_used_mb: float  # whole device (GPU) or whole machine (CPU)
    mem_total_mb: float
    proc_mem_mb: float  # the container's processes only
    power_w: float | None = None
    temp_c: float | None = None


@dataclass
class Usage:
    """What the monitor measured over one phase."""

    kind: str
    note: str
    samples_taken: int = 0  # each goes to on_sample (the store); none is kept here
    busy_seconds: float = 0.0  # GPU-busy seconds (nvml) or CPU seconds of the processes (psutil)
    cpu_seconds: float = 0.0  # the container's CPU seconds, GPU or not (cgroup, else psutil: see note)
    peak_mem_mb: float = 0.0  # peak memory of the container's processes (VRAM with nvml, RSS with psutil)
    limit_hit: str | None = None  # "memory_cap" or "disk_cap", when the monitor had the container killed
    peak_disk_bytes: int = 0
    compute_trace: list[tuple[float, float]] = field(default_factory=list)  # (monotonic time, compute so far)

    @property
    def compute(self) -> float:
        """The compute the budget rules meter: GPU-busy seconds with NVML, the container's CPU seconds without."""
        return self.busy_seconds if self.kind == "nvml" else self.cpu_seconds

    def compute_at(self, moment: float) -> float:
        """Compute done by a monotonic moment, interpolated between samples (0 before the first)."""
        earlier = [(t, c) for t, c in self.compute_trace if t <= moment]
        later = [(t, c) for t, c in self.compute_trace if t > moment]
        if not earlier or not later:
            return earlier[-1][1] if earlier else 0.0
        (t0, c0), (t1, c1) = earlier[-1], later[0]
        return c0 + (c1 - c0) * (moment - t0) / (t1 - t0)


def container_processes(init_pid: int) -> list[psutil.Process]:
    """The container's init and every descendant (orphans are re-parented to init inside the container)."""
    try:
        init = psutil.Process(init_pid)
        return [init, *init.children(recursive=True)]
    except psutil.Error:
        return []


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_ROOT = Path("/proc")


@dataclass(frozen=True)
class CgroupCpu:
    """A cgroup's CPU-time counter: cpu.stat's usage_usec (v2) or cpuacct.usage in nanoseconds (v1)."""

    version: int
    path: str  # the cgroup as /proc/<pid>/cgroup names it, e.g. /system.slice/docker-<id>.scope
    file: Path

    def seconds(self) -> float | None:
        """CPU seconds of every process the cgroup ever held; None once it is gone or unreadable."""
        try:
            text = self.file.read_text()
        except OSError:
            return None
        return _cpuacct_seconds(text) if self.version == 1 else _cpu_stat_seconds(text)


def _cpu_stat_seconds(text: str) -> float | None:
    """usage_usec of a v2 cpu.stat, in seconds."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec" and value.strip().isdigit():
            return int(value) / 1e6
    return None


def _cpuacct_seconds(text: str) -> float | None:
    """A v1 cpuacct.usage (nanoseconds), in seconds."""
    return int(text) / 1e9 if text.strip().isdigit() else None


def cgroup_cpu_counters(pid: int, cgroup_root: Path = CGROUP_ROOT, proc_root: Path = PROC_ROOT) -> list[CgroupCpu]:
    """The readable CPU counters of pid's cgroups, in /proc/<pid>/cgroup's order; [] when none is."""
    try:
        lines = (proc_root / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return []
    return [counter for counter in _counters(lines, cgroup_root) if counter.seconds() is not None]


def _counters(lines: list[str], root: Path) -> Iterator[CgroupCpu]:
    """Where each hierarchy of /proc/<pid>/cgroup lines ("id:controllers:path") keeps its CPU counter."""
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        parts = PurePosixPath(path).parts
        if parts[:1] != ("/",) or ".." in parts:
            continue  # outside this cgroup namespace's view of the hierarchy
        if hierarchy == "0" and not controllers:
            yield CgroupCpu(2, path, root.joinpath(*parts[1:], "cpu.stat"))
        elif "cpuacct" in controllers.split(","):
            for mount in dict.fromkeys((controllers, "cpuacct")):  # e.g. cpu,cpuacct/ or cpuacct/
                yield CgroupCpu(1, path, root.joinpath(mount, *parts[1:], "cpuacct.usage"))


def open_cgroup(pid: int, cgroup_root: Path, proc_root: Path) -> tuple[CgroupCpu | None, str]:
    """The container's own CPU counter, or None and why its CPU seconds come from psutil instead."""
    counters = cgroup_cpu_counters(pid, cgroup_root, proc_root)
    own = next((counter for counter in counters if counter.path != "/"), None)
    if own is not None:
        return own, f"CPU seconds from cgroup v{own.version} {own.path}"
    reason = "the container is in the root cgroup, which counts the whole machine" if counters else "no cgroup"
    return None, f"CPU seconds from psutil ({reason})"


class NvmlDevice:
    """One GPU, addressed by UUID, read through a long-lived NVML context."""

    def __init__(self, uuid: str):
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        self.index = pynvml.nvmlDeviceGetIndex(self.handle)

    def read(self, pids: set[int]) -> Sample:
        h = self.handle
        memory = pynvml.nvmlDeviceGetMemoryInfo(h)
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
        proc_mem = sum((p.usedGpuMemory or 0) for p in procs if p.pid in pids)
        return Sample(
            recorded_at=time.time(),
            device=f"gpu{self.index}",
            kind="nvml",
            util_percent=float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
            mem_used_mb=memory.used / 2**20,
            mem_total_mb=memory.total / 2**20,
            proc_mem_mb=proc_mem / 2**20,
            power_w=_or_none(lambda: pynvml.nvmlDeviceGetPowerUsage(h) / 1000),
            temp_c=_or_none(lambda: float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))),
        )

    def close(self) -> None:
        pynvml.nvmlShutdown()


def _or_none(read: Callable[[], float]) -> float | None:
    """A reading that some GPUs do not support becomes None ("N/A"), never an error."""
    try:
        return read()
    except pynvml.NVMLError:
        return None


def open_gpu(uuid: str | None) -> tuple[NvmlDevice | None, str]:
    """An NVML device for uuid, or None and the reason the CPU path is used instead."""
    if uuid is None:
        return None, "no GPU assigned: reporting CPU and memory from psutil"
    if pynvml is None:
        return None, "nvidia-ml-py is not installed: reporting CPU and memory from psutil"
    try:
        return NvmlDevice(uuid), f"NVML on GPU {uuid}"
    except pynvml.NVMLError as exc:
        return None, f"no NVIDIA driver ({exc}): reporting CPU and memory from psutil"


def read_cpu(processes: list[psutil.Process]) -> Sample:
    """A psutil sample of the processes."""
    rss, cpu_percent = 0, 0.0
    for proc in processes:
        try:
            with proc.oneshot():
                rss += proc.memory_info().rss
                cpu_percent += proc.cpu_percent()
        except psutil.Error:
            continue
    vm = psutil.virtual_memory()
    return Sample(time.time(), "cpu", "psutil", cpu_percent, (vm.total - vm.available) / 2**20, vm.total / 2**20,
                  rss / 2**20)


def cpu_seconds_of(processes: list[psutil.Process]) -> float:
    """CPU seconds of the processes and of the children they reaped (a child that exited still counts)."""
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def bytes_under(paths: list[Path]) -> int:
    """Total size of the files at or directly under paths (the hand-over folder is flat)."""
    total = 0
    for path in paths:
        try:
            if path.is_dir():
                total += sum(e.stat(follow_symlinks=False).st_size for e in os.scandir(path))
            else:
                total += path.stat().st_size
        except OSError:
            continue
    return total


SKIPPED = "skipped"  # the kill reason when the runner cancels a container on the user's request
GPU_LOST = "gpu_lost"  # the kill reason when NVML fails mid-phase: a phase the host cannot meter does not go on


class Monitor:
    """Samples a container's resource use in a background thread; stop() returns the Usage."""

    def __init__(self, init_pid: int, gpu_uuid: str | None, kill: Callable[[str], None], *,
                 mem_cap_mb: float | None = None, disk_paths: tuple[Path, ...] = (), disk_cap_bytes: int = 0,
                 on_sample: Callable[[Sample], None] | None = None, interval_s: float = 0.5,
                 cancel: threading.Event | None = None, cgroup_root: Path = CGROUP_ROOT, proc_root: Path = PROC_ROOT):
        """cancel: set by the runner to kill the container at the next sample (the user skipped it).

        cgroup_root, proc_root: the host's cgroup hierarchy and /proc (tests pass fake ones).
        """
        self.init_pid, self.kill, self.on_sample, self.interval_s = init_pid, kill, on_sample, interval_s
        self.cancel = cancel
        self.mem_cap_mb, self.disk_paths, self.disk_cap_bytes = mem_cap_mb, list(disk_paths), disk_cap_bytes
        self.gpu, note = open_gpu(gpu_uuid)
        self.cgroup, cpu_note = open_cgroup(init_pid, cgroup_root, proc_root)
        self.usage = Usage(kind="nvml" if self.gpu else "psutil", note=f"{note}; {cpu_note}")
        self._tracked: dict[int, psutil.Process] = {}  # kept so CPU seconds of exited children still count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="monitor", daemon=True)

    def start(self) -> "Monitor":
        self._thread.start()
        return self

    def stop(self) -> Usage:
        """Stop sampling (idempotent), take a last CPU reading and return what was measured."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=5)
            self._count_cpu()
            self.usage.compute_trace.append((time.monotonic(), self.usage.compute))
            if self.gpu:
                with contextlib.suppress(pynvml.NVMLError):  # a lost GPU may not shut down cleanly
                    self.gpu.close()
        return self.usage

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            for proc in container_processes(self.init_pid):
                self._tracked.setdefault(proc.pid, proc)
            live = [p for p in self._tracked.values() if p.is_running()]
            now = time.monotonic()
            # psutil's CPU count, summed once a sample where the busy seconds or cpu_seconds need it
            counted = cpu_seconds_of(live) if self.gpu is None or self.cgroup is None else None
            if self.gpu and self.usage.limit_hit != GPU_LOST:
                try:
                    sample = self.gpu.read({p.pid for p in live})
                    self.usage.busy_seconds += sample.util_percent / 100 * (now - last)
                except pynvml.NVMLError as exc:  # the driver or the GPU went away: nothing can meter the phase
                    self.usage.note += f"; NVML failed mid-phase ({exc}): GPU readings end here"
                    self._limit(GPU_LOST)
                    sample = read_cpu(live)
            else:
                sample = read_cpu(live)
                self.usage.busy_seconds = max(self.usage.busy_seconds, counted)
            last = now
            self._count_cpu(counted)
            self.usage.compute_trace.append((now, self.usage.compute))
            self._record(sample)
            self._check_disk()
            if self.cancel is not None and self.cancel.is_set():
                self.kill(SKIPPED)
            self._stop.wait(self.interval_s)

    def _count_cpu(self, counted: float | None = None) -> None:
        """Raise cpu_seconds to the latest reading (the cgroup's, else psutil's: counted, or summed now); a
        cgroup or processes already gone keep the last one."""
        if self.cgroup is not None:
            seconds = self.cgroup.seconds()
        elif counted is not None:
            seconds = counted
        else:
            seconds = cpu_seconds_of([proc for proc in list(self._tracked.values()) if proc.is_running()])
        if seconds is not None:
            self.usage.cpu_seconds = max(self.usage.cpu_seconds, seconds)

    def _record(self, sample: Sample) -> None:
        self.usage.samples_taken += 1
        self.usage.peak_mem_mb = max(self.usage.peak_mem_mb, sample.proc_mem_mb)
        if self.on_sample is not None:
            self.on_sample(sample)
        if self.mem_cap_mb and sample.proc_mem_mb > self.mem_cap_mb:
            self._limit("memory_cap")

    def _check_disk(self) -> None:
        if not self.disk_cap_bytes:
            return
        size = bytes_under(self.disk_paths)
        self.usage.peak_disk_bytes = max(self.usage.peak_disk_bytes, size)
        if size > self.disk_cap_bytes:
            self._limit("disk_cap")

    def _limit(self, reason: str) -> None:
        if self.usage.limit_hit is None:
            self.usage.limit_hit = reason
            self.kill(reason)

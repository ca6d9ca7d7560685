"""Watching a running container from the host: GPU through NVML, CPU and memory through psutil.

The monitor samples about twice a second, in a thread, while one phase's container runs. It finds
the container's processes as the descendants of its init process (host PIDs), so it sees exactly the
experiment's processes whatever they call themselves. With an NVIDIA driver it reads the assigned
GPU (utilisation, memory, power, temperature) and the GPU memory of those processes; it integrates
GPU-busy seconds (utilisation x time) and keeps the peak VRAM. Without a driver the same interface
reports the processes' CPU and resident memory, and says so (kind "psutil"). Either way, when the
watched memory passes the cap, or the files the container may write (the hand-over folder, its
train.py) grow past their cap, it calls `kill` once with the reason ("memory_cap", "disk_cap"). On a
machine without a GPU the memory cap applies to resident memory: the same enforcement path, simulated.
"""

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
    samples: list[Sample] = field(default_factory=list)
    busy_seconds: float = 0.0  # GPU-busy seconds (nvml) or CPU seconds of the processes (psutil)
    peak_mem_mb: float = 0.0  # peak memory of the container's processes (VRAM with nvml, RSS with psutil)
    limit_hit: str | None = None  # "memory_cap" or "disk_cap", when the monitor had the container killed
    peak_disk_bytes: int = 0


def container_processes(init_pid: int) -> list[psutil.Process]:
    """The container's init and every descendant (orphans are re-parented to init inside the container)."""
    try:
        init = psutil.Process(init_pid)
        return [init, *init.children(recursive=True)]
    except psutil.Error:
        return []


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


def read_cpu(processes: list[psutil.Process]) -> tuple[Sample, float]:
    """A psutil sample of the processes, and their total CPU seconds so far."""
    rss, cpu_seconds, cpu_percent = 0, 0.0, 0.0
    for proc in processes:
        try:
            with proc.oneshot():
                rss += proc.memory_info().rss
                times = proc.cpu_times()
                cpu_seconds += times.user + times.system
                cpu_percent += proc.cpu_percent()
        except psutil.Error:
            continue
    vm = psutil.virtual_memory()
    sample = Sample(time.time(), "cpu", "psutil", cpu_percent, (vm.total - vm.available) / 2**20,
                    vm.total / 2**20, rss / 2**20)
    return sample, cpu_seconds


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


class Monitor:
    """Samples a container's resource use in a background thread; stop() returns the Usage."""

    def __init__(self, init_pid: int, gpu_uuid: str | None, kill: Callable[[str], None], *,
                 mem_cap_mb: float | None = None, disk_paths: tuple[Path, ...] = (), disk_cap_bytes: int = 0,
                 on_sample: Callable[[Sample], None] | None = None, interval_s: float = 0.5,
                 cancel: threading.Event | None = None):
        """cancel: set by the runner to kill the container at the next sample (the user skipped it)."""
        self.init_pid, self.kill, self.on_sample, self.interval_s = init_pid, kill, on_sample, interval_s
        self.cancel = cancel
        self.mem_cap_mb, self.disk_paths, self.disk_cap_bytes = mem_cap_mb, list(disk_paths), disk_cap_bytes
        self.gpu, note = open_gpu(gpu_uuid)
        self.usage = Usage(kind="nvml" if self.gpu else "psutil", note=note)
        self._tracked: dict[int, psutil.Process] = {}  # kept so CPU seconds of exited children still count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="monitor", daemon=True)

    def start(self) -> "Monitor":
        self._thread.start()
        return self

    def stop(self) -> Usage:
        """Stop sampling (idempotent) and return what was measured."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=5)
            if self.gpu:
                self.gpu.close()
        return self.usage

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            for proc in container_processes(self.init_pid):
                self._tracked.setdefault(proc.pid, proc)
            live = [p for p in self._tracked.values() if p.is_running()]
            now = time.monotonic()
            if self.gpu:
                sample = self.gpu.read({p.pid for p in live})
                self.usage.busy_seconds += sample.util_percent / 100 * (now - last)
            else:
                sample, cpu_seconds = read_cpu(live)
                self.usage.busy_seconds = max(self.usage.busy_seconds, cpu_seconds)
            last = now
            self._record(sample)
            self._check_disk()
            if self.cancel is not None and self.cancel.is_set():
                self.kill(SKIPPED)
            self._stop.wait(self.interval_s)

    def _record(self, sample: Sample) -> None:
        self.usage.samples.append(sample)
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

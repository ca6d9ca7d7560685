"""A stand-in for pynvml where no NVIDIA driver exists: it replays a trace of readings per GPU.

Only the calls the runner makes are here, with pynvml's own exception classes (so the runner's error
handling is the real one). The trace (tests/data/nvml_trace.json) is synthetic, in the shape NVML reports
for an 80 GB GPU through one training phase (a trace recorded on a real GPU with the same keys can
replace it). Each GPU has a list of readings, one per
nvmlDeviceGetUtilizationRates call: utilisation, memory used, power and temperature, and the memory of
the processes using the GPU. Reading past its end repeats the last reading; a reading with "lost": true
raises NVMLError_GpuIsLost from then on, as a GPU that fell off the bus does. Tests that need a real
driver use the real pynvml instead (tests/test_nvml.py picks which).
"""

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pynvml

TRACE = Path(__file__).parent / "data" / "nvml_trace.json"
MIB = 2**20


def driver_present() -> bool:
    """Whether a real NVIDIA driver answers here (then the fake steps aside)."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@dataclass
class FakeGpu:
    uuid: str
    index: int
    total_mb: float
    readings: list[dict]
    position: int = 0
    lost: bool = False


class FakeNvml:
    """The module-level API of pynvml, for the GPUs of a trace."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_FEATURE_ENABLED = pynvml.NVML_FEATURE_ENABLED
    NVML_FEATURE_DISABLED = pynvml.NVML_FEATURE_DISABLED

    def __init__(self, trace: dict, pids: set[int] = frozenset()):
        self.gpus = [FakeGpu(g["uuid"], i, g["total_mb"], g["readings"]) for i, g in enumerate(trace["gpus"])]
        self.pids = set(pids)  # the processes the trace's process memory is attributed to
        self.initialised = 0
        self.power_supported = trace.get("power_supported", True)
        self.driver = trace.get("driver", "550.54.15")
        self.name = trace.get("name", "NVIDIA H100 80GB HBM3")
        self.persistence = trace.get("persistence", True)

    @classmethod
    def recorded(cls, pids: set[int] = frozenset()) -> "FakeNvml":
        return cls(json.loads(TRACE.read_text()), pids)

    # --- the calls the runner makes

    def nvmlInit(self) -> None:
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        if self.initialised == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._ready()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._ready()
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> FakeGpu:
        self._ready()
        wanted = uuid.decode() if isinstance(uuid, bytes) else uuid
        for gpu in self.gpus:
            if gpu.uuid == wanted:
                return gpu
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlSystemGetDriverVersion(self) -> str:
        self._ready()
        return self.driver

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str:
        return self.name

    def nvmlDeviceGetPersistenceMode(self, gpu: FakeGpu) -> int:
        return pynvml.NVML_FEATURE_ENABLED if self.persistence else pynvml.NVML_FEATURE_DISABLED

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        return gpu.uuid

    def nvmlDeviceGetIndex(self, gpu: FakeGpu) -> int:
        return gpu.index

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> SimpleNamespace:
        reading = self._advance(gpu)
        return SimpleNamespace(gpu=reading["util_percent"], memory=reading["util_percent"])

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> SimpleNamespace:
        reading = self._current(gpu)
        used = reading["mem_used_mb"] * MIB
        return SimpleNamespace(total=gpu.total_mb * MIB, used=used, free=gpu.total_mb * MIB - used)

    def nvmlDeviceGetComputeRunningProcesses(self, gpu: FakeGpu) -> list[SimpleNamespace]:
        reading = self._current(gpu)
        others = [SimpleNamespace(pid=1, usedGpuMemory=reading.get("other_mem_mb", 0) * MIB)]
        mine = [SimpleNamespace(pid=pid, usedGpuMemory=reading["proc_mem_mb"] * MIB / len(self.pids))
                for pid in sorted(self.pids)]
        return others + mine

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        if not self.power_supported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return int(self._current(gpu)["power_w"] * 1000)

    def nvmlDeviceGetTemperature(self, gpu: FakeGpu, sensor: int) -> int:
        return int(self._current(gpu)["temp_c"])

    # --- the trace

    def _ready(self) -> None:
        if self.initialised == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _current(self, gpu: FakeGpu) -> dict:
        self._ready()
        reading = gpu.readings[min(gpu.position, len(gpu.readings) - 1)]
        if gpu.lost or reading.get("lost"):
            gpu.lost = True
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return reading

    def _advance(self, gpu: FakeGpu) -> dict:
        reading = self._current(gpu)
        gpu.position += 1
        return reading

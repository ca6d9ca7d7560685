"""The NVML path at its boundary: sampling, GPU-busy seconds, the VRAM cap, a driver that disappears.

Where no NVIDIA driver exists (here, CI) NVML is replaced by tests/fake_nvml.py, which replays a trace
with pynvml's own exceptions; with a driver present those tests skip (they script readings a real GPU
does not give) and test_a_real_driver_reads_gpu_0 runs instead.
"""

import subprocess
import sys
import time

import pynvml
import pytest

from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox import gpus, monitor
from tests.fake_nvml import FakeNvml, driver_present

REAL_DRIVER = driver_present()
needs_fake = pytest.mark.skipif(REAL_DRIVER, reason="an NVIDIA driver is present: the fake NVML is only for "
                                                    "machines without one (test_a_real_driver_reads_gpu_0 runs)")


@pytest.fixture
def child():
    """A real process for the monitor to watch (its pid is the 'container' init)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def nvml(monkeypatch, child) -> FakeNvml:
    fake = FakeNvml.recorded(pids={child.pid})
    monkeypatch.setattr(monitor, "pynvml", fake)
    monkeypatch.setattr(gpus, "pynvml", fake)
    return fake


def uuid_of(fake: FakeNvml, index: int = 0) -> str:
    return fake.gpus[index].uuid


def watch(child, uuid: str, **options) -> tuple[monitor.Monitor, list[str]]:
    kills: list[str] = []
    return monitor.Monitor(child.pid, uuid, kills.append, interval_s=0.05, **options).start(), kills


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@needs_fake
def test_a_sample_reads_the_device_and_only_the_watched_processes_memory(nvml, child):
    device, note = monitor.open_gpu(uuid_of(nvml))
    assert note == f"NVML on GPU {uuid_of(nvml)}"
    for _ in range(10):  # past the warm-up readings
        sample = device.read({child.pid})
    assert (sample.device, sample.kind) == ("gpu0", "nvml")
    assert sample.util_percent == 97.0 and sample.mem_total_mb == 81559
    assert sample.proc_mem_mb == pytest.approx(30400)  # the other process's memory is not the experiment's
    assert (sample.power_w, sample.temp_c) == (pytest.approx(612.3), 58.0)
    device.close()
    assert nvml.initialised == 0


@needs_fake
def test_a_reading_the_gpu_does_not_support_is_none_not_an_error(nvml, child):
    nvml.power_supported = False
    device, _ = monitor.open_gpu(uuid_of(nvml))
    assert device.read({child.pid}).power_w is None
    device.close()


@needs_fake
def test_gpu_busy_seconds_integrate_utilisation_over_time(nvml, child):
    for gpu in nvml.gpus:  # a constant 50% load
        gpu.readings = [{"util_percent": 50, "mem_used_mb": 1000, "proc_mem_mb": 900, "power_w": 300, "temp_c": 50}]
    watcher, kills = watch(child, uuid_of(nvml))
    time.sleep(1.0)
    usage = watcher.stop()
    assert usage.kind == "nvml" and usage.compute == usage.busy_seconds
    assert usage.busy_seconds == pytest.approx(0.5, abs=0.15)
    assert usage.peak_mem_mb == pytest.approx(900) and kills == []


@needs_fake
def test_the_vram_cap_kills_once_when_the_experiments_memory_passes_it(nvml, child):
    watcher, kills = watch(child, uuid_of(nvml), mem_cap_mb=20_000)
    wait_until(lambda: kills)
    time.sleep(0.2)
    usage = watcher.stop()
    assert kills == ["memory_cap"] and usage.limit_hit == "memory_cap"
    assert usage.peak_mem_mb > 20_000


@needs_fake
def test_a_driver_that_disappears_mid_phase_stops_the_phase_it_can_no_longer_meter(nvml, child):
    nvml.gpus[0].readings = [*nvml.gpus[0].readings[:8], {"lost": True}]
    watcher, kills = watch(child, uuid_of(nvml), mem_cap_mb=60_000)
    wait_until(lambda: kills)
    usage = watcher.stop()
    assert kills == ["gpu_lost"] and usage.limit_hit == "gpu_lost"
    assert "GPU is lost" in usage.note  # what NVML said, kept with the measurement
    assert usage.busy_seconds > 0  # what was metered before the loss is kept


@needs_fake
def test_the_assigned_gpu_by_index_or_uuid_and_clear_errors(nvml):
    assert gpus.assigned_gpu([], "cuda") == uuid_of(nvml, 0)
    assert gpus.assigned_gpu(["1"], "cuda") == uuid_of(nvml, 1)
    assert gpus.assigned_gpu([uuid_of(nvml, 1)], "cuda") == uuid_of(nvml, 1)
    assert gpus.assigned_gpu(["0"], "cpu") is None
    with pytest.raises(UserError, match="names GPU 2, but this machine has 2"):
        gpus.assigned_gpu(["2"], "cuda")
    with pytest.raises(UserError, match="not one of this machine's GPUs"):
        gpus.assigned_gpu(["GPU-nope"], "cuda")
    assert nvml.initialised == 0  # every lookup shut NVML down again


def test_no_driver_means_the_cpu_path_with_the_reason(monkeypatch):
    class NoDriver(FakeNvml):
        def nvmlInit(self) -> None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    absent = NoDriver({"gpus": []})
    monkeypatch.setattr(monitor, "pynvml", absent)
    monkeypatch.setattr(gpus, "pynvml", absent)
    device, note = monitor.open_gpu("GPU-anything")
    assert device is None and note.startswith("no NVIDIA driver (NVML Shared Library Not Found)")
    with pytest.raises(UserError, match="NVML sees none"):
        gpus.assigned_gpu([], "cuda")


@pytest.mark.skipif(not REAL_DRIVER, reason="needs an NVIDIA driver (none here: the fake NVML tests above run)")
def test_a_real_driver_reads_gpu_0():
    uuid = gpus.assigned_gpu([], "cuda")
    device, note = monitor.open_gpu(uuid)
    try:
        sample = device.read(set())
    finally:
        device.close()
    assert note == f"NVML on GPU {uuid}" and sample.kind == "nvml"
    assert 0 <= sample.util_percent <= 100 and sample.mem_total_mb > 0 and sample.proc_mem_mb == 0

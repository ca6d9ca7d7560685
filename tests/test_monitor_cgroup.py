"""The monitor's CPU seconds: read from the container's cgroup (v2 or v1), psutil where none is readable."""

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoresearch.runner.sandbox.monitor import CgroupCpu, Monitor, Usage, cgroup_cpu_counters, open_cgroup

BURN_S = 0.5
# Burns BURN_S of CPU after the first line on stdin, says so, and exits after the second.
BURNER = (
    "import sys, time\n"
    "sys.stdin.readline()\n"
    "start = time.process_time()\n"
    f"while time.process_time() - start < {BURN_S}:\n"
    "    pass\n"
    "print('burnt', flush=True)\n"
    "sys.stdin.readline()\n"
)


@pytest.fixture
def burner() -> Iterator[subprocess.Popen]:
    child = subprocess.Popen([sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    yield child
    child.kill()
    child.wait()


def burn(child: subprocess.Popen) -> None:
    """Have the burner burn BURN_S of CPU; returns once it has."""
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline() == "burnt\n"


def wait_for_samples(monitor: Monitor, count: int) -> None:
    deadline = time.monotonic() + 10
    while monitor.usage.samples_taken < count:
        assert time.monotonic() < deadline, "the monitor took no sample"
        time.sleep(0.01)


# -- this machine, for real ----------------------------------------------------------------------------------


def test_the_cgroup_reading_of_a_child_grows_as_it_burns_cpu(burner):
    counters = cgroup_cpu_counters(burner.pid)
    if not counters:
        pytest.skip(reason="this machine exposes no readable cgroup CPU counter for a child process (no "
                           "/sys/fs/cgroup, or its hierarchy is hidden): the fake-root tests below cover the reader")
    before = [counter.seconds() for counter in counters]
    burn(burner)
    after = [counter.seconds() for counter in counters]
    for counter, was, now in zip(counters, before, after, strict=True):
        assert now - was >= BURN_S * 0.95, counter  # its cgroup counts at least the child's own CPU


def test_the_monitor_counts_a_childs_cpu_seconds(burner):
    monitor = Monitor(burner.pid, None, lambda reason: None, interval_s=0.05).start()
    wait_for_samples(monitor, 1)
    burn(burner)
    wait_for_samples(monitor, monitor.usage.samples_taken + 2)
    usage = monitor.stop()
    assert usage.cpu_seconds >= BURN_S * 0.95
    assert "CPU seconds from cgroup v" in usage.note or "CPU seconds from psutil" in usage.note
    assert usage.busy_seconds >= BURN_S * 0.95  # psutil's count on CPU, as before


# -- fake roots ------------------------------------------------------------------------------------------------


def layout(tmp_path: Path, pid: int, cgroup_lines: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake /proc/<pid>/cgroup and a fake /sys/fs/cgroup holding files; (cgroup_root, proc_root)."""
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(cgroup_lines)
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root, proc


V2_STAT = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"


def test_v2_reads_usage_usec_of_the_containers_cgroup(tmp_path):
    scope = "/system.slice/docker-abc.scope"
    root, proc = layout(tmp_path, 42, f"0::{scope}\n", {f"{scope[1:]}/cpu.stat": V2_STAT})
    [counter] = cgroup_cpu_counters(42, root, proc)
    assert counter == CgroupCpu(2, scope, root / "system.slice" / "docker-abc.scope" / "cpu.stat")
    assert counter.seconds() == 2.5
    assert open_cgroup(42, root, proc) == (counter, f"CPU seconds from cgroup v2 {scope}")


@pytest.mark.parametrize("mount", ["cpu,cpuacct", "cpuacct"])
def test_v1_reads_cpuacct_usage_where_the_controller_is_mounted(tmp_path, mount):
    lines = "12:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/system.slice/x\n"
    root, proc = layout(tmp_path, 42, lines, {f"{mount}/docker/abc/cpuacct.usage": "1500000000\n"})
    [counter] = cgroup_cpu_counters(42, root, proc)
    assert (counter.version, counter.path, counter.seconds()) == (1, "/docker/abc", 1.5)
    assert open_cgroup(42, root, proc)[1] == "CPU seconds from cgroup v1 /docker/abc"


def test_no_cgroup_means_psutil(tmp_path):
    root, proc = layout(tmp_path, 42, "0::/docker/abc\n4:cpuacct:/docker/abc\n", {})
    assert cgroup_cpu_counters(42, root, proc) == []
    assert cgroup_cpu_counters(43, root, proc) == []  # no /proc/43
    assert open_cgroup(42, root, proc) == (None, "CPU seconds from psutil (no cgroup)")


@pytest.mark.parametrize("text", ["", "user_usec 5\n", "usage_usec lots\n"])
def test_an_unreadable_counter_is_no_counter(tmp_path, text):
    root, proc = layout(tmp_path, 42, "0::/docker/abc\n", {"docker/abc/cpu.stat": text})
    assert cgroup_cpu_counters(42, root, proc) == []


def test_the_root_cgroup_counts_the_whole_machine_so_psutil_is_used(tmp_path):
    root, proc = layout(tmp_path, 42, "0::/\n", {"cpu.stat": V2_STAT})
    assert [c.path for c in cgroup_cpu_counters(42, root, proc)] == ["/"]
    assert open_cgroup(42, root, proc) == (None, "CPU seconds from psutil (the container is in the root cgroup, "
                                                 "which counts the whole machine)")


def test_a_path_outside_the_namespace_is_skipped(tmp_path):
    root, proc = layout(tmp_path, 42, "0::/../../docker/abc\n", {"docker/abc/cpu.stat": V2_STAT})
    assert cgroup_cpu_counters(42, root, proc) == []


@pytest.fixture
def sleeper() -> Iterator[int]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


def test_the_last_reading_at_stop_counts(tmp_path, sleeper):
    root, proc = layout(tmp_path, sleeper, "0::/docker/abc\n", {"docker/abc/cpu.stat": "usage_usec 1000000\n"})
    monitor = Monitor(sleeper, None, lambda reason: None, interval_s=60, cgroup_root=root, proc_root=proc).start()
    wait_for_samples(monitor, 1)
    assert monitor.usage.cpu_seconds == 1.0
    (root / "docker" / "abc" / "cpu.stat").write_text("usage_usec 5000000\n")
    usage = monitor.stop()
    assert usage.cpu_seconds == 5.0
    assert usage.note.endswith("; CPU seconds from cgroup v2 /docker/abc")


def test_a_cgroup_gone_at_stop_keeps_the_last_reading(tmp_path, sleeper):
    root, proc = layout(tmp_path, sleeper, "0::/docker/abc\n", {"docker/abc/cpu.stat": "usage_usec 1000000\n"})
    monitor = Monitor(sleeper, None, lambda reason: None, interval_s=60, cgroup_root=root, proc_root=proc).start()
    wait_for_samples(monitor, 1)
    (root / "docker" / "abc" / "cpu.stat").unlink()
    (root / "docker" / "abc").rmdir()
    assert monitor.stop().cpu_seconds == 1.0


def test_compute_at_interpolates_the_trace_and_splits_a_phase():
    usage = Usage(kind="psutil", note="", cpu_seconds=30.0, compute_trace=[(10.0, 0.0), (11.0, 2.0), (20.0, 20.0),
                                                                              (21.0, 30.0)])
    assert usage.compute == 30.0
    assert usage.compute_at(5.0) == 0.0 and usage.compute_at(30.0) == 30.0
    assert usage.compute_at(10.5) == 1.0 and usage.compute_at(20.5) == 25.0
    outside = usage.compute_at(10.5) + usage.compute - usage.compute_at(20.5)  # before the first, after the last
    assert outside == 6.0
    assert Usage(kind="nvml", note="", busy_seconds=7.0, cpu_seconds=99.0).compute == 7.0

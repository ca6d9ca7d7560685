"""The sandbox provider interface: what every way of running a phase of task code must offer.

In the spirit of inspect_ai's `SandboxEnvironment`: one small protocol, providers chosen by name
(runner/sandbox/__init__.py), one self-check suite run against each (tests/sandbox). A phase is one
fresh, isolated run of one command (prepare the data, train a candidate, score a hand-over) with only
the mounts it names, under the resource limits of its spec, watched by the host's monitor, and killed
at its deadline. Providers:

- `docker`: a fresh hardened container per phase (the default, and the only one with real isolation);
- `process`: plain processes under resource limits, for machines without Docker; much weaker (no
  filesystem, network or user isolation), so used only when asked for by name, and announced;
- `fake`: scripted phases for tests of the loop, the trial and the experiment (tests only).

Every provider reports the end of a phase the same way: the exit code, or the reason the host killed it
(`killed_by`: "deadline" at its deadline, the monitor's "memory_cap", "disk_cap", "skipped").
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox.logs import CappedLog
from autoresearch.runner.sandbox.monitor import Monitor, Usage

LABEL = "autoresearch"  # every phase carries it, so a provider can find and remove orphans
DEADLINE = "deadline"  # killed_by when a phase ran past its deadline
PHASE_LABEL = "autoresearch.phase"  # train, score-val, score-test, prepare, handover
RUNNER_PID_LABEL = "autoresearch.runner_pid"  # the runner that started a phase: orphans are those of dead runners
EXPERIMENT_LABEL = "autoresearch.experiment"  # the store's experiment id
WORKSPACE_LABEL = "autoresearch.workspace"  # a digest of the workspace's path
PHASE_UID = 1000  # the user task code runs as in a container (the docker provider's USER)


class SandboxUnavailable(UserError):
    """The provider cannot run phases: its engine is absent, or went away in the middle of one."""


@dataclass(frozen=True)
class Mount:
    """A host path (or, with volume, a provider-owned volume's name) seen at target inside the phase."""

    source: Path | str
    target: str
    read_only: bool = True
    volume: bool = False


@dataclass(frozen=True)
class Resources:
    """What one phase may use; the experiment's come from the policy's [limits]."""

    memory: str = "8g"
    cpus: float | None = None
    cpuset: str | None = None  # the cores the phase is pinned to ("0-3"): a CPU slot's own (runner/executors)
    pids_limit: int = 512
    tmpfs_size: str = "1g"


def parse_cpuset(text: str) -> list[int]:
    """The cores of a cpuset such as "0-3,6"; ValueError on anything else."""
    cores: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        first, last = int(low), int(high or low)
        if first < 0 or last < first:
            raise ValueError(f"not a cpuset: {text!r}")
        cores.extend(range(first, last + 1))
    return cores


def format_cpuset(cores: list[int]) -> str:
    """cores as a cpuset ("0-3" for a run of them, else "0,2")."""
    if cores == list(range(cores[0], cores[-1] + 1)) and len(cores) > 1:
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(str(core) for core in cores)


@dataclass
class PhaseSpec:
    """Everything one phase is made of."""

    image: str
    command: list[str]
    mounts: list[Mount]
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    deadline_s: float = 600.0  # wall-clock seconds from start to kill (killed_by "deadline")
    network: bool = False
    resources: Resources = field(default_factory=Resources)
    gpu_uuid: str | None = None

    @property
    def phase(self) -> str:
        return self.labels.get(PHASE_LABEL, "")


@dataclass
class PhaseResult:
    """How a phase ended, with timings and resource use measured by the host."""

    exit_code: int | None  # None when the host killed it at its deadline
    oom_killed: bool
    killed_by: str | None  # why the host killed it: "deadline", or the monitor's reason ("memory_cap", ...)
    log_head: str
    log_tail: str
    log_bytes: int
    log_dropped_bytes: int
    start_seconds: float  # from create to running
    run_seconds: float  # from running to exit
    usage: Usage | None = None

    @property
    def timed_out(self) -> bool:
        return self.killed_by == DEADLINE


def ended_phase(log: CappedLog, *, exit_code: int | None, oom_killed: bool, killed_by: str | None,
                start_seconds: float, run_seconds: float, usage: Usage | None) -> PhaseResult:
    """How a phase ended, told the same way by every provider: no exit code when the deadline killed it, and
    the log's head and tail cut to what the record keeps."""
    return PhaseResult(
        exit_code=None if killed_by == DEADLINE else exit_code,
        oom_killed=oom_killed,
        killed_by=killed_by,
        log_head=log.head().decode("utf-8", "replace")[:4000],
        log_tail=log.tail().decode("utf-8", "replace")[-8000:],
        log_bytes=log.bytes_seen,
        log_dropped_bytes=log.bytes_dropped,
        start_seconds=start_seconds,
        run_seconds=run_seconds,
        usage=usage,
    )


# Called once the phase runs, with its first process's host PID and a function that kills the phase for a
# reason; returns the Monitor watching it.
Watch = Callable[[int, Callable[[str], None]], Monitor]


class Handover(Protocol):
    """Where training leaves its model for scoring: private to one experiment, size-capped."""

    def mount(self, target: str = "/handover", read_only: bool = True) -> Mount: ...

    def release(self) -> None:
        """Remove it and the model in it; safe to call twice."""


class Sandbox(Protocol):
    """A way of running phases. `isolated` is False for a provider that cannot confine task code."""

    name: str
    isolated: bool

    def image(self, flavor: str) -> str:
        """The image (or interpreter) phases of flavor run in, checked to be there; UserError if not."""

    def image_id(self, image: str) -> str:
        """What identifies image's content (another build of it has another id): what a run's compile seed is
        kept per."""

    def run(self, spec: PhaseSpec, log_path: Path, on_line: Callable[[str], None] | None = None,
            watch: Watch | None = None, max_log_bytes: int = 20 * 2**20) -> PhaseResult:
        """Run spec to its end or its deadline, its output streamed to a capped log (and each line to on_line)."""

    def open_handover(self, image: str, size_mb: int, labels: dict[str, str]) -> Handover:
        """A fresh hand-over of at most size_mb for one experiment."""

    def remove_orphans(self, labels: dict[str, str], alive: Callable[[int], bool]) -> list[str]:
        """Remove what phases carrying labels left behind when their runner (RUNNER_PID_LABEL) is not alive."""

    def notice(self) -> str:
        """One line on what confines phases here (every run that used a non-isolating provider shows it)."""

    def reachable(self) -> bool:
        """Whether phases can run now (the engine answers)."""

    def close(self) -> None:
        """Release the provider's connections."""


def grant_phase_write(path: Path) -> None:
    """Let a phase's user (PHASE_UID) write into path, a writable mount's source."""
    if os.geteuid() == 0:
        os.chown(path, PHASE_UID, PHASE_UID)
    else:
        path.chmod(0o777)


def runner_gone(labels: dict[str, str], alive: Callable[[int], bool]) -> bool:
    """Whether the runner that made something carrying labels (RUNNER_PID_LABEL) is gone: what makes an orphan."""
    pid = str(labels.get(RUNNER_PID_LABEL, ""))
    return not (pid.isdigit() and alive(int(pid)))


def remove_labelled(sandbox: Sandbox, labels: dict[str, str]) -> list[str]:
    """Remove everything carrying labels, whoever started it."""
    return sandbox.remove_orphans(labels, lambda pid: False)

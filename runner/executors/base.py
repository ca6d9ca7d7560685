"""The executor seam: how the loop keeps several experiments in flight, on one host or many.

An executor owns slots (a GPU of this host, a set of CPU cores, a GPU of a Ray node). The loop, the
only writer of the store and git, submits jobs to free slots and reads one stream of events back:
progress points and resource samples while a job runs, then its result, or word that the slot's node
was lost (`Lost`: liveness is the executor's to watch, and the loop's own deadline backs it). What
travels to a slot is only what the job names (train.py, the seed, the limits, labels); what comes
back is data. Providers:

- `local` (runner/executors/local.py): one slot per GPU of the host, or N slots of their own CPU cores;
- `ray` (runner/executors/ray_executor.py, `autoresearch[cluster]`): slots on the GPUs of Ray nodes.

A job is a training job (train, then score on val; the hand-over of a scored model stays on the slot)
or a test job (score a training job's hand-over on the held-out test split, on the slot that holds it).
"""

import queue
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from autoresearch.runner.check.policy import Limits
from autoresearch.runner.phases.compile_seed import CompileCache
from autoresearch.runner.phases.experiment import ExperimentOutcome
from autoresearch.runner.phases.metrics import ProgressPoint
from autoresearch.runner.sandbox.base import parse_cpuset
from autoresearch.runner.sandbox.monitor import Sample

LOCAL_NODE = "local"


@dataclass(frozen=True)
class Slot:
    """Where one experiment runs at a time: a GPU, or a set of CPU cores, of one node."""

    name: str  # unique in the run, shown in the TUI's lanes: "gpu0", "cpu0-1", "node-b/gpu1"
    node: str = LOCAL_NODE
    gpu_uuid: str | None = None
    cpuset: str | None = None  # the CPU cores a CPU slot's phases are pinned to ("0-3"); None: any
    device: str = "cpu"  # the device model every slot of a run shares: the GPU's name, or "cpu"

    @property
    def cpus(self) -> int | None:
        """How many cores the cpuset names (None: not pinned)."""
        return len(parse_cpuset(self.cpuset)) if self.cpuset else None


@dataclass(frozen=True)
class TrainJob:
    """Train one candidate and score it on val, as the recorded experiment experiment_id."""

    experiment_id: int
    train_py: bytes
    limits: Limits
    labels: dict[str, str]
    work_dir: str  # the head's folder of the experiment: its log and candidate land there
    seed: int | None = None
    compile_cache: CompileCache | None = None  # the run's compile seed to fill or start from (local slots only)
    keep_handover: bool = True  # keep a scored model on the slot for a test job


@dataclass(frozen=True)
class ScoreTestJob:
    """Score the model a finished training job left on its slot on the held-out test split."""

    experiment_id: int
    of_ticket: int  # the training job's ticket
    limits: Limits
    labels: dict[str, str]
    work_dir: str


Job = TrainJob | ScoreTestJob


@dataclass
class TrainResult:
    """What a training job's slot sends back: the outcome (its hand-over stays on the slot) and the hashes of
    the files the experiment must not change, before and after."""

    outcome: ExperimentOutcome
    hashes_before: dict[str, str] = field(default_factory=dict)
    hashes_after: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreTestResult:
    """A test job's answer: the held-out bpb, or None when the scorer gave none."""

    test_bpb: float | None
    reason: str = ""


@dataclass(frozen=True)
class Progress:
    ticket: int
    point: ProgressPoint


@dataclass(frozen=True)
class Sampled:
    ticket: int
    sample: Sample


@dataclass(frozen=True)
class Finished:
    ticket: int
    result: TrainResult | ScoreTestResult


@dataclass(frozen=True)
class Lost:
    """The job's slot went away under it (its node died or hung, its engine failed): nothing the candidate
    did. The loop closes the experiment as interrupted (no cap counts it) and runs it again elsewhere."""

    ticket: int
    reason: str
    engine: bool = False  # the sandbox's engine failed: the loop waits for it before it goes on
    fatal: BaseException | None = None  # the runner's own fault, not the slot's: the loop raises it


Event = Progress | Sampled | Finished | Lost

def drain(q: "queue.Queue[Event]", timeout: float) -> list[Event]:
    """An executor's events: wait up to timeout seconds for the first, then take every one already queued."""
    try:
        events = [q.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            events.append(q.get_nowait())
        except queue.Empty:
            return events


NODE_STATES = ("starting", "ready", "refused", "lost", "gone")  # the store's nodes.state lists the same words


@dataclass
class NodeState:
    """A node as the head sees it (the TUI's nodes panel): its GPUs, its slots, what it is doing or why not."""

    node: str
    node_id: str
    address: str
    gpus: int
    state: str = "starting"  # starting, ready, refused (by a check; reason says which), lost (stopped answering), gone
    reason: str = ""
    slots: list[str] = field(default_factory=list)


class Executor(Protocol):
    """Slots, and jobs on them. Every method is called from the loop's thread."""

    name: str

    def slots(self) -> list[Slot]:
        """The slots that can take a job now (a Ray node that left takes its slots with it)."""

    def submit(self, slot: Slot, job: Job) -> int:
        """Start job on slot (which must be free); its ticket, which every event of the job carries."""

    def events(self, timeout: float) -> Iterable[Event]:
        """What happened since the last call, waiting up to timeout seconds for the first event."""

    def cancel(self, ticket: int) -> None:
        """Stop a job (its Finished still comes, as a killed outcome)."""

    def release(self, ticket: int) -> None:
        """Drop the model a training job left on its slot (after its test job, or when it was not kept)."""

    def nodes(self) -> list[NodeState]:
        """The nodes the slots are on, as the executor sees them now."""

    def close(self) -> None:
        """Stop every job and release every slot."""

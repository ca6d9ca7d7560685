"""The local executor: one slot per GPU of this host, or N slots of their own CPU cores.

Each job runs in a thread of its own, which drives the sandbox's phases (the containers do the work);
events go to one queue the loop reads. A kept model's hand-over stays here, keyed by the training
job's ticket, until its test job scored it or the loop releases it.
"""

import itertools
import os
import queue
import socket
import threading
from collections.abc import Iterable

from autoresearch.runner.config import ExecutorConfig
from autoresearch.runner.errors import UserError
from autoresearch.runner.executors.base import (
    LOCAL_NODE,
    Event,
    Finished,
    Job,
    Lost,
    NodeState,
    Progress,
    Sampled,
    ScoreTestJob,
    Slot,
    TrainJob,
    drain,
)
from autoresearch.runner.executors.slot_work import SlotHost, score_test_on_slot, train_on_slot
from autoresearch.runner.sandbox.base import Handover, SandboxUnavailable, format_cpuset
from autoresearch.runner.sandbox.gpus import chosen_gpus


def local_slots(executor: ExecutorConfig, gpu_ids: list[str], flavor: str) -> list[Slot]:
    """This host's slots: one per GPU of [gpus] ids on the cuda image (all of one model), else [executor] slots
    CPU slots, each pinned to its own share of the cores this process may use (one slot: no pinning)."""
    if flavor != "cpu":
        gpus = chosen_gpus(gpu_ids, flavor)
        if executor.slots is not None and executor.slots > len(gpus):
            raise UserError(f"[executor] slots = {executor.slots} asks for more slots than the {len(gpus)} GPU(s) "
                            "[gpus] ids names (one experiment per GPU): name more GPUs (ids = \"all\") or fewer slots")
        gpus = gpus[:executor.slots or len(gpus)]
        models = sorted({gpu.name for gpu in gpus})
        if len(models) > 1:
            raise UserError(f"[gpus] ids names GPUs of {len(models)} models ({', '.join(models)}): a run compares "
                            "experiments on one GPU model, so name the GPUs of one model")
        return [Slot(f"gpu{gpu.index}", gpu_uuid=gpu.uuid, device=gpu.name) for gpu in gpus]
    count = executor.slots or 1
    if count == 1:
        return [Slot("cpu")]
    cores = sorted(os.sched_getaffinity(0))
    if count > len(cores):
        raise UserError(f"[executor] slots = {count} asks for more CPU slots than the {len(cores)} cores here "
                        f"(each slot gets cores of its own): set slots to {len(cores)} or fewer")
    share = len(cores) // count
    groups = [cores[i * share:(i + 1) * share] for i in range(count)]
    return [Slot(f"cpu{format_cpuset(group)}", cpuset=format_cpuset(group)) for group in groups]


class LocalExecutor:
    """Jobs on this host's slots, a thread each."""

    name = "local"

    def __init__(self, host: SlotHost, slots: list[Slot]):
        self.host = host
        self._slots = slots
        self._events: queue.Queue[Event] = queue.Queue()
        self._tickets = itertools.count(1)
        self._cancels: dict[int, threading.Event] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._handovers: dict[int, Handover] = {}
        self._lock = threading.Lock()

    def slots(self) -> list[Slot]:
        return list(self._slots)

    def submit(self, slot: Slot, job: Job) -> int:
        ticket = next(self._tickets)
        cancel = threading.Event()
        thread = threading.Thread(target=self._work, args=(ticket, slot, job, cancel), daemon=True,
                                  name=f"slot-{slot.name}")
        self._cancels[ticket], self._threads[ticket] = cancel, thread
        thread.start()
        return ticket

    def events(self, timeout: float) -> Iterable[Event]:
        return drain(self._events, timeout)

    def cancel(self, ticket: int) -> None:
        if ticket in self._cancels:
            self._cancels[ticket].set()

    def release(self, ticket: int) -> None:
        with self._lock:
            handover = self._handovers.pop(ticket, None)
        if handover is not None:
            handover.release()

    def nodes(self) -> list[NodeState]:
        gpus = len([slot for slot in self._slots if slot.gpu_uuid])
        return [NodeState(LOCAL_NODE, LOCAL_NODE, socket.gethostname(), gpus, "ready",
                          slots=[slot.name for slot in self._slots])]

    def close(self) -> None:
        for cancel in list(self._cancels.values()):
            cancel.set()
        for thread in list(self._threads.values()):
            thread.join(timeout=30)
        for ticket in list(self._handovers):
            self.release(ticket)

    def _work(self, ticket: int, slot: Slot, job: Job, cancel: threading.Event) -> None:
        try:
            if isinstance(job, TrainJob):
                result = train_on_slot(self.host, slot, job, lambda point: self._events.put(Progress(ticket, point)),
                                       lambda sample: self._events.put(Sampled(ticket, sample)), cancel)
                if result.outcome.handover is not None:
                    with self._lock:
                        self._handovers[ticket] = result.outcome.handover
                    result.outcome.handover = None
            else:
                result = self._score_test(slot, job)
        except SandboxUnavailable as exc:
            self._events.put(Lost(ticket, str(exc).splitlines()[0][:240], engine=True))
        except BaseException as exc:  # a fault of the runner's own: the loop raises it
            self._events.put(Lost(ticket, f"{type(exc).__name__}: {exc}", fatal=exc))
        else:
            self._events.put(Finished(ticket, result))
        finally:  # a long run must not keep a thread object per experiment it ever ran
            self._cancels.pop(ticket, None)
            self._threads.pop(ticket, None)

    def _score_test(self, slot: Slot, job: ScoreTestJob):
        with self._lock:
            handover = self._handovers.get(job.of_ticket)
        if handover is None:
            raise RuntimeError(f"no model of ticket {job.of_ticket} is held on {slot.name}")
        return score_test_on_slot(self.host, slot, handover, job)

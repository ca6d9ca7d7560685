"""The ray executor (`autoresearch[cluster]`): slots on the GPUs of the nodes of a Ray cluster.

One SlotActor per GPU of each alive node (num_gpus=1, pinned to its node, no restarts, no retries): its
worker process is reused across experiments (a fresh worker per task cut throughput to half in a trial),
and it keeps its slot's hand-overs for the test job. At start it makes its node's own SlotHost: the docker
sandbox, the experiment image there, the head's prepare.py and the data prepared on the node (checked
against the head's manifest digest), then runs the same slot code as the local executor
(runner/executors/slot_work.py) in a thread per job. Only train.py, the seed, the limits and labels travel
out; the node works in its own folder; progress points, resource samples and, with the result, the capped
logs come back; models stay on the node.

The head polls every running job's actor (POLL_S): the answer carries the job's new events, and is also
the liveness check. Ray does not fail a call to a hung or cut-off node (a paused node was declared dead
after about a minute while its task stayed pending), so a job ends with Lost when its node is no longer
alive in the GCS, its actor died, it has not answered for [cluster] stall_s, or it ran past the head's own
deadline; its actor is then killed (which stops its containers when the node comes back; the node's janitor
removes them when the slot process is gone or stopped, runner/executors/ray_node.py), and its node sits out
a while. Nodes that join later get slots on the next fleet refresh. Nothing here writes the store or git,
and no environment is forwarded to the nodes (the agent's key stays on the head).
"""

import contextlib
import dataclasses
import fcntl
import itertools
import os
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from autoresearch.runner.errors import UserError
from autoresearch.runner.executors.base import (
    Event,
    Finished,
    Job,
    Lost,
    NodeState,
    Progress,
    Sampled,
    ScoreTestJob,
    ScoreTestResult,
    Slot,
    TrainJob,
    TrainResult,
    drain,
)
from autoresearch.runner.executors.ray_node import (
    NODE_LABEL,
    local_fingerprint,
    publish_fingerprint,
    read_token_path,
    require_ray,
    split_address,
    use_token,
)
from autoresearch.runner.sandbox.base import RUNNER_PID_LABEL

POLL_S = 0.5  # how often the head asks each running job's actor for news
REFRESH_S = 2.0  # how often the head looks for nodes that joined or left
QUARANTINE_S = 60.0  # a node that lost a job gets no new slot for this long
CLOSE_WAIT_S = 30.0
HEAD_GRACE_S = 900.0  # past the training budget and its allowance: scoring, and the engine's own grace


@dataclass(frozen=True)
class NodeSetup:
    """What a slot actor needs from the head: no secrets, no paths of the head."""

    node: str  # the node's name (its `ray start --node-name`)
    flavor: str
    sandbox: str
    source: str  # the data source, resolved on the head (offline, web)
    prepare_py: bytes  # the head's task/prepare.py
    data_manifest: str | None  # the digest of the head's data manifest (None: the head has none yet)


@dataclass
class _Running:
    ticket: int
    slot: Slot
    job: Job
    actor: object
    started: float
    deadline: float
    last_answer: float
    poll: object = None  # the ObjectRef of the poll in flight


class SlotActor:
    """One GPU of one node: a worker process reused for every job of that slot (runs on the node)."""

    def __init__(self, setup: NodeSetup):
        self.setup = setup
        self.host = None
        self.slot: Slot | None = None
        self.jobs: dict[int, dict] = {}
        self.handovers: dict = {}
        self.lock = threading.Lock()

    def prepare(self, labels: dict[str, str]) -> Slot:
        """Make this node's SlotHost (sandbox, image, data); the slot it offers."""
        import ray

        from autoresearch.runner.executors.ray_node import SlotLiveness
        from autoresearch.runner.executors.slot_work import SlotHost
        from autoresearch.runner.phases.data import prepare_data, read_manifest
        from autoresearch.runner.sandbox.gpus import visible_gpus
        from autoresearch.runner.sandbox.registry import open_sandbox
        from autoresearch.runner.workspace import cache_dir

        setup = self.setup
        sandbox = open_sandbox(setup.sandbox, insisted=True)
        sandbox.remove_orphans({**labels, NODE_LABEL: setup.node}, SlotLiveness())
        image = sandbox.image(setup.flavor)
        task_dir = cache_dir() / "ray" / f"task-{_digest(setup.prepare_py)}"
        task_dir.mkdir(parents=True, exist_ok=True)
        if not (task_dir / "prepare.py").exists() or (task_dir / "prepare.py").read_bytes() != setup.prepare_py:
            scratch = task_dir / f".prepare.py.{os.getpid()}"
            scratch.write_bytes(setup.prepare_py)
            scratch.replace(task_dir / "prepare.py")
        with open(task_dir / ".prepare.lock", "w") as lock:  # one preparation per node, whatever its GPU count
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = prepare_data(sandbox, image, task_dir, setup.source)
        if setup.data_manifest is not None and read_manifest(data) is not None:
            mine = _digest((data / "manifest.json").read_bytes())
            if mine != setup.data_manifest:
                raise UserError(f"node {setup.node}: its prepared data (manifest {mine}) differs from the head's "
                                f"({setup.data_manifest}): remove {data} there and let it prepare again")
        self.host = SlotHost(sandbox, image, data, task_dir)
        gpu_ids = ray.get_gpu_ids()
        index = int(gpu_ids[0]) if gpu_ids else 0
        if setup.flavor == "cpu":
            self.slot = Slot(f"{setup.node}/gpu{index}", node=setup.node, device="cpu")
        else:
            gpus = {gpu.index: gpu for gpu in visible_gpus()}
            if index not in gpus:
                raise UserError(f"node {setup.node}: Ray gave this slot GPU {index}, which NVML does not see: "
                                "start the node with --num-gpus no larger than its GPU count")
            gpu = gpus[index]
            self.slot = Slot(f"{setup.node}/gpu{index}", node=setup.node, gpu_uuid=gpu.uuid, device=gpu.name)
        return self.slot

    def pid(self) -> int:
        return os.getpid()

    def start(self, ticket: int, job: Job) -> None:
        cancel = threading.Event()
        state = {"events": [], "cancel": cancel, "done": False}
        with self.lock:
            self.jobs[ticket] = state
        threading.Thread(target=self._work, args=(ticket, job, state), daemon=True, name=f"job-{ticket}").start()

    def poll(self, ticket: int) -> list[tuple]:
        """The job's events since the last poll; ("gone",) when this actor knows no such job."""
        with self.lock:
            state = self.jobs.get(ticket)
            if state is None:
                return [("gone",)]
            events, state["events"] = state["events"], []
            if state["done"]:
                del self.jobs[ticket]
        return events

    def cancel(self, ticket: int) -> None:
        with self.lock:
            state = self.jobs.get(ticket)
        if state is not None:
            state["cancel"].set()

    def release(self, ticket: int) -> None:
        with self.lock:
            handover = self.handovers.pop(ticket, None)
        if handover is not None:
            handover.release()

    def shutdown(self) -> None:
        """Stop every job and drop every hand-over (before the head kills this actor)."""
        with self.lock:
            states = list(self.jobs.values())
        for state in states:
            state["cancel"].set()
        deadline = time.monotonic() + CLOSE_WAIT_S
        while time.monotonic() < deadline and any(not state["done"] for state in states):
            time.sleep(0.2)
        for ticket in list(self.handovers):
            self.release(ticket)

    def _work(self, ticket: int, job: Job, state: dict) -> None:
        from autoresearch.runner.executors.slot_work import score_test_on_slot, train_on_slot
        from autoresearch.runner.sandbox.base import SandboxUnavailable
        from autoresearch.runner.workspace import cache_dir

        def put(*event) -> None:
            with self.lock:
                state["events"].append(event)

        labels = {**job.labels, RUNNER_PID_LABEL: str(os.getpid()), NODE_LABEL: self.setup.node}
        work_dir = cache_dir() / "ray" / "work" / f"{job.experiment_id:06d}-{ticket}"
        try:
            if isinstance(job, TrainJob):
                local = dataclasses.replace(job, labels=labels, work_dir=str(work_dir), compile_cache=None)
                result = train_on_slot(self.host, self.slot, local, lambda point: put("progress", point),
                                       lambda sample: put("sample", sample), state["cancel"])
                if result.outcome.handover is not None:
                    with self.lock:
                        self.handovers[ticket] = result.outcome.handover
                    result.outcome.handover = None
                logs = {name: _read(getattr(result.outcome, name)) for name in ("train_log", "score_log")}
                result.outcome.train_log = result.outcome.score_log = None
                put("finished", result, logs)
            else:
                with self.lock:
                    handover = self.handovers.get(job.of_ticket)
                if handover is None:
                    put("lost", f"no model of ticket {job.of_ticket} is held on {self.slot.name}")
                else:
                    local = dataclasses.replace(job, labels=labels, work_dir=str(work_dir))
                    work_dir.mkdir(parents=True, exist_ok=True)
                    put("finished", score_test_on_slot(self.host, self.slot, handover, local), {})
        except SandboxUnavailable as exc:
            put("engine", str(exc).splitlines()[0][:240])
        except BaseException as exc:  # the runner's own fault: the head's loop raises it
            put("fault", f"{type(exc).__name__}: {str(exc)[:400]}")
        finally:
            import shutil

            shutil.rmtree(work_dir, ignore_errors=True)
            with self.lock:
                state["done"] = True


class RayExecutor:
    """Jobs on the GPUs of a Ray cluster's nodes.

    settings: the run's Settings ([cluster] and the sandbox, flavor and source); labels: the workspace's labels
    (every phase carries them); flavor: the image flavor every node runs. task_dir and data: the head's task
    folder (its prepare.py travels to the nodes) and prepared data (its manifest digest is what nodes must
    match); source: the data source the head resolved."""

    name = "ray"

    def __init__(self, settings, labels: dict[str, str], flavor: str, *, task_dir: Path | None = None,
                 data: Path | None = None, source: str | None = None, state_dir: Path | None = None):
        require_ray()
        from autoresearch.runner.task_files import default_task_dir

        cluster = settings.config.cluster
        self.cluster = cluster
        self.labels = dict(labels)
        self.flavor = flavor
        self.task_dir = Path(task_dir or default_task_dir())
        self.source = source or ("offline" if settings.source == "auto" else settings.source)
        self.sandbox = settings.sandbox
        self.data = data
        self.stall_s = cluster.stall_s
        self.address = _head_address(cluster, state_dir)
        token = cluster.token_file or (state_dir / "cluster" / "token" if state_dir else None)
        if token is None:
            raise UserError("the ray executor needs the cluster's token: set [cluster] token_file, or start the head "
                            "in this workspace with `autoresearch node head`")
        use_token(read_token_path(Path(token)))
        import ray

        try:
            ray.init(address=self.address, namespace="autoresearch", log_to_driver=False, configure_logging=False)
        except Exception as exc:
            raise UserError(f"cannot connect to the Ray head {self.address} ({str(exc).splitlines()[0][:200]}): "
                            "start it with `autoresearch node head`, or fix [cluster] address") from None
        self.fingerprint = local_fingerprint(flavor, self.task_dir, data)
        with contextlib.suppress(Exception):
            publish_fingerprint(self.address, self.fingerprint)
        self._actor_cls = ray.remote(SlotActor)
        self._tickets = itertools.count(1)
        self._events: queue.Queue[Event] = queue.Queue()
        self._lock = threading.RLock()
        self._nodes: dict[str, NodeState] = {}  # by Ray node id
        self._actors: dict[str, list] = {}  # node id -> [(actor, prepare ref or None)]
        self._slots: dict[str, tuple[Slot, object, str]] = {}  # slot name -> (slot, actor, node id)
        self._running: dict[int, _Running] = {}
        self._node_of: dict[int, str] = {}  # running ticket -> its node id
        self._holders: dict[int, tuple[object, str]] = {}  # training ticket -> (actor, node id) holding its model
        self._quarantine: dict[str, float] = {}
        self._device: str | None = None
        self._stop = threading.Event()
        self._refresh()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="ray-executor")
        self._thread.start()

    # --- the seam ------------------------------------------------------------------------------------------

    def slots(self) -> list[Slot]:
        with self._lock:
            return [slot for slot, _, _ in self._slots.values()]

    def nodes(self) -> list[NodeState]:
        """The nodes the head knows, for the TUI's nodes panel and `autoresearch status`."""
        with self._lock:
            return [dataclasses.replace(node, slots=list(node.slots)) for node in self._nodes.values()]

    def wait_for_slots(self, count: int, timeout_s: float) -> list[Slot]:
        """Block until count slots are ready (or timeout_s passed); the slots then."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self.slots()) < count:
            time.sleep(0.2)
        return self.slots()

    def submit(self, slot: Slot, job: Job) -> int:
        ticket = next(self._tickets)
        with self._lock:
            if isinstance(job, ScoreTestJob):
                holder = self._holders.get(job.of_ticket)
                if holder is None:
                    self._events.put(Lost(ticket, f"the model of ticket {job.of_ticket} is no longer held by any "
                                                  "node (its node was lost or it was released)"))
                    return ticket
                actor, node_id = holder
            else:
                if slot.name not in self._slots:
                    self._events.put(Lost(ticket, f"slot {slot.name} is gone (its node left)"))
                    return ticket
                _, actor, node_id = self._slots[slot.name]
            now = time.monotonic()
            deadline = now + job.limits.time_budget_s + max(job.limits.deadline_allowance_cpu_s,
                                                            job.limits.deadline_allowance_cuda_s) + HEAD_GRACE_S
            self._running[ticket] = _Running(ticket, slot, job, actor, now, deadline, now)
            self._node_of[ticket] = node_id
        stripped = dataclasses.replace(job, work_dir="") if isinstance(job, TrainJob) else job
        actor.start.remote(ticket, dataclasses.replace(stripped, labels={**self.labels, **job.labels}))
        return ticket

    def events(self, timeout: float) -> Iterable[Event]:
        return drain(self._events, timeout)

    def cancel(self, ticket: int) -> None:
        with self._lock:
            running = self._running.get(ticket)
        if running is not None:
            running.actor.cancel.remote(ticket)

    def release(self, ticket: int) -> None:
        with self._lock:
            holder = self._holders.pop(ticket, None)
        if holder is not None:
            holder[0].release.remote(ticket)

    def close(self) -> None:
        import ray

        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            actors = [actor for entries in self._actors.values() for actor, _ in entries]
        refs = [actor.shutdown.remote() for actor in actors]
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=CLOSE_WAIT_S + 5)
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        with contextlib.suppress(Exception):
            ray.shutdown()

    # --- the head's watch ----------------------------------------------------------------------------------

    def _watch(self) -> None:
        next_refresh = time.monotonic() + REFRESH_S
        while not self._stop.is_set():
            try:
                self._poll_jobs()
                if time.monotonic() >= next_refresh:
                    self._refresh()
                    next_refresh = time.monotonic() + REFRESH_S
            except Exception as exc:  # the watch must not die: say it through the jobs it concerns
                for ticket in list(self._running):
                    self._lose(ticket, f"the head's watch failed: {type(exc).__name__}: {exc}", fatal=exc)
            self._stop.wait(POLL_S)

    def _poll_jobs(self) -> None:
        import ray

        with self._lock:
            running = list(self._running.values())
        for run in running:
            if run.poll is None:
                run.poll = run.actor.poll.remote(run.ticket)
        refs = [run.poll for run in running]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_S) if refs else ([], [])
        ready = set(ready)
        now = time.monotonic()
        for run in running:
            if run.poll in ready:
                ref, run.poll = run.poll, None
                try:
                    answer = ray.get(ref)
                except Exception as exc:
                    self._lose(run.ticket, f"node {self._node_name(run)}: its slot died "
                                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
                    continue
                run.last_answer = now
                self._handle(run, answer)
            elif now - run.last_answer > self.stall_s:
                silent = now - run.last_answer
                self._lose(run.ticket, f"node {self._node_name(run)} stopped answering for {silent:.0f} s")
            elif now > run.deadline:
                run.actor.cancel.remote(run.ticket)
                self._lose(run.ticket, f"the job ran past the head's deadline on node {self._node_name(run)}")

    def _handle(self, run: _Running, answer: list[tuple]) -> None:
        for event in answer:
            kind = event[0]
            if kind == "progress":
                self._events.put(Progress(run.ticket, event[1]))
            elif kind == "sample":
                self._events.put(Sampled(run.ticket, event[1]))
            elif kind == "finished":
                result = event[1]
                if isinstance(result, TrainResult):
                    self._land_logs(run, result, event[2])
                    if result.outcome.status == "ok" and run.job.keep_handover:
                        with self._lock:
                            self._holders[run.ticket] = (run.actor, self._node_of.get(run.ticket, ""))
                self._end(run.ticket)
                self._events.put(Finished(run.ticket, result))
            elif kind == "lost":
                self._end(run.ticket)
                self._events.put(Lost(run.ticket, event[1]))
            elif kind == "engine":
                self._lose(run.ticket, f"node {self._node_name(run)}: its sandbox engine failed: {event[1]}")
            elif kind == "fault":
                self._end(run.ticket)
                self._events.put(Lost(run.ticket, event[1], fatal=RuntimeError(f"on node {self._node_name(run)}: "
                                                                              f"{event[1]}")))
            elif kind == "gone":
                self._lose(run.ticket, f"node {self._node_name(run)}: its slot no longer knows the job "
                                       "(the slot restarted)")

    def _land_logs(self, run: _Running, result: TrainResult, logs: dict[str, bytes | None]) -> None:
        """Write the logs that came back into the head's folder of the experiment."""
        work_dir = Path(run.job.work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        for name, data in logs.items():
            if data is not None:
                path = work_dir / ("train.log" if name == "train_log" else "score.log")
                path.write_bytes(data)
                setattr(result.outcome, name, path)

    def _end(self, ticket: int) -> _Running | None:
        with self._lock:
            self._node_of.pop(ticket, None)
            return self._running.pop(ticket, None)

    def _lose(self, ticket: int, reason: str, fatal: BaseException | None = None) -> None:
        """End ticket with Lost; its node's slot actor is killed and the node sits out QUARANTINE_S."""
        import ray

        with self._lock:
            run = self._running.pop(ticket, None)
            node_id = self._node_of.pop(ticket, None)
        if run is None:
            return
        self._events.put(Lost(ticket, reason, fatal=fatal))
        if fatal is None and node_id is not None:
            self._drop_node(node_id, reason)
        with contextlib.suppress(Exception):
            ray.kill(run.actor, no_restart=True)

    def _drop_node(self, node_id: str, reason: str) -> None:
        """Take a node's slots, actors and models away (its other jobs end with Lost on their next poll)."""
        import ray

        with self._lock:
            self._quarantine[node_id] = time.monotonic() + QUARANTINE_S
            entries = self._actors.pop(node_id, [])
            for name in [name for name, (_, _, nid) in self._slots.items() if nid == node_id]:
                del self._slots[name]
            for ticket in [t for t, (_, nid) in self._holders.items() if nid == node_id]:
                del self._holders[ticket]
            node = self._nodes.get(node_id)
            if node is not None:
                node.state, node.reason, node.slots = "lost", reason, []
            others = [t for t, nid in self._node_of.items() if nid == node_id and t in self._running]
        for ticket in others:
            self._lose(ticket, f"its node was lost: {reason}")
        for actor, _ in entries:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)

    def _node_name(self, run: _Running) -> str:
        return run.slot.node

    def _refresh(self) -> None:
        """Slots for the GPUs of alive nodes; nodes that left take theirs with them."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        alive = {}
        for info in ray.nodes():
            node_id = info["NodeID"]
            if not info.get("Alive"):
                if node_id in self._nodes and self._nodes[node_id].state not in ("gone", "lost"):
                    self._drop_node(node_id, "Ray declared the node dead")
                    self._nodes[node_id].state = "gone"
                continue
            alive[node_id] = info
        now = time.monotonic()
        for node_id, info in alive.items():
            gpus = int(info.get("Resources", {}).get("GPU", 0))
            name = info.get("NodeName") or info.get("NodeManagerAddress", node_id[:8])
            with self._lock:
                node = self._nodes.get(node_id)
                if node is None:
                    node = self._nodes[node_id] = NodeState(name, node_id, info.get("NodeManagerAddress", ""), gpus)
                if self._quarantine.get(node_id, 0) > now or gpus == 0 or node.state == "refused":
                    continue
                entries = self._actors.setdefault(node_id, [])
                if node.state in ("lost", "gone"):
                    node.state, node.reason = "starting", ""
                setup = NodeSetup(name, self.flavor, self.sandbox, self.source,
                                  (self.task_dir / "prepare.py").read_bytes(), self.fingerprint.get("data_manifest"))
                while len(entries) < gpus:
                    actor = self._actor_cls.options(
                        num_gpus=1, num_cpus=0, max_restarts=0, max_task_retries=0, max_concurrency=16,
                        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(setup)
                    entries.append([actor, actor.prepare.remote(self.labels)])
                pending = [(entry, entry[1]) for entry in entries if entry[1] is not None]
            for entry, ref in pending:
                ready, _ = ray.wait([ref], timeout=0)
                if not ready:
                    continue
                entry[1] = None
                try:
                    slot = ray.get(ref)
                except Exception as exc:
                    self._refuse(node_id, _first_line(exc))
                    break
                self._offer(node_id, slot, entry[0])

    def _offer(self, node_id: str, slot: Slot, actor) -> None:
        with self._lock:
            node = self._nodes[node_id]
            if self._device is None:
                self._device = slot.device
            if slot.device != self._device:
                self._refuse(node_id, f"its GPU is a {slot.device}, the run's slots are {self._device} "
                                      "(one GPU model per run: start this node for another run)")
                return
            self._slots[slot.name] = (slot, actor, node_id)
            node.slots.append(slot.name)
            node.state, node.reason = "ready", ""

    def _refuse(self, node_id: str, reason: str) -> None:
        import ray

        with self._lock:
            node = self._nodes[node_id]
            node.state, node.reason = "refused", reason
            entries = self._actors.pop(node_id, [])
            for name in [name for name, (_, _, nid) in self._slots.items() if nid == node_id]:
                del self._slots[name]
            node.slots = []
        for actor, _ in entries:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)


def _head_address(cluster, state_dir: Path | None) -> str:
    if cluster.address:
        split_address(cluster.address)
        return cluster.address
    published = state_dir / "cluster" / "head.json" if state_dir else None
    if published is not None and published.exists():
        import json

        return json.loads(published.read_text())["address"]
    raise UserError("the ray executor needs the head's address: set [cluster] address = \"HOST:PORT\", or start "
                    "the head in this workspace with `autoresearch node head`")


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    cause = getattr(exc, "cause", None)
    if cause is not None:
        text = f"{type(cause).__name__}: {cause}" if not isinstance(cause, UserError) else str(cause)
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


__all__ = ["NodeSetup", "NodeState", "RayExecutor", "ScoreTestResult", "SlotActor"]

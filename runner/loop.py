"""`autoresearch run`: the research loop of one workspace.

Baseline first, then until a cap, the agent running dry or `autoresearch stop`: propose, check, commit,
train, score, judge, record, with up to one experiment in flight per slot of the executor
(runner/executors: a GPU of this host, a set of CPU cores, a GPU of a Ray node). The loop is the only
writer of the store and git; slots send back events, and the agent proposes in a thread of its own,
ahead of the free slots (`[executor] prefetch`), seeing what is in flight, so its thinking never idles
a slot. Each result is judged against the best when it finishes (runner/judge.py): a close keep is
confirmed by a second seed, and a win over a parent that is no longer the best is a near miss shown to
the agent. The run measures its own noise: the baseline on `[keep] noise_seeds` seeds, in parallel where
slots allow; candidates finished before that are judged once it is known.

The store is written before and after every step, so a runner killed at any moment loses nothing that
was recorded; the next `autoresearch run` with the same tag resumes: it removes the dead runner's
containers (by label) and runs again every experiment it was in the middle of. The baseline alone
seeds the run's compile cache, which every later experiment starts from, read-only and checked against
the digest the run records (runner/phases/compile_seed.py). A run compares experiments on one device
model: every slot must be of it, and a resumed run must be too.

Caps: `max_experiments` counts the run's candidates in total (so a resumed run stops where it was meant
to), except those closed as interrupted and the noise and confirmation seeds; `max_hours` counts this
invocation's wall time; `max_usd` the run's agent spending. `target_val_bpb` ends the run once a kept
experiment (a confirmed one, where a close keep is confirmed) reaches it; `patience` once that many candidates
in a row ended without a keep (discarded, failed or blocked; the measurement seeds are not candidates). When one
is reached, or on `stop`, no new candidate starts; what is in flight finishes and is judged; the run's note
says which ended it.

Notices ([notify] in autoresearch.toml): a new best, the run's end, a stall (nothing finished in twice one
experiment's expected time: the budget plus the overhead the run measured), a run of failures, the spending
past a fraction of its cap. The loop only decides them; the sender `autoresearch run` hands it
(runner/notify.py's Notifier) sends them from a thread of its own and records each send.
"""

import dataclasses
import json
import os
import socket
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from autoresearch.runner.agents import Exhausted, make_agent, memory
from autoresearch.runner.agents.base import (
    Agent,
    AgentError,
    AgentFatal,
    AgentHost,
    AgentViolation,
    Change,
    HistoryRow,
    Outcome,
    Proposal,
    ProposalContext,
)
from autoresearch.runner.check.dynamic_rules import Overhead, recorded_overhead
from autoresearch.runner.check.findings import Finding
from autoresearch.runner.check.policy import policy_to_toml
from autoresearch.runner.config import recordable_config
from autoresearch.runner.errors import UserError
from autoresearch.runner.executors import executor_class
from autoresearch.runner.executors.base import (
    Executor,
    Finished,
    Lost,
    Progress,
    Sampled,
    ScoreTestJob,
    ScoreTestResult,
    Slot,
    TrainResult,
)
from autoresearch.runner.executors.local import LocalExecutor, local_slots
from autoresearch.runner.executors.slot_work import SlotHost
from autoresearch.runner.judge import Judgement, confirm, judge, keep_threshold
from autoresearch.runner.lock import runner_lock
from autoresearch.runner.phases.compile_seed import CompileCache, Seed, seed_folder
from autoresearch.runner.phases.experiment import SCORE_DEADLINE_S, SKIPPED_REASON
from autoresearch.runner.phases.sources import source_lines
from autoresearch.runner.proposer import Proposer
from autoresearch.runner.record import gitrepo, store, views
from autoresearch.runner.record.recorder import ExperimentRecorder, LiveRecorder
from autoresearch.runner.record.status import (
    FAILED,
    INTERRUPTED,
    OPEN,
    UNSETTLED,
    Role,
    RunState,
    Status,
    interrupted,
)
from autoresearch.runner.record.untrusted import DESCRIPTION_CHARS, as_data
from autoresearch.runner.sandbox.base import (
    EXPERIMENT_LABEL,
    RUNNER_PID_LABEL,
    WORKSPACE_LABEL,
    remove_labelled,
)
from autoresearch.runner.settings import Flags, device_of, resolve_settings, training_deadline_s
from autoresearch.runner.steering import Steering
from autoresearch.runner.trial import (
    Candidate,
    TrialResult,
    check_candidate,
    close_trial,
    prerequisites,
    start_candidate,
    workspace_labels,
)
from autoresearch.runner.workspace import CONFIG_FILE, Workspace, require_workspace

MAX_AGENT_ERRORS_IN_A_ROW = 8  # with back-off, about 15 minutes of a failing API before the run stops
MAX_BLOCKED_IN_A_ROW = 10  # candidates the policy blocks before the run stops
MAX_ENGINE_LOSSES_IN_A_ROW = 3  # times the sandbox fails under experiments, one after another, before the run stops
BACKOFF_S = (5, 10, 20, 40, 80, 160, 300, 300)
FAILURE_TAIL_CHARS = 4000
RERUN = " (re-run)"
ENGINE_WAIT_S = 900
ENGINE_POLL_S = 5
EVENT_WAIT_S = 0.5  # the loop's longest sleep between looks at its slots, proposals and commands
IDLE_WAIT_S = 0.1  # the same with nothing in flight (waiting for the agent)
START_MARGIN_S = 120.0  # past the phases' own deadlines, before the loop cancels a job that has not ended
CANCEL_GRACE_S = 60.0  # after that cancel, before it gives the job up as lost and runs it again elsewhere
CONFIRM_SEED = 1_000_003  # the second seed of a close keep (train.py's own default differs)
CHANGES_SHOWN = 6  # recent keeps and near misses whose diffs the agent is shown (its memory's budget may cut them)
RAY_SLOTS_WAIT_S = 120.0  # for the first slot of a Ray cluster (each node prepares its data first)
NODES_EVERY_S = 5.0  # how often the run records what its executor knows of its nodes


class Notices(Protocol):
    """Where the loop's notices go: runner/notify.py's Notifier (apprise, in a thread of its own)."""

    def start(self, store_path: Path, run_id: int) -> None: ...

    def send(self, event: str, title: str, body: str) -> None: ...

    def close(self) -> None: ...


NoticesFactory = Callable[[Sequence[str], Callable[[str], None]], Notices]  # ([notify] urls, say) -> Notices


class SandboxGaveUp(Exception):
    """The sandbox failed too often, or did not come back: the run stops (and resumes later, losing nothing)."""


@dataclass(frozen=True)
class RunOptions:
    """What `autoresearch run` was asked for; caps left None come from the config."""

    tag: str
    seed: int = 0  # the agent's (the sweep's choices); train.py's own seed is the task's
    max_experiments: int | None = None
    max_hours: float | None = None
    max_usd: float | None = None
    target_bpb: float | None = None  # --target-bpb
    patience: int | None = None
    sandbox: str | None = None  # --sandbox: the provider, named for this invocation
    time_budget_s: float | None = None  # --budget
    flavor: str | None = None
    slots: int | None = None  # --slots
    executor: str | None = None  # --executor

    def flags(self) -> Flags:
        return Flags(time_budget_s=self.time_budget_s, flavor=self.flavor, sandbox=self.sandbox,
                     max_experiments=self.max_experiments, max_hours=self.max_hours, max_usd=self.max_usd,
                     target_val_bpb=self.target_bpb, patience=self.patience, slots=self.slots, executor=self.executor)


@dataclass
class Work:
    """A train.py waiting for a slot: a proposal, a re-run, a seed of the baseline or a confirmation."""

    code: bytes
    description: str
    parent_sha: str | None
    role: str | None = None  # None: the baseline or a candidate; Role.NOISE or Role.CONFIRM
    seed: int | None = None
    proposal: Proposal | None = None
    propose_s: float = 0.0
    baseline: bool = False
    commit_sha: str | None = None  # a seed of a committed train.py runs that commit again
    confirms: int | None = None  # the experiment a confirmation is of
    wave: int | None = None


@dataclass
class Flight:
    """One job on one slot: a training job, or the test scoring of a kept model."""

    ticket: int
    slot: Slot
    work: Work
    experiment_id: int
    seq: int
    static: list[Finding]
    deadline: float
    live: LiveRecorder | None = None
    commit_s: float = 0.0
    image_id: str = ""
    test_of: TrialResult | None = None  # a test job: the kept trial it scores
    model_ticket: int | None = None  # a test job: the training job whose model it scores
    began: float = field(default_factory=time.monotonic)
    cancelled_at: float | None = None


class Loop:
    """One invocation of `autoresearch run` on one workspace and tag."""

    def __init__(self, ws: Workspace, options: RunOptions, say: Callable[[str], None] = print,
                 slots: list[Slot] | None = None, notifier: NoticesFactory | None = None):
        """slots: this host's slots, where a bench sets them (default: the settings' local slots); notifier: what
        sends the [notify] notices (None: none are sent)."""
        require_workspace(ws)
        self.ws, self.options, self.say = ws, options, say
        self.given_slots = slots
        self.settings = resolve_settings(ws, options.flags())
        urls = self.settings.notify.urls
        self.notices: Notices | None = notifier(urls, say) if notifier is not None and urls else None
        self.finished_at = time.monotonic()  # when a job last finished (a stall is a long time since)
        self.stall_noticed = self.failures_noticed = self.spend_noticed = False
        self.repo = gitrepo.open_repo(ws.root)
        self.started = time.monotonic()
        self.agent_errors = 0
        self.blocked = 0
        self.engine_losses = 0  # in a row: a candidate that takes the engine down every time must not loop forever
        self.engine_episode = False  # an engine loss not yet followed by a new job (one loss, several slots)
        self.run_id: int | None = None
        self.compile_seed: dict | None = None  # the run's recorded compile seed (runs.compile_seed_json)
        self.queue: deque[Work] = deque()  # re-runs, seeds and confirmations: before any new proposal
        self.ready: deque[Work] = deque()  # proposals made ahead
        self.flights: dict[int, Flight] = {}
        self.unjudged: list[tuple[int, Flight | None]] = []  # scored candidates waiting for the run's noise (with
        # the flight whose slot holds the model, None when it is gone)
        self.tests_owed: list[Flight] = []  # test jobs of kept models, waiting for the slot that holds the model
        self.confirming: dict[int, Judgement] = {}  # close keeps waiting for their second seed
        self.noise_values: list[float] = []
        self.noise_open = 0  # baseline seeds queued or in flight
        self.propose_after = 0.0  # back-off after an agent error
        self.agent_done: str | None = None  # why the agent has nothing more to propose
        self.ending: tuple[str, str, int] | None = None  # a stop or a fatal error: the run ends once idle
        self.closing: tuple[str, str, int] | None = None  # ending, or a cap reached: nothing new starts
        self.wave = 0  # the current wave's number (wave mode)
        self.wave_asked = 0  # proposals asked for in the current wave
        self.wave_members: dict[int, list[int]] = {}  # wave -> its scored candidates' experiment ids
        self.was_paused = False
        self.nodes_recorded_at = 0.0
        self.recorded_slots: list[str] = []
        self._turn_conns = threading.local()
        self._read: list[store.Experiment] = []
        self._read_at = -1  # the store connection's total_changes when _read was read
        self._loop_thread = threading.get_ident()
        host = AgentHost(self.ws.state_dir, self._dollars_left,
                         {**workspace_labels(self.ws.root), RUNNER_PID_LABEL: str(os.getpid())})
        try:
            self.agent: Agent = make_agent(self.settings.agent.name, settings=self.settings.agent,
                                           log_turn=self._log_turn, seed=options.seed, host=host)
        except AgentFatal as exc:
            raise UserError(str(exc)) from None

    def run(self) -> int:
        """Run until a cap, a stop or a fatal error; the exit code (0: ended as asked)."""
        with runner_lock(self.ws.state_dir):
            self._prepare()  # the agent, the slots, the sandbox, the image and the data: refused before recording
            try:
                self.conn = store.open_store(self.ws.store_path)
                self.recorder = ExperimentRecorder(self.conn)
                self.proposer = Proposer(self.agent, self._close_turn_conn)
                try:
                    self.run_id = self._open_run()
                    if self.notices is not None:
                        self.notices.start(self.ws.store_path, self.run_id)
                    return self._steered()
                finally:
                    if self.notices is not None:
                        self.notices.close()
                    self.proposer.close()
                    close_agent = getattr(self.agent, "close", None)  # a coding-agent CLI's gateway
                    if close_agent is not None:
                        close_agent()
                    self.executor.close()
                    self.conn.close()
            finally:
                self.pre.sandbox.close()

    def _prepare(self) -> None:
        try:
            self.agent.preflight()
        except AgentFatal as exc:
            raise UserError(f"the {self.agent.name} agent cannot start: {exc}") from None
        for warning in getattr(self.agent, "warnings", []):
            self.say(f"WARNING: {warning}")
        local = self.settings.executor.name == "local"
        slots = (self.given_slots or local_slots(self.settings.executor, self.settings.gpus, self.settings.flavor)
                 if local else [])
        self.pre = prerequisites(self.ws, self.settings, slots[0].gpu_uuid if slots else None)
        for line in source_lines(self.pre.source, self.pre.source_why, self.settings.flavor):
            self.say(line)
        if not self.pre.sandbox.isolated:
            self.say(f"WARNING: the {self.pre.sandbox.name} sandbox runs candidates WITHOUT isolation "
                     f"({self.pre.sandbox.notice()})")
        self.executor: Executor = LocalExecutor(self._host(), slots) if local else self._cluster()
        slots = self.executor.slots()
        if len(slots) > 1 or not local:
            self.say(f"{len(slots)} slots: {', '.join(slot.name for slot in slots)}")

    def _cluster(self) -> Executor:
        """The ray executor, once the cluster's nodes offer a slot (runner/executors/ray_executor.py)."""
        ray_executor = executor_class("ray")
        executor = ray_executor(self.settings, self.pre.labels, self.settings.flavor, task_dir=self.ws.task_dir,
                                data=self.pre.data, source=self.pre.source, state_dir=self.ws.state_dir)
        if not executor.wait_for_slots(self.settings.executor.slots or 1, RAY_SLOTS_WAIT_S):
            executor.close()
            raise UserError(f"no node of the Ray cluster offered a slot within {RAY_SLOTS_WAIT_S:.0f} s: join a box "
                            "with `autoresearch node join HEAD` (its GPUs become slots), then run again")
        return executor

    def _host(self) -> SlotHost:
        return SlotHost(self.pre.sandbox, self.pre.image, self.pre.data, self.ws.task_dir)

    def _steered(self) -> int:
        with Steering(self.ws.store_path, self.run_id) as self.steering:
            try:
                state, reason, code = self._loop()
            except SandboxGaveUp as exc:
                state, reason, code = RunState.STOPPED, str(exc), 2
            except BaseException as exc:
                reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"runner error: {exc}"
                store.update_run(self.conn, self.run_id, state=RunState.CRASHED, ended_at=time.time(), note=reason)
                self._notify("end", f"run {RunState.CRASHED}", reason)
                raise
        store.update_run(self.conn, self.run_id, state=state, ended_at=time.time(), note=reason)
        self.say(f"run {self.options.tag} {state}: {reason}")
        self._notify("end", f"run {state}", reason)
        return code

    def _notify(self, event: str, title: str, body: str) -> None:
        """Hand a notice of event to the sender, when there is one and [notify] events has it (it never blocks)."""
        if self.notices is not None and event in self.settings.notify.events:
            self.notices.send(event, f"autoresearch {self.options.tag}: {title}", body)

    # --- the run's record ----------------------------------------------------------------------------

    def _open_run(self) -> int:
        """Resume the tag's run (closing what a dead runner left open) or start a new one."""
        slots = self.executor.slots()
        device = slots[0].device
        existing = store.run_by_tag(self.conn, self.options.tag)
        about = {"executor": self.executor.name, "device": device,
                 "slots_json": [dataclasses.asdict(slot) for slot in slots]}
        if existing is None:
            base = gitrepo.start_branch(self.repo, self.options.tag)
            run_id = store.create_run(
                self.conn, tag=self.options.tag, agent=self.settings.agent.name,
                config_toml=recordable_config((self.ws.root / CONFIG_FILE).read_text(), CONFIG_FILE),
                policy_toml=policy_to_toml(self.settings.policy),
                pid=os.getpid(), host=socket.gethostname(), time_budget_s=self.settings.time_budget_s,
                sandbox=self.pre.sandbox.name, source=self.pre.source)
            store.update_run(self.conn, run_id, **about)
            self.say(f"run {self.options.tag}: new, on branch {gitrepo.branch_name(self.options.tag)} "
                     f"from {base[:8]}")
            return run_id
        if existing.device is not None and existing.device != device:
            raise UserError(f"run {self.options.tag!r} compared its experiments on {existing.device}, and these slots "
                            f"are {device}: a run keeps one device model (its baseline and noise are that model's); "
                            "start a new tag here, or resume it on the same model")
        self.run_id = existing.id
        closed = self._close_interrupted(existing.id)
        self.compile_seed = existing.compile_seed_json
        store.update_run(self.conn, existing.id, state=RunState.RUNNING, pid=os.getpid(), host=socket.gethostname(),
                         ended_at=None, note=None, time_budget_s=self.settings.time_budget_s,
                         sandbox=self.pre.sandbox.name, source=self.pre.source, **about)
        self._resume_judging()
        done = len(store.list_experiments(self.conn, existing.id))
        self.say(f"run {self.options.tag}: resuming after {done} experiments"
                 + (f"; re-running the interrupted {', '.join(f'#{e.seq}' for e in closed)}" if closed else ""))
        return existing.id

    def _close_interrupted(self, run_id: int) -> list[store.Experiment]:
        """Experiments a dead runner left running: recorded as killed, queued to run again."""
        closed = [e for e in store.list_experiments(self.conn, run_id) if e.status in OPEN]
        for experiment in closed:
            self.recorder.interrupted(experiment.id, f"{INTERRUPTED} the runner stopped during this experiment")
            self._rerun(experiment)
        return closed

    def _resume_judging(self) -> None:
        """What a dead runner left half-judged: its noise seeds to finish, close keeps to confirm, scored
        candidates to judge."""
        experiments = self._experiments()
        base = views.baseline(experiments)
        noise = store.latest_noise(self.conn, self.run_id)
        if base is not None and (noise is None or noise.run_id != self.run_id):  # its noise is not measured yet
            self.noise_values = [base.val_bpb] + [e.val_bpb for e in experiments  # type: ignore[list-item]
                                                  if e.role == Role.NOISE and e.val_bpb is not None]
            self._queue_noise(base, already=len(self.noise_values) - 1)
        for e in experiments:
            if e.role is None and e.status == Status.OK and not (e.judge_json or {}).get("awaiting_confirmation"):
                self.unjudged.append((e.id, None))
            elif e.role is None and e.status == Status.OK:
                self.confirming[e.id] = Judgement.from_json(e.judge_json)  # type: ignore[arg-type]
                self.queue.append(Work(b"", e.description, e.parent_sha, Role.CONFIRM, CONFIRM_SEED,
                                       commit_sha=e.commit_sha, confirms=e.id))

    def _rerun(self, experiment: store.Experiment) -> None:
        """Queue an interrupted experiment to run again: the same train.py, role and seed."""
        if experiment.role == Role.NOISE:
            self.noise_open += 1
        self.queue.append(Work(b"", rerun_description(experiment), experiment.parent_sha, experiment.role,
                               experiment.seed, commit_sha=experiment.commit_sha,
                               baseline=views.baseline(self._experiments()) is None
                               and experiment.role is None,
                               confirms=(experiment.judge_json or {}).get("confirms")))

    def _log_turn(self, **turn) -> int:
        return store.add_agent_turn(self._turn_conn(), run_id=self.run_id, experiment_id=None, **turn)

    def _dollars_left(self) -> float | None:
        """What the run may still spend on agent calls (None: no cap); asked by a coding-agent CLI's gateway."""
        cap = self.settings.caps.max_usd
        return None if cap is None else cap - store.spent_usd(self._turn_conn(), self.run_id)

    def _turn_conn(self):
        """The store connection of the calling thread: the loop's own, or the proposer's."""
        if threading.get_ident() == self._loop_thread:
            return self.conn
        if getattr(self._turn_conns, "conn", None) is None:
            self._turn_conns.conn = store.open_store(self.ws.store_path)
        return self._turn_conns.conn

    def _close_turn_conn(self) -> None:
        conn = getattr(self._turn_conns, "conn", None)
        if conn is not None:
            conn.close()
            self._turn_conns.conn = None

    # --- the loop ------------------------------------------------------------------------------------

    def _loop(self) -> tuple[str, str, int]:
        while True:
            self.closing = self.ending or self._stop_reason()
            if self.closing is not None and not self.flights and not self._owed_work():
                return self.closing
            if self.steering.cancel.is_set():  # skip: every training job in flight
                self.steering.cancel.clear()
                for flight in self.flights.values():
                    if flight.test_of is None:
                        self.executor.cancel(flight.ticket)
            pausing = self.steering.paused.is_set() and not self.steering.stop_requested.is_set()
            self._paused(pausing and not self.flights)
            if not pausing:
                self._fill()
                self._prefetch()
            self._take_proposals()
            for event in self.executor.events(EVENT_WAIT_S if self.flights else IDLE_WAIT_S):
                self._on_event(event)
            self._watch_deadlines()
            self._record_nodes()
            self._watch()
            if not self.flights and self.was_paused:
                self.steering.wait(1)

    def _stop_reason(self) -> tuple[str, str, int] | None:
        if self.steering.stop_requested.is_set():
            return RunState.STOPPED, "stopped on request", 0
        caps = self.settings.caps
        best = self._best() if caps.target_val_bpb is not None else None  # a scan of the run: only when it matters
        if best is not None and best.val_bpb <= caps.target_val_bpb:  # type: ignore[operator]
            return (RunState.FINISHED, f"reached the target val_bpb {caps.target_val_bpb:g} (kept #{best.seq}: "
                                       f"{best.val_bpb:.6f})", 0)
        count = self._counted()
        if self.settings.caps.max_experiments is not None and count >= self.settings.caps.max_experiments:
            return RunState.FINISHED, f"reached {count} experiments (cap {self.settings.caps.max_experiments})", 0
        hours = (time.monotonic() - self.started) / 3600
        if self.settings.caps.max_hours is not None and hours >= self.settings.caps.max_hours:
            return RunState.FINISHED, f"ran {hours:.2f} h (cap {self.settings.caps.max_hours:g} h)", 0
        spent = store.spent_usd(self.conn, self.run_id)
        if self.settings.caps.max_usd is not None and spent >= self.settings.caps.max_usd:
            return RunState.FINISHED, f"spent ${spent:.2f} (cap ${self.settings.caps.max_usd:.2f})", 0
        if caps.patience is not None and len(since := self._since_keep()) >= caps.patience:
            return (RunState.FINISHED,
                    f"{len(since)} candidates in a row ended without a keep (patience {caps.patience})", 0)
        if self.agent_done and not self.flights and not self.ready and not self.queue:
            return RunState.FINISHED, self.agent_done, 0
        return None

    def _counted(self) -> int:
        """The run's candidates that ended, as the experiment cap counts them (the ones in flight are counted by
        `_next_work` before it starts another)."""
        return len([e for e in self._experiments()
                    if e.role is None and e.status not in OPEN and not interrupted(e)])

    def _since_keep(self) -> list[store.Experiment]:
        """The run's candidates that ended after its latest keep, newest first: discarded, failed or blocked (not the
        measurement seeds, those still running or waiting to be judged, nor those closed to run again)."""
        ended = []
        for e in reversed(self._experiments()):
            if e.role is not None or e.status in UNSETTLED or interrupted(e):
                continue
            if e.status == Status.KEEP:
                break
            ended.append(e)
        return ended

    def _watch(self) -> None:
        """The notices the loop's state raises: a stall, a run of failures, the spending (each once until it
        clears; the spending once per invocation)."""
        if self.notices is None:
            return
        now, notify = time.monotonic(), self.settings.notify
        if self.was_paused:  # a pause is no stall
            self.finished_at = now
        idle = now - self.finished_at
        if not self.stall_noticed and idle > 2 * self.settings.time_budget_s:  # the cheap test first
            expected = self._expected_s()
            if idle > 2 * expected:
                self.stall_noticed = True
                self._notify("stalled", f"nothing finished for {idle:.0f} s",
                             f"one experiment takes about {expected:.0f} s; {len(self.flights)} in flight")
        since = self._since_keep()
        failed = next((i for i, e in enumerate(since) if e.status not in FAILED), len(since))
        if failed >= notify.failures_in_a_row and not self.failures_noticed:
            self._notify("failures", f"{failed} candidates in a row failed",
                         f"the last, #{since[0].seq}: {since[0].status}: {since[0].exit_reason}")
        self.failures_noticed = failed >= notify.failures_in_a_row
        cap = self.settings.caps.max_usd
        if cap is not None and not self.spend_noticed:
            spent = store.spent_usd(self.conn, self.run_id)
            if spent >= notify.spend_fraction * cap:
                self.spend_noticed = True
                self._notify("spend", f"spent ${spent:.2f} of the ${cap:.2f} cap",
                             f"past {notify.spend_fraction:.0%} of [caps] max_usd; the run stops at the cap")

    def _expected_s(self) -> float:
        """One experiment's expected wall time: the median of the run's experiments' wall times (the budget at
        least), or the training phase's deadline before one ended."""
        walls = [e.total_seconds for e in self._experiments() if e.total_seconds]
        if not walls:
            return training_deadline_s(self.settings.limits, device_of(self.pre.gpu_uuid))
        return max(self.settings.time_budget_s, statistics.median(walls))

    def _owed_work(self) -> bool:
        """Whether an ending run still owes work: judging what finished (its noise, its confirmations)."""
        return bool(self.confirming or self.tests_owed or (self.unjudged and self.noise_open))

    def _paused(self, paused: bool) -> None:
        """Record the run as paused once a pause asked for has let what was in flight finish, and running again
        on resume."""
        if paused != self.was_paused and not (self.flights and not paused):
            store.update_run(self.conn, self.run_id, state=RunState.PAUSED if paused else RunState.RUNNING)
            if paused:
                self.say("paused: `autoresearch resume` goes on")
        self.was_paused = paused

    # --- filling the slots -----------------------------------------------------------------------------

    def _free_slots(self) -> list[Slot]:
        busy = {flight.slot.name for flight in self.flights.values()}
        return [slot for slot in self._slots() if slot.name not in busy]

    def _slots(self) -> list[Slot]:
        """The executor's slots this run uses: at most [executor] slots of a cluster's (a local executor has as
        many as asked for)."""
        return self.executor.slots()[:self.settings.executor.slots or None]

    def _fill(self) -> None:
        present = {slot.name for slot in self.executor.slots()}
        for gone in [f for f in self.tests_owed if f.slot.name not in present]:  # its node left with the model
            self.tests_owed.remove(gone)
            self._lost(gone, f"{gone.slot.name} is gone")
        for slot in self._free_slots():
            owed = next((f for f in self.tests_owed if f.slot.name == slot.name), None)
            if owed is not None:  # a kept model is scored on the test split where it is, before anything else
                self.tests_owed.remove(owed)
                self._submit_test(owed)
                continue
            work = self._next_work()
            if work is None:
                return
            self._submit(slot, work)

    def _next_work(self) -> Work | None:
        best = self._best()
        if best is None:  # the baseline runs alone: everything after it is measured against it
            if self.flights or self.closing is not None:
                return None
            rerun = next((w for w in self.queue if w.baseline), None)
            if rerun is not None:
                self.queue.remove(rerun)
                return rerun
            tip = gitrepo.branch_tip(self.repo, self.options.tag)
            return Work(gitrepo.read_file(self.repo, tip), "baseline", tip, baseline=True)
        if self.closing is not None:  # only what judging what finished needs
            owed = next((w for w in self.queue if w.role == Role.CONFIRM or (w.role == Role.NOISE and self.unjudged)),
                        None)
            if owed is not None:
                self.queue.remove(owed)
            return owed
        if self.queue:
            return self.queue.popleft()
        cap = self.settings.caps.max_experiments
        if cap is not None and self._counted() + self._candidates_in_flight() >= cap:
            return None
        return self.ready.popleft() if self.ready else None

    def _candidates_in_flight(self) -> int:
        return len([f for f in self.flights.values() if f.test_of is None and f.work.role is None])

    def _submit(self, slot: Slot, work: Work) -> None:
        """Check, commit, record and start one train.py on slot (a blocked one is recorded and never starts)."""
        self.engine_episode = False
        code = work.code or gitrepo.read_file(self.repo, work.commit_sha)  # type: ignore[arg-type]
        seq = store.next_seq(self.conn, self.run_id)
        candidate = Candidate(code, work.description, run_id=self.run_id, seq=seq, parent_sha=work.parent_sha,
                              seed=work.seed)
        blocked = check_candidate(self.recorder, candidate, self.settings.policy)
        if isinstance(blocked, TrialResult):
            if work.proposal is not None:
                self._record_proposal(work.proposal, blocked.experiment_id)
            self._blocked(blocked, work)
            return
        self.blocked = 0
        began = time.monotonic()
        if work.role is None or work.commit_sha is None:
            sha = gitrepo.commit_candidate(self.repo, work.parent_sha, code,
                                           commit_message(self.options.tag, seq, work.description))
        else:
            sha = work.commit_sha
        gitrepo.set_experiment_ref(self.repo, self.options.tag, seq, sha)
        commit_s = time.monotonic() - began
        candidate = dataclasses.replace(candidate, commit_sha=sha)
        image_id = self.pre.sandbox.image_id(self.pre.image)
        cache = self._compile_cache(image_id, work.baseline) if self.executor.name == "local" else None  # per host
        job = start_candidate(self.ws, self.recorder, candidate, blocked, self.pre, self.settings.policy, slot,
                              cache, keep_handover=True, role=work.role)
        if work.proposal is not None:
            self._record_proposal(work.proposal, job.experiment_id)
        deadline = time.monotonic() + self._job_deadline_s(slot)
        ticket = self.executor.submit(slot, job)
        self.flights[ticket] = Flight(ticket, slot, work, job.experiment_id, seq, blocked, deadline,
                                      LiveRecorder(self.ws.store_path, job.experiment_id), commit_s, image_id)
        where = f" on {slot.name}" if len(self.executor.slots()) > 1 else ""
        self.say(f"#{seq} {as_data(work.description, DESCRIPTION_CHARS)} ({sha[:8]}){where}: training")

    def _job_deadline_s(self, slot: Slot) -> float:
        """When the loop gives a job up: the phases' own deadlines (which the slot enforces) and a margin."""
        return training_deadline_s(self.settings.limits, device_of(slot.gpu_uuid)) + SCORE_DEADLINE_S + START_MARGIN_S

    def _compile_cache(self, image_id: str, baseline: bool) -> CompileCache | None:
        """The run's compile seed for one experiment (runner/phases/compile_seed.py): the recorded seed of the
        image in use to start from, else the baseline's to fill; None: a later experiment without a seed."""
        folder = seed_folder(self.pre.labels[WORKSPACE_LABEL], self.run_id, image_id)
        recorded = self.compile_seed
        if recorded is not None and recorded.get("image_id") == image_id:
            return CompileCache(folder, Seed(recorded["digest"], recorded["files"], recorded["bytes"]))
        return CompileCache(folder) if baseline else None

    # --- the agent, ahead of the slots ---------------------------------------------------------------------

    def _prefetch(self) -> None:
        """Ask the agent for the next proposal while it can be ahead: one per free slot, plus prefetch."""
        best = self._best()
        if best is None or self.proposer.busy or self.agent_done or self.closing is not None:
            return
        if time.monotonic() < self.propose_after:
            return
        wave = self.settings.executor.wave
        if wave:  # the wave's k proposals all come from the best it started from
            if self.wave_asked >= wave:
                if self._wave_open():
                    return
                self.wave, self.wave_asked = self.wave + 1, 0
        elif len(self.ready) >= len(self._free_slots()) + self.settings.executor.prefetch - len(self.queue):
            return
        cap = self.settings.caps.max_experiments
        if cap is not None and self._counted() + self._candidates_in_flight() + len(self.ready) >= cap:
            return  # no proposal the experiment cap would leave unrun (it costs the agent's tokens)
        self.proposer.ask(self._context(best), self.wave if wave else None)
        self.wave_asked += 1

    def _wave_open(self) -> bool:
        """Whether the current wave still has a proposal waiting or a member in flight."""
        return bool([w for w in self.ready if w.wave == self.wave]) or any(
            f.work.wave == self.wave and f.test_of is None for f in self.flights.values()) or self.proposer.busy

    def _take_proposals(self) -> None:
        for answer, seconds, wave, parent in self.proposer.answers():
            if isinstance(answer, Exhausted):
                self.agent_done = str(answer)
            elif isinstance(answer, AgentFatal):
                self.ending = RunState.STOPPED, f"the agent cannot go on: {answer}", 2
            elif isinstance(answer, AgentViolation):
                self._agent_violated(answer, parent, wave)
            elif isinstance(answer, AgentError):
                self._agent_failed(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                self.agent_errors = 0
                self.ready.append(Work(answer.train_py.encode(), answer.description, parent, proposal=answer,
                                       propose_s=seconds, wave=wave))

    def _agent_violated(self, exc: AgentViolation, parent: str | None, wave: int | None) -> None:
        """A coding agent broke its confinement: recorded as a violation with the evidence, never committed or run,
        and counted with the policy's blocks."""
        seq = store.next_seq(self.conn, self.run_id)
        exp_id = self.recorder.blocked(f"the agent broke its confinement: {exc}", [exc.finding], Status.VIOLATION,
                                       run_id=self.run_id, seq=seq, parent_sha=parent,
                                       description=f"(confinement violation) {exc}"[:DESCRIPTION_CHARS])
        store.link_agent_turns(self.conn, exc.turn_ids, exp_id)
        self.say(f"#{seq} the agent broke its confinement: {exc}")
        self.blocked += 1
        if wave is not None:
            self.wave_asked -= 1
        if self.blocked >= MAX_BLOCKED_IN_A_ROW:
            self.ending = (RunState.STOPPED, f"the agent cannot go on: {self.blocked} proposals in a row were blocked "
                           "or broke the agent's confinement", 2)

    def _agent_failed(self, exc: AgentError) -> None:
        """An error of the agent's: recorded, backed off, bounded."""
        self.agent_errors += 1
        if self.settings.executor.wave:
            self.wave_asked -= 1
        if self.agent_errors >= MAX_AGENT_ERRORS_IN_A_ROW:
            self.ending = (RunState.STOPPED, f"the agent cannot go on: {self.agent_errors} failed proposals in a "
                           f"row, the last: {exc}", 2)
            return
        wait = BACKOFF_S[min(self.agent_errors, len(BACKOFF_S)) - 1]
        self.say(f"the agent failed ({exc}); trying again in {wait} s")
        self.propose_after = time.monotonic() + wait

    def _context(self, best: store.Experiment) -> ProposalContext:
        """What the agent reads for its next proposal: the run's record as its memory (runner/agents/memory.py),
        with the notes of its latest proposal (one waiting for a slot has not recorded them yet)."""
        tip = gitrepo.branch_tip(self.repo, self.options.tag)
        experiments = [e for e in self._experiments() if e.role is None]
        running = [HistoryRow(e.seq, (e.commit_sha or "-")[:7], None, e.status, e.description)
                   for e in experiments if e.status in OPEN]
        running += [HistoryRow(0, "-", None, "proposed", w.description) for w in self.ready]
        ended = [e for e in experiments if e.status not in OPEN]
        last_failure = failure_tail(ended[-1]) if ended and ended[-1].status in FAILED else None
        ran = [e for e in ended if e.status != Status.BLOCKED]
        summary = memory.summarize(ran[-1], store.metric_points(self.conn, ran[-1].id)) if ran else None
        waiting = [w.proposal.notes for w in self.ready if w.proposal is not None and w.proposal.notes is not None]
        return ProposalContext(
            program_md=_read(self.ws.root / "program.md"), prepare_py=_read(self.ws.root / "prepare.py"),
            train_py=gitrepo.read_file(self.repo, tip).decode(errors="replace"),
            history=[memory.history_row(e) for e in ended], last_failure=last_failure, best_val_bpb=best.val_bpb,
            in_flight=running, recent_changes=self._recent_changes(ended), last_summary=summary,
            notes=waiting[-1] if waiting else store.latest_notes(self.conn, self.run_id), parent_sha=tip)

    def _recent_changes(self, ended: list[store.Experiment]) -> list[Change]:
        """The newest keeps and near misses that changed train.py (the baseline did not), with their diffs."""
        changes: list[Change] = []
        for e in reversed(ended):
            if len(changes) == CHANGES_SHOWN:
                break
            if (e.status == Status.KEEP or views.near_miss(e)) and e.commit_sha and e.parent_sha:
                diff = gitrepo.diff_text(self.repo, e.parent_sha, e.commit_sha)
                if diff:
                    changes.append(memory.change(e, diff))
        return changes

    def _record_proposal(self, proposal: Proposal, experiment_id: int) -> None:
        """Link a proposal's model calls to the experiment it became, and record the notes it left."""
        store.link_agent_turns(self.conn, proposal.turn_ids, experiment_id)
        if proposal.notes is not None:
            store.add_agent_notes(self.conn, self.run_id, experiment_id, proposal.notes)  # type: ignore[arg-type]

    # --- what the slots send back ------------------------------------------------------------------------

    def _on_event(self, event) -> None:
        flight = self.flights.get(event.ticket)
        if flight is None:  # a job given up as lost that ended after all
            if isinstance(event, Finished):
                self.executor.release(event.ticket)
            return
        if isinstance(event, Progress) and flight.live is not None:
            flight.live.point(event.point)
        elif isinstance(event, Sampled) and flight.live is not None:
            flight.live.sample(event.sample)
        elif isinstance(event, Lost):
            self._lost(self._land(flight), event.reason, engine=event.engine, fatal=event.fatal)
        elif isinstance(event, Finished):
            self.finished_at, self.stall_noticed = time.monotonic(), False
            self._land(flight)
            if isinstance(event.result, ScoreTestResult):
                self._tested(flight, event.result)
            else:
                self._trained(flight, event.result)

    def _land(self, flight: Flight) -> Flight:
        del self.flights[flight.ticket]
        if flight.live is not None:
            flight.live.close()
        return flight

    def _lost(self, flight: Flight, reason: str, engine: bool = False, fatal: BaseException | None = None) -> None:
        """A job whose slot went away under it: closed as interrupted (no cap counts it) and run again."""
        if fatal is not None:
            raise fatal
        if flight.test_of is not None:  # the kept model went with its slot: the keep stands, untested
            self.say(f"#{flight.seq}: the held-out test scoring was lost ({reason})")
            self._note(flight.test_of, Status.KEEP, None)
            return
        self.recorder.interrupted(flight.experiment_id, f"{INTERRUPTED} {reason}")
        experiment = store.get_experiment(self.conn, flight.experiment_id)
        self._rerun(experiment)  # type: ignore[arg-type]
        if experiment.role == Role.NOISE:  # type: ignore[union-attr]
            self.noise_open -= 1  # counted again by the re-run
        self.say(f"#{flight.seq} interrupted ({reason}): it runs again")
        if engine and self.executor.name == "local":
            self._engine_lost(reason)

    def _record_nodes(self) -> None:
        """What the executor knows of its nodes, into the store for the TUI and `status` (every NODES_EVERY_S)."""
        now = time.monotonic()
        if now < self.nodes_recorded_at + NODES_EVERY_S:
            return
        self.nodes_recorded_at = now
        slots = self.executor.slots()
        device = slots[0].device if slots else None
        names = [slot.name for slot in slots]
        if names != self.recorded_slots:  # a Ray node joined or left
            self.recorded_slots = names
            store.update_run(self.conn, self.run_id, slots_json=[dataclasses.asdict(slot) for slot in slots])
        for node in self.executor.nodes():
            store.set_node(self.conn, self.run_id, node.node, state=node.state, gpus=node.gpus, address=node.address,
                           device=device, note=node.reason or None)

    def _watch_deadlines(self) -> None:
        """The loop's own deadline on every job: a job past it is cancelled, then given up as lost."""
        now = time.monotonic()
        for flight in list(self.flights.values()):
            if now > flight.deadline and flight.cancelled_at is None:
                flight.cancelled_at = now
                self.executor.cancel(flight.ticket)
            elif flight.cancelled_at is not None and now > flight.cancelled_at + CANCEL_GRACE_S:
                self.executor.cancel(flight.ticket)
                self._lost(self._land(flight), f"{flight.slot.name} did not end the job past its deadline")

    def _trained(self, flight: Flight, trained: TrainResult) -> None:
        """A training job ended: record how, then judge it by its role."""
        work = flight.work
        result = close_trial(self.recorder, flight.experiment_id, trained, self.settings.policy, flight.slot,
                             self.pre.sandbox, flight.static, self._baseline_overhead())
        self.engine_losses = 0
        self._compile_seeded(result, flight.image_id, work.baseline)
        timings = {**result.timings, "propose": work.propose_s, "commit": flight.commit_s}
        self.recorder.judged(result.experiment_id, result.status, timings_json=timings)
        result = dataclasses.replace(result, timings=timings)
        if work.baseline:
            self._baseline_done(flight, result)
        elif work.role == Role.NOISE:
            self._noise_done(flight, result)
        elif work.role == Role.CONFIRM:
            self._confirmation_done(flight, result)
        else:
            self._candidate_done(flight, result)

    def _baseline_done(self, flight: Flight, result: TrialResult) -> None:
        if result.status != Status.OK:
            self.executor.release(flight.ticket)
            skipped = result.exit_reason == SKIPPED_REASON or self.steering.stop_requested.is_set()
            self._note(result, result.status, None)
            if skipped:  # a skipped baseline is simply run again
                self.queue.appendleft(flight.work)
            else:
                self.ending = (RunState.STOPPED,
                               f"the baseline did not score ({result.status}: {result.exit_reason})", 1)
            return
        self._keep(flight, result, None)
        self._queue_noise(store.get_experiment(self.conn, result.experiment_id), already=0)  # type: ignore[arg-type]

    def _queue_noise(self, base: store.Experiment, already: int) -> None:
        """The baseline's other seeds, which measure the run's noise (none when noise_seeds is 1)."""
        seeds = self.settings.keep.noise_seeds
        if base.val_bpb is not None and not self.noise_values:
            self.noise_values = [base.val_bpb]
        for seed in range(1 + already, seeds):
            self.noise_open += 1
            self.queue.append(Work(b"", f"{base.description.removesuffix(RERUN)}: noise seed {seed}", base.commit_sha,
                                   Role.NOISE, seed, commit_sha=base.commit_sha))

    def _noise_done(self, flight: Flight, result: TrialResult) -> None:
        self.executor.release(flight.ticket)
        self.noise_open -= 1
        self._note(result, result.status, None)
        if result.status == Status.OK:
            self.noise_values.append(result.val_bpb)  # type: ignore[arg-type]
            self.say(f"#{flight.seq} noise seed {flight.work.seed}: val_bpb {result.val_bpb:.6f}")
        else:
            self.say(f"#{flight.seq} noise seed {flight.work.seed} did not score ({result.status})")
        if self.noise_open > 0:
            return
        values = self.noise_values
        if len(values) >= 2:
            std = statistics.stdev(values)
            store.add_noise(self.conn, flight.work.commit_sha, values, statistics.fmean(values), std,
                            run_id=self.run_id)
            threshold = keep_threshold(self.conn, self.settings.keep, self.run_id)
            self.say(f"noise: val_bpb spreads {std:.6f} (std) over {len(values)} seeds of the baseline; "
                     f"a keep must gain more than {threshold:.6f}")
        else:
            self.say("noise: too few baseline seeds scored to measure it; the keep rule uses its threshold alone")
        unjudged, self.unjudged = self.unjudged, []
        for experiment_id, held in unjudged:
            self._judge_scored(experiment_id, held, None)

    def _candidate_done(self, flight: Flight, result: TrialResult) -> None:
        if result.status != Status.OK:
            self.executor.release(flight.ticket)
            self._note(result, result.status, None)
            self._tell_agent(flight, result.status, None, kept=False)
            self.say(f"#{flight.seq} {result.status}: {result.exit_reason}")
            if flight.work.wave is not None:
                self._judge_wave(flight.work.wave)
            return
        if self.noise_open > 0:  # judged once the run's noise is known; its model waits on its slot
            self.unjudged.append((result.experiment_id, flight))
            self.say(f"#{flight.seq} scored val_bpb {result.val_bpb:.6f}: judged once the noise is measured")
            return
        if flight.work.wave is not None:
            self.executor.release(flight.ticket)
            self.wave_members.setdefault(flight.work.wave, []).append(result.experiment_id)
            self._judge_wave(flight.work.wave)
            return
        self._judge_scored(result.experiment_id, flight, result)

    def _judge_scored(self, experiment_id: int, flight: Flight | None = None, result: TrialResult | None = None,
                      rival_ids: list[int] = ()) -> None:
        """The keep rule on one scored candidate, against the best now (flight: when its model is still on its
        slot, for the test scoring of a keep)."""
        experiment = store.get_experiment(self.conn, experiment_id)
        best = self._best()
        parent = self._kept_by_commit(experiment.parent_sha)  # type: ignore[union-attr]
        noise = store.latest_noise(self.conn, self.run_id)  # the run's own, else `autoresearch noise`'s
        verdict = judge(experiment.val_bpb, best, parent, keep_threshold(self.conn, self.settings.keep,  # type: ignore
                                                                         self.run_id),
                        noise.std_bpb if noise else None, self.settings.keep.confirm_multiplier)
        extra = {"gain_over_parent": parent.val_bpb - experiment.val_bpb} if verdict.near_miss else {}  # type: ignore
        if rival_ids:
            extra["wave_of"] = list(rival_ids)
        judged = {**verdict.to_json(), **extra}
        if verdict.awaiting_confirmation:
            if flight is not None:
                self.executor.release(flight.ticket)
            self.recorder.judged(experiment_id, Status.OK, judge_json=judged)
            self.confirming[experiment_id] = verdict
            self.queue.appendleft(Work(b"", f"{experiment.description}: confirmation seed",  # type: ignore[union-attr]
                                       experiment.parent_sha, Role.CONFIRM, CONFIRM_SEED,  # type: ignore[union-attr]
                                       commit_sha=experiment.commit_sha, confirms=experiment_id))  # type: ignore
            self.say(f"#{experiment.seq} gains {verdict.gain:.6f}, within {self.settings.keep.confirm_multiplier:g} "
                     "times the noise: a second seed decides")
            return
        self._settle(experiment, verdict.status, judged, flight, result)

    def _settle(self, experiment: store.Experiment, status: str, judged: dict, flight: Flight | None,
                result: TrialResult | None) -> None:
        """Record a candidate's keep or discard; a keep advances the branch and has its model scored on test."""
        self.recorder.judged(experiment.id, status, judge_json=judged)
        outcome_result = result or self._as_result(experiment)
        self._tell_agent_experiment(experiment, status)
        if status == Status.KEEP:
            self._keep(flight, dataclasses.replace(outcome_result, status=Status.KEEP), judged)
            before = f", {judged['gain']:.6f} below the best ({judged['best_bpb']:.6f})" if "gain" in judged else ""
            self._notify("best", f"new best val_bpb {experiment.val_bpb:.6f}",
                         f"#{experiment.seq} {experiment.description}: val_bpb {experiment.val_bpb:.6f}{before}")
            return
        if flight is not None:
            self.executor.release(flight.ticket)
        self._note(outcome_result, status, None)
        near = " (a near miss: it beat its parent)" if judged.get("near_miss") else ""
        self.say(f"#{experiment.seq} {status}: val_bpb {experiment.val_bpb:.6f}{near}")

    def _keep(self, flight: Flight | None, result: TrialResult, judged: dict | None) -> None:
        """A kept experiment: the branch advances to it, and its model is scored on the test split where it is."""
        experiment = store.get_experiment(self.conn, result.experiment_id)
        at = gitrepo.keep_on_branch(self.repo, self.options.tag, experiment.commit_sha)  # type: ignore[union-attr, arg-type]
        if at != experiment.commit_sha:  # type: ignore[union-attr]
            judged = {**(judged or {}), "branch_commit": at}
        self.recorder.judged(result.experiment_id, Status.KEEP, **({"judge_json": judged} if judged else {}))
        self.say(f"#{experiment.seq} keep: val_bpb {result.val_bpb:.6f}")  # type: ignore[union-attr]
        if flight is None:
            self._note(result, Status.KEEP, None)
            return
        test = Flight(0, flight.slot, flight.work, result.experiment_id, flight.seq, [], 0.0, test_of=result,
                      model_ticket=flight.ticket)
        if any(f.slot.name == flight.slot.name for f in self.flights.values()):
            self.tests_owed.append(test)  # its slot took other work meanwhile: scored when it frees
        else:
            self._submit_test(test)

    def _submit_test(self, test: Flight) -> None:
        """Start the test scoring of a kept model on the slot that holds it."""
        result = test.test_of
        job = ScoreTestJob(result.experiment_id, test.model_ticket, self.settings.limits,  # type: ignore[union-attr, arg-type]
                           {**self.pre.labels, EXPERIMENT_LABEL: str(result.experiment_id),  # type: ignore[union-attr]
                            RUNNER_PID_LABEL: str(os.getpid())}, str(Path(result.work_dir or ".")))  # type: ignore
        test.ticket = self.executor.submit(test.slot, job)
        test.deadline = time.monotonic() + SCORE_DEADLINE_S + START_MARGIN_S
        test.began = time.monotonic()
        self.flights[test.ticket] = test

    def _tested(self, flight: Flight, tested: ScoreTestResult) -> None:
        self.executor.release(flight.model_ticket)  # type: ignore[arg-type]
        result = flight.test_of
        timings = {**result.timings, "test_scoring": time.monotonic() - flight.began}  # type: ignore[union-attr]
        self.recorder.judged(result.experiment_id, Status.KEEP, test_bpb=tested.test_bpb,  # type: ignore[union-attr]
                             timings_json=timings)
        self._note(result, Status.KEEP, tested.test_bpb)  # type: ignore[arg-type]

    def _confirmation_done(self, flight: Flight, result: TrialResult) -> None:
        """A close keep's second seed: the mean of both seeds decides, against the best now."""
        first_id = flight.work.confirms
        first = self.confirming.pop(first_id, None)  # type: ignore[arg-type]
        self._note(result, result.status, None)
        original = store.get_experiment(self.conn, first_id) if first_id is not None else None
        if first is None or original is None:
            self.executor.release(flight.ticket)
            return
        if result.status != Status.OK:  # the second seed failed: the keep is not confirmed
            self.executor.release(flight.ticket)
            self._settle(original, Status.DISCARD, {**first.to_json(), "confirmed_by": result.experiment_id,
                                                    "unconfirmed": f"the second seed ended {result.status}"},
                         None, None)
            return
        self.recorder.judged(result.experiment_id, Status.OK, judge_json={"confirms": first_id})
        verdict = confirm(first, [original.val_bpb, result.val_bpb], self._best(),  # type: ignore[list-item, arg-type]
                          result.experiment_id)
        self.say(f"#{original.seq} second seed: val_bpb {result.val_bpb:.6f}, mean of both "
                 f"{statistics.fmean(verdict.seeds):.6f}")
        # a confirmed keep's test score comes from the second seed's model, which is here on this slot
        tested = dataclasses.replace(self._as_result(original), work_dir=result.work_dir)
        self._settle(original, verdict.status, verdict.to_json(),
                     flight if verdict.status == Status.KEEP else None, tested)
        if verdict.status != Status.KEEP:
            self.executor.release(flight.ticket)

    def _judge_wave(self, wave: int) -> None:
        """Wave mode: once every member of a wave ended, its best member is judged, and the others discarded."""
        if self._wave_members_open(wave):
            return
        members = [store.get_experiment(self.conn, i) for i in self.wave_members.pop(wave, [])]
        scored = sorted((e for e in members if e is not None and e.val_bpb is not None), key=lambda e: e.val_bpb)
        if not scored:
            return
        winner, rest = scored[0], scored[1:]
        for loser in rest:
            self._settle(loser, Status.DISCARD, {"wave": wave, "lost_to": winner.id}, None, None)
        self._judge_scored(winner.id, rival_ids=[e.id for e in rest])

    def _wave_members_open(self, wave: int) -> bool:
        return any(w.wave == wave for w in self.ready) or any(
            f.work.wave == wave and f.test_of is None for f in self.flights.values()) or (
            wave == self.wave and self.proposer.busy)

    def _note(self, result: TrialResult, status: str, test_bpb: float | None) -> None:
        """The git note of an experiment's final word."""
        experiment = store.get_experiment(self.conn, result.experiment_id)
        if experiment is not None and experiment.commit_sha:
            gitrepo.result_note(self.repo, experiment.commit_sha, result_note(status, result, test_bpb))

    def _tell_agent(self, flight: Flight, status: str, val_bpb: float | None, kept: bool) -> None:
        proposal = flight.work.proposal or Proposal(flight.work.code.decode(errors="replace"), flight.work.description)
        self.proposer.observe(Outcome(proposal, status, val_bpb, kept))

    def _tell_agent_experiment(self, experiment: store.Experiment, status: str) -> None:
        code = gitrepo.read_file(self.repo, experiment.commit_sha).decode(errors="replace")  # type: ignore[arg-type]
        self.proposer.observe(Outcome(Proposal(code, experiment.description), status, experiment.val_bpb,
                                      status == Status.KEEP))

    def _as_result(self, experiment: store.Experiment) -> TrialResult:
        """A recorded, scored experiment as a TrialResult (for one judged after its slot moved on)."""
        return TrialResult(experiment.id, experiment.status, experiment.exit_reason or "", experiment.val_bpb,
                           experiment.reported_json or {}, experiment.training_seconds, experiment.total_seconds or 0.0,
                           experiment.gpu_busy_seconds, experiment.host_peak_vram_mb, "",
                           timings=experiment.timings_json or {},
                           work_dir=str(Path(experiment.log_path).parent) if experiment.log_path else None)

    def _experiments(self) -> list[store.Experiment]:
        """The run's experiments, read again only after this loop wrote to the store (it is their only writer)."""
        changes = self.conn.total_changes
        if self._read_at != changes:
            self._read, self._read_at = store.list_experiments(self.conn, self.run_id), changes
        return self._read

    def _best(self) -> store.Experiment | None:
        return views.best(self._experiments())

    def _kept_by_commit(self, sha: str | None) -> store.Experiment | None:
        """The kept experiment whose train.py is at commit sha (a candidate's parent)."""
        kept = views.kept(self._experiments())
        return next((e for e in reversed(kept) if e.commit_sha == sha or (e.judge_json or {}).get("branch_commit")
                     == sha), None)

    def _compile_seeded(self, result: TrialResult, image_id: str, baseline: bool) -> None:
        """Record the seed the baseline sealed; say what the baseline's compile cache did, or why a seed was
        refused (the cold notes that say why)."""
        if result.compile_seed is not None:
            self.compile_seed = {**dataclasses.asdict(result.compile_seed), "image_id": image_id,
                                 "experiment_id": result.experiment_id}
            store.update_run(self.conn, self.run_id, compile_seed_json=self.compile_seed)
        if baseline or result.compile_cache.startswith("cold: "):
            self.say(f"compile cache: {result.compile_cache}")

    def _engine_lost(self, reason: str) -> None:
        """The sandbox's engine failed under this host's jobs: wait for it, then run them again."""
        if self.engine_episode:  # one engine loss takes every slot's job with it: counted and waited for once
            return
        self.engine_episode = True
        self.engine_losses += 1
        name = self.pre.sandbox.name
        if self.engine_losses >= MAX_ENGINE_LOSSES_IN_A_ROW:
            raise SandboxGaveUp(f"the {name} sandbox failed under {self.engine_losses} experiments in a row (the "
                                f"last: {reason}); `autoresearch run` resumes this run and re-runs the last one")
        self.say(f"{INTERRUPTED} {reason}; waiting up to {ENGINE_WAIT_S // 60} min for it to come back")
        deadline = time.monotonic() + ENGINE_WAIT_S
        while not self.pre.sandbox.reachable():
            if self.steering.stop_requested.is_set():
                return  # the loop then stops on request; the interrupted experiments wait for the next run
            if time.monotonic() > deadline:
                raise SandboxGaveUp(f"the {name} sandbox did not come back within {ENGINE_WAIT_S // 60} min: "
                                    "start its engine, then `autoresearch run` resumes this run")
            self.steering.wait(ENGINE_POLL_S)
        self.pre.sandbox.close()
        self.pre = prerequisites(self.ws, self.settings, self.pre.gpu_uuid)
        self.executor.host = self._host()  # type: ignore[attr-defined]
        for experiment in self._experiments():  # their phases outlived the connection
            if interrupted(experiment) and experiment.ended_at and experiment.ended_at > time.time() - ENGINE_WAIT_S:
                remove_labelled(self.pre.sandbox, {**self.pre.labels, EXPERIMENT_LABEL: str(experiment.id)})
        self.say(f"the {self.pre.sandbox.name} sandbox is back: re-running the interrupted experiments")

    def _blocked(self, result: TrialResult, work: Work) -> None:
        self.blocked += 1
        self.say(f"blocked by the policy: {result.findings[0]['message'] if result.findings else ''}")
        self.proposer.observe(Outcome(work.proposal or Proposal(work.code.decode(errors="replace"), work.description),
                                      Status.BLOCKED, None, False))
        if work.wave is not None:
            self._judge_wave(work.wave)
        if self.blocked >= MAX_BLOCKED_IN_A_ROW:
            self.ending = RunState.STOPPED, f"the agent cannot go on: the policy blocked {self.blocked} candidates " \
                                            "in a row", 2

    def _baseline_overhead(self) -> Overhead | None:
        """What the run's baseline (its first kept experiment) measured, for the budget rules; None before it."""
        baseline = views.baseline(self._experiments())
        return recorded_overhead(baseline.timings_json or {}) if baseline else None


def run_loop(ws: Workspace, options: RunOptions, say: Callable[[str], None] = print,
             notifier: NoticesFactory | None = None) -> int:
    return Loop(ws, options, say, notifier=notifier).run()


def rerun_description(interrupted: store.Experiment) -> str:
    return f"{interrupted.description.removesuffix(RERUN)}{RERUN}"


def commit_message(tag: str, seq: int, description: str) -> str:
    return f"{description}\n\nautoresearch run {tag}, experiment {seq}\n"


def result_note(status: str, result: TrialResult, test_bpb: float | None) -> str:
    return json.dumps({"status": status, "val_bpb": result.val_bpb, "test_bpb": test_bpb,
                       "reason": result.exit_reason, "experiment": result.experiment_id})


def failure_tail(experiment: store.Experiment) -> str:
    """The end of a failed experiment's log (the traceback), for the agent."""
    text = _read(Path(experiment.log_path)) if experiment.log_path else ""
    return f"{experiment.status}: {experiment.exit_reason}\n{text[-FAILURE_TAIL_CHARS:]}"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


"""`autoresearch run`: the research loop of one workspace.

Baseline first, then forever (or to a cap, or to `autoresearch stop`): propose, check, commit, train,
score, decide, record. The store is written before and after every step, so a runner killed at any
moment loses nothing that was recorded; the next `autoresearch run` with the same tag resumes: it
removes the dead runner's containers (by label) and re-runs the experiment it was in the middle of.
The baseline alone seeds the run's compile cache, which every later experiment starts from, read-only
and checked against the digest the run records (runner/phases/compile_seed.py).

Caps: `max_experiments` counts the run's experiments in total (so a resumed run stops where it was
meant to), except those closed as interrupted; `max_hours` counts this invocation's wall time;
`max_usd` the run's agent spending.
"""

import dataclasses
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autoresearch.runner.agents import Exhausted, make_agent
from autoresearch.runner.agents.base import (
    Agent,
    AgentError,
    AgentFatal,
    HistoryRow,
    Outcome,
    Proposal,
    ProposalContext,
)
from autoresearch.runner.check.dynamic_rules import Overhead, recorded_overhead
from autoresearch.runner.check.policy import policy_to_toml
from autoresearch.runner.errors import UserError
from autoresearch.runner.judge import keep_or_discard, keep_threshold
from autoresearch.runner.lock import runner_lock
from autoresearch.runner.phases.compile_seed import CompileCache, Seed, seed_folder
from autoresearch.runner.phases.experiment import SKIPPED_REASON, score_handover
from autoresearch.runner.phases.sources import source_lines
from autoresearch.runner.record import gitrepo, store, views
from autoresearch.runner.record.recorder import ExperimentRecorder
from autoresearch.runner.record.status import FAILED, INTERRUPTED, OPEN, RunState, Status, interrupted
from autoresearch.runner.record.untrusted import DESCRIPTION_CHARS, as_data
from autoresearch.runner.sandbox.base import (
    EXPERIMENT_LABEL,
    RUNNER_PID_LABEL,
    WORKSPACE_LABEL,
    SandboxUnavailable,
    remove_labelled,
)
from autoresearch.runner.sandbox.gpus import assigned_gpu
from autoresearch.runner.settings import Flags, resolve_settings
from autoresearch.runner.steering import Steering
from autoresearch.runner.trial import (
    Candidate,
    TrialResult,
    check_candidate,
    execute_candidate,
    prerequisites,
)
from autoresearch.runner.workspace import CONFIG_FILE, Workspace, require_workspace

MAX_AGENT_ERRORS_IN_A_ROW = 8  # with back-off, about 15 minutes of a failing API before the run stops
MAX_BLOCKED_IN_A_ROW = 10  # candidates the policy blocks before the run stops
MAX_ENGINE_LOSSES_IN_A_ROW = 3  # experiments the sandbox fails under, one after another, before the run stops
BACKOFF_S = (5, 10, 20, 40, 80, 160, 300, 300)
FAILURE_TAIL_CHARS = 4000
RERUN = " (re-run)"
ENGINE_WAIT_S = 900
ENGINE_POLL_S = 5


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
    sandbox: str | None = None  # --sandbox: the provider, named for this invocation
    time_budget_s: float | None = None  # --budget
    flavor: str | None = None

    def flags(self) -> Flags:
        return Flags(time_budget_s=self.time_budget_s, flavor=self.flavor, sandbox=self.sandbox,
                     max_experiments=self.max_experiments, max_hours=self.max_hours, max_usd=self.max_usd)


class Loop:
    """One invocation of `autoresearch run` on one workspace and tag."""

    def __init__(self, ws: Workspace, options: RunOptions, say: Callable[[str], None] = print):
        require_workspace(ws)
        self.ws, self.options, self.say = ws, options, say
        self.settings = resolve_settings(ws, options.flags())
        self.repo = gitrepo.open_repo(ws.root)
        self.started = time.monotonic()
        self.agent_errors = 0
        self.blocked = 0
        self.engine_losses = 0  # in a row: a candidate that takes the engine down every time must not loop forever
        self.rerun: store.Experiment | None = None  # the experiment a dead runner was in the middle of
        self.run_id: int | None = None
        self.compile_seed: dict | None = None  # the run's recorded compile seed (runs.compile_seed_json)
        try:
            self.agent: Agent = make_agent(self.settings.agent.name, settings=self.settings.agent,
                                           log_turn=self._log_turn, seed=options.seed)
        except AgentFatal as exc:
            raise UserError(str(exc)) from None

    def run(self) -> int:
        """Run until a cap, a stop or a fatal error; the exit code (0: ended as asked)."""
        with runner_lock(self.ws.state_dir):
            self._prepare()  # the agent, the sandbox, the image and the data: refused before anything is recorded
            try:
                self.conn = store.open_store(self.ws.store_path)
                self.recorder = ExperimentRecorder(self.conn)
                try:
                    self.run_id = self._open_run()
                    return self._steered()
                finally:
                    self.conn.close()
            finally:
                self.pre.sandbox.close()

    def _prepare(self) -> None:
        try:
            self.agent.preflight()
        except AgentFatal as exc:
            raise UserError(f"the {self.agent.name} agent cannot start: {exc}") from None
        gpu = assigned_gpu(self.settings.gpus, self.settings.flavor)
        self.pre = prerequisites(self.ws, self.settings, gpu)
        for line in source_lines(self.pre.source, self.pre.source_why, self.settings.flavor):
            self.say(line)
        if not self.pre.sandbox.isolated:
            self.say(f"WARNING: the {self.pre.sandbox.name} sandbox runs candidates WITHOUT isolation "
                     f"({self.pre.sandbox.notice()})")

    def _steered(self) -> int:
        with Steering(self.ws.store_path, self.run_id) as self.steering:
            try:
                state, reason, code = self._loop()
            except Exhausted as exc:
                state, reason, code = RunState.FINISHED, str(exc), 0
            except AgentFatal as exc:
                state, reason, code = RunState.STOPPED, f"the agent cannot go on: {exc}", 2
            except SandboxGaveUp as exc:
                state, reason, code = RunState.STOPPED, str(exc), 2
            except BaseException as exc:
                reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"runner error: {exc}"
                store.update_run(self.conn, self.run_id, state=RunState.CRASHED, ended_at=time.time(), note=reason)
                raise
        store.update_run(self.conn, self.run_id, state=state, ended_at=time.time(), note=reason)
        self.say(f"run {self.options.tag} {state}: {reason}")
        return code

    # --- the run's record ----------------------------------------------------------------------------

    def _open_run(self) -> int:
        """Resume the tag's run (closing what a dead runner left open) or start a new one."""
        existing = store.run_by_tag(self.conn, self.options.tag)
        if existing is None:
            base = gitrepo.start_branch(self.repo, self.options.tag)
            run_id = store.create_run(
                self.conn, tag=self.options.tag, agent=self.settings.agent.name,
                config_toml=(self.ws.root / CONFIG_FILE).read_text(), policy_toml=policy_to_toml(self.settings.policy),
                pid=os.getpid(), host=socket.gethostname(), time_budget_s=self.settings.time_budget_s,
                sandbox=self.pre.sandbox.name, source=self.pre.source)
            self.say(f"run {self.options.tag}: new, on branch {gitrepo.branch_name(self.options.tag)} "
                     f"from {base[:8]}")
            return run_id
        closed = self._close_interrupted(existing.id)
        self.compile_seed = existing.compile_seed_json
        store.update_run(self.conn, existing.id, state=RunState.RUNNING, pid=os.getpid(), host=socket.gethostname(),
                         ended_at=None, note=None, time_budget_s=self.settings.time_budget_s,
                         sandbox=self.pre.sandbox.name, source=self.pre.source)
        done = len(store.list_experiments(self.conn, existing.id))
        self.say(f"run {self.options.tag}: resuming after {done} experiments"
                 + (f"; re-running the interrupted #{closed[0].seq}" if closed else ""))
        return existing.id

    def _close_interrupted(self, run_id: int) -> list[store.Experiment]:
        """Experiments a dead runner left running: recorded as killed, queued for a re-run."""
        interrupted = [e for e in store.list_experiments(self.conn, run_id) if e.status in OPEN]
        for experiment in interrupted:
            self.recorder.interrupted(experiment.id, f"{INTERRUPTED} the runner stopped during this experiment")
        self.rerun = interrupted[-1] if interrupted else None
        return interrupted

    def _log_turn(self, **turn) -> int:
        return store.add_agent_turn(self.conn, run_id=self.run_id, experiment_id=None, **turn)

    # --- the loop ------------------------------------------------------------------------------------

    def _loop(self) -> tuple[str, str, int]:
        while True:
            ended = self._stop_reason()
            if ended:
                return ended
            if self.steering.paused.is_set():
                self._pause()
                continue
            best = self._best()
            if best is None:
                result = self._baseline()
                if result is None:  # the engine failed under it: run it again
                    continue
                skipped = result.exit_reason == SKIPPED_REASON or self.steering.stop_requested.is_set()
                if result.status != Status.KEEP and not skipped:  # a skipped baseline is simply run again
                    return RunState.STOPPED, f"the baseline did not score ({result.status}: {result.exit_reason})", 1
                continue
            self._experiment(best)

    def _stop_reason(self) -> tuple[str, str, int] | None:
        if self.steering.stop_requested.is_set():
            return RunState.STOPPED, "stopped on request", 0
        count = len([e for e in store.list_experiments(self.conn, self.run_id) if not interrupted(e)])
        if self.settings.caps.max_experiments is not None and count >= self.settings.caps.max_experiments:
            return RunState.FINISHED, f"reached {count} experiments (cap {self.settings.caps.max_experiments})", 0
        hours = (time.monotonic() - self.started) / 3600
        if self.settings.caps.max_hours is not None and hours >= self.settings.caps.max_hours:
            return RunState.FINISHED, f"ran {hours:.2f} h (cap {self.settings.caps.max_hours:g} h)", 0
        spent = store.spent_usd(self.conn, self.run_id)
        if self.settings.caps.max_usd is not None and spent >= self.settings.caps.max_usd:
            return RunState.FINISHED, f"spent ${spent:.2f} (cap ${self.settings.caps.max_usd:.2f})", 0
        return None

    def _pause(self) -> None:
        store.update_run(self.conn, self.run_id, state=RunState.PAUSED)
        self.say("paused: `autoresearch resume` goes on")
        while self.steering.paused.is_set() and not self.steering.stop_requested.is_set():
            self.steering.wait(5)
        store.update_run(self.conn, self.run_id, state=RunState.RUNNING)

    def _best(self) -> store.Experiment | None:
        return views.best(store.list_experiments(self.conn, self.run_id))

    def _baseline(self) -> TrialResult | None:
        """The branch tip's train.py, unchanged: the experiment every later one must beat."""
        tip = gitrepo.branch_tip(self.repo, self.options.tag)
        code = gitrepo.read_file(self.repo, tip)
        description = "baseline" if self.rerun is None else rerun_description(self.rerun)
        self.rerun = None
        return self._trial(Candidate(code, description, parent_sha=tip), Proposal(code.decode(), description), tip,
                           baseline=True)

    def _experiment(self, best: store.Experiment) -> None:
        rerun, self.rerun = self.rerun, None
        began = time.monotonic()
        if rerun is not None and rerun.commit_sha:
            code = gitrepo.read_file(self.repo, rerun.commit_sha)
            proposal = Proposal(code.decode(errors="replace"), rerun_description(rerun))
        else:
            proposal = self._propose(best)
            if proposal is None:
                return
        parent = gitrepo.branch_tip(self.repo, self.options.tag)
        candidate = Candidate(proposal.train_py.encode(), proposal.description, parent_sha=parent)
        result = self._trial(candidate, proposal, parent, propose_s=time.monotonic() - began)
        if result is None:
            return
        self.agent.observe(Outcome(proposal, result.status, result.val_bpb, result.status == Status.KEEP))

    def _propose(self, best: store.Experiment) -> Proposal | None:
        """The agent's next candidate, or None after an error (recorded, backed off, bounded)."""
        try:
            proposal = self.agent.propose(self._context(best))
        except AgentError as exc:
            self.agent_errors += 1
            if self.agent_errors >= MAX_AGENT_ERRORS_IN_A_ROW:
                raise AgentFatal(f"{self.agent_errors} failed proposals in a row, the last: {exc}") from exc
            wait = BACKOFF_S[min(self.agent_errors, len(BACKOFF_S)) - 1]
            self.say(f"the agent failed ({exc}); trying again in {wait} s")
            self.steering.wait(wait)
            return None
        self.agent_errors = 0
        return proposal

    def _context(self, best: store.Experiment) -> ProposalContext:
        tip = gitrepo.branch_tip(self.repo, self.options.tag)
        experiments = store.list_experiments(self.conn, self.run_id)
        history = [HistoryRow(e.seq, (e.commit_sha or "-")[:7], e.val_bpb, e.status, e.description)
                   for e in experiments]
        failed = [e for e in experiments if e.status in FAILED]
        last_failure = None
        if failed and experiments[-1].status in FAILED:
            last_failure = failure_tail(failed[-1])
        return ProposalContext(
            program_md=_read(self.ws.root / "program.md"), prepare_py=_read(self.ws.root / "prepare.py"),
            train_py=gitrepo.read_file(self.repo, tip).decode(errors="replace"), history=history,
            last_failure=last_failure, best_val_bpb=best.val_bpb)

    def _trial(self, candidate: Candidate, proposal: Proposal, parent: str,
               propose_s: float = 0.0, baseline: bool = False) -> TrialResult | None:
        """Check, commit, train, score, decide and record one candidate; None when the engine failed under it.

        baseline: the run's starting train.py, the one experiment that may seed the run's compile cache."""
        seq = store.next_seq(self.conn, self.run_id)
        candidate = dataclasses.replace(candidate, run_id=self.run_id, seq=seq)
        blocked = check_candidate(self.recorder, candidate, self.settings.policy)
        if isinstance(blocked, TrialResult):
            store.link_agent_turns(self.conn, proposal.turn_ids, blocked.experiment_id)
            self._blocked(blocked)
            return blocked
        self.blocked = 0
        began = time.monotonic()
        sha = gitrepo.commit_candidate(self.repo, parent, candidate.code, commit_message(self.options.tag, seq,
                                                                                          proposal.description))
        gitrepo.set_experiment_ref(self.repo, self.options.tag, seq, sha)
        commit_s = time.monotonic() - began
        candidate = dataclasses.replace(candidate, commit_sha=sha)
        self.say(f"#{seq} {as_data(proposal.description, DESCRIPTION_CHARS)} ({sha[:8]}): training")
        self.steering.cancel.clear()
        try:
            image_id = self.pre.sandbox.image_id(self.pre.image)
            result = execute_candidate(self.ws, self.recorder, candidate, self.settings.policy, self.pre, blocked,
                                       cancel=self.steering.cancel, baseline=self._baseline_overhead(),
                                       keep_handover=True, compile_cache=self._compile_cache(image_id, baseline))
        except SandboxUnavailable as exc:
            self._engine_lost(exc)
            return None
        self.engine_losses = 0
        self._compile_seeded(result, image_id, baseline)
        store.link_agent_turns(self.conn, proposal.turn_ids, result.experiment_id)
        status = keep_or_discard(result.status, result.val_bpb, self._best(),
                                 keep_threshold(self.conn, self.settings.keep))
        began = time.monotonic()
        try:
            test_bpb = self._score_test(result) if status == Status.KEEP else None
        finally:
            if result.handover is not None:  # scored: drop the model so a long run cannot fill memory with them
                result.handover.release()
        timings = {**result.timings, "propose": propose_s, "commit": commit_s,
                   "test_scoring": time.monotonic() - began}
        self.recorder.judged(result.experiment_id, status, test_bpb=test_bpb, timings_json=timings)
        if status == Status.KEEP:
            gitrepo.advance_branch(self.repo, self.options.tag, sha)
        gitrepo.result_note(self.repo, sha, result_note(status, result, test_bpb))
        self.say(f"#{seq} {status}: " + (f"val_bpb {result.val_bpb:.6f}" if result.val_bpb is not None
                                         else result.exit_reason))
        return dataclasses.replace(result, status=status)

    def _compile_cache(self, image_id: str, baseline: bool) -> CompileCache | None:
        """The run's compile seed for one experiment (runner/phases/compile_seed.py): the recorded seed of the
        image in use to start from, else the baseline's to fill; None: a later experiment without a seed."""
        folder = seed_folder(self.pre.labels[WORKSPACE_LABEL], self.run_id, image_id)
        recorded = self.compile_seed
        if recorded is not None and recorded.get("image_id") == image_id:
            return CompileCache(folder, Seed(recorded["digest"], recorded["files"], recorded["bytes"]))
        return CompileCache(folder) if baseline else None

    def _compile_seeded(self, result: TrialResult, image_id: str, baseline: bool) -> None:
        """Record the seed the baseline sealed; say what the baseline's compile cache did, or why a seed was
        refused (the cold notes that say why)."""
        if result.compile_seed is not None:
            self.compile_seed = {**dataclasses.asdict(result.compile_seed), "image_id": image_id,
                                 "experiment_id": result.experiment_id}
            store.update_run(self.conn, self.run_id, compile_seed_json=self.compile_seed)
        if baseline or result.compile_cache.startswith("cold: "):
            self.say(f"compile cache: {result.compile_cache}")

    def _engine_lost(self, exc: SandboxUnavailable) -> None:
        """The sandbox's engine failed mid-experiment: close the experiment, wait for the engine, re-run it."""
        reason = f"{INTERRUPTED} {str(exc).splitlines()[0][:240]}"
        running = [e for e in store.list_experiments(self.conn, self.run_id) if e.status == Status.RUNNING]
        for experiment in running:
            self.recorder.interrupted(experiment.id, reason)
        self.rerun = running[-1] if running else None
        self.engine_losses += 1
        name = self.pre.sandbox.name
        if self.engine_losses >= MAX_ENGINE_LOSSES_IN_A_ROW:
            raise SandboxGaveUp(f"the {name} sandbox failed under {self.engine_losses} experiments in a row (the "
                                f"last: {reason}); `autoresearch run` resumes this run and re-runs the last one")
        self.say(f"{reason}; waiting up to {ENGINE_WAIT_S // 60} min for it to come back")
        deadline = time.monotonic() + ENGINE_WAIT_S
        while not self.pre.sandbox.reachable():
            if self.steering.stop_requested.is_set():
                return  # the loop then stops on request; the interrupted experiment waits for the next run
            if time.monotonic() > deadline:
                raise SandboxGaveUp(f"the {name} sandbox did not come back within {ENGINE_WAIT_S // 60} min: "
                                    "start its engine, then `autoresearch run` resumes this run")
            self.steering.wait(ENGINE_POLL_S)
        self.pre.sandbox.close()
        self.pre = prerequisites(self.ws, self.settings, self.pre.gpu_uuid)
        for experiment in running:  # its phases outlived the connection: this runner is alive, so remove them
            remove_labelled(self.pre.sandbox, {**self.pre.labels, EXPERIMENT_LABEL: str(experiment.id)})
        self.say(f"the {self.pre.sandbox.name} sandbox is back: re-running the interrupted experiment")

    def _blocked(self, result: TrialResult) -> None:
        self.blocked += 1
        self.say(f"blocked by the policy: {result.findings[0]['message'] if result.findings else ''}")
        if self.blocked >= MAX_BLOCKED_IN_A_ROW:
            raise AgentFatal(f"the policy blocked {self.blocked} candidates in a row")

    def _score_test(self, result: TrialResult) -> float | None:
        """The held-out test split's bpb of a kept model, which the loop never selects on."""
        if result.handover is None or result.work_dir is None:
            return None
        verdict, _ = score_handover(
            self.pre.sandbox, image=self.pre.image, task_dir=self.ws.task_dir, data=self.pre.data,
            handover=result.handover, work_dir=Path(result.work_dir), split="test", gpu_uuid=self.pre.gpu_uuid,
            limits=self.settings.policy.limits, labels={**self.pre.labels, RUNNER_PID_LABEL: str(os.getpid())})
        return verdict.bpb if verdict.status == Status.OK else None

    def _baseline_overhead(self) -> Overhead | None:
        """What the run's baseline (its first kept experiment) measured, for the budget rules; None before it."""
        baseline = views.baseline(store.list_experiments(self.conn, self.run_id))
        return recorded_overhead(baseline.timings_json or {}) if baseline else None


def run_loop(ws: Workspace, options: RunOptions, say: Callable[[str], None] = print) -> int:
    return Loop(ws, options, say).run()


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


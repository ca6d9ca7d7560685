"""The figures of a run's report, worked out once from the store and git; None wherever the record lacks one.

Counts are of candidates (the baseline and the agent's proposals); noise and confirm seeds are measurements
(runner/record/views.py) and are counted apart. Text that a candidate or the agent wrote stays data: escaped
here (runner/record/untrusted.py), and escaped again for HTML or Markdown by the page that shows it.
"""

import json
import math
import sqlite3
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import pygit2

from autoresearch.runner.errors import UserError
from autoresearch.runner.record import gitrepo, store, views
from autoresearch.runner.record.status import RULE_BREAKS, Status
from autoresearch.runner.record.untrusted import as_data, escaped
from autoresearch.runner.report import queries

FAILURE_ORDER = (Status.DISCARD, Status.CRASH, Status.TIMEOUT, Status.OOM, Status.KILLED, Status.VIOLATION,
                 Status.BLOCKED)
TOP_REASONS = 3
REASON_CHARS = 200
RULE_BREAKS_SHOWN = 25  # the rest: `autoresearch audit`
EVIDENCE_CHARS = 2000
DIFF_LINES = 400
USE_ROWS = 24  # the utilisation table's rows at most: a longer run has a row per several hours
NOISE_SIGMAS = 2.0  # a keep whose gain is below this many standard deviations of the noise lies within it
TIME_PARTS = (  # (label, the timings_json keys it sums), in the order an experiment goes through them
    ("agent proposals", ("propose",)),
    ("git commits", ("commit",)),
    ("container starts", ("train_container_start", "score_container_start")),
    ("start-up, to the first line", ("first_output",)),
    ("training", ("training",)),
    ("model export", ("export",)),
    ("scoring", ("scoring",)),
    ("held-out test scoring", ("test_scoring",)),
)
REST_OF_TRAINING = "rest of the training container"
BETWEEN = "idle or between experiments"


@dataclass(frozen=True)
class Score:
    seq: int
    val_bpb: float
    test_bpb: float | None


@dataclass(frozen=True)
class Headline:
    tag: str
    state: str
    agent: str
    device: str | None  # the run's device model (a GPU's name, or cpu)
    baseline: Score | None
    best: Score | None
    experiments: int  # candidates, the baseline included
    seeds: int  # noise and confirm seeds, apart
    keeps: int  # kept candidates, the baseline included
    per_hour: float | None
    device_kind: str | None  # GPU or CPU: what device_hours counts
    device_hours: float | None  # training containers' wall time, summed over the run's experiments
    spent_usd: float
    started_at: float
    ended_at: float | None  # None: the run had not ended (its wall time runs to its last sign of life)
    wall_s: float


@dataclass(frozen=True)
class Keep:
    seq: int
    commit: str | None
    description: str
    val_bpb: float
    test_bpb: float | None
    gain: float | None  # over the best before it (None: the baseline)
    total_gain: float  # over the baseline
    within_noise: bool | None  # None: no noise measured, or the baseline
    reasoning: str | None  # the agent's one line, None when no turn recorded any text
    diff: str | None  # against its parent, as data; "" when train.py did not change; None: not in git


@dataclass(frozen=True)
class FailureGroup:
    status: str
    count: int
    reasons: tuple[tuple[str, int], ...]  # the most common first


@dataclass(frozen=True)
class Evidence:
    rule_id: str
    severity: str
    action: str
    message: str
    evidence: str  # JSON, as data


@dataclass(frozen=True)
class RuleBreak:
    seq: int
    status: str
    description: str
    exit_reason: str | None
    findings: tuple[Evidence, ...]


@dataclass(frozen=True)
class NoiseFigure:
    mean_bpb: float
    std_bpb: float
    runs: int
    own: bool  # measured by this run (else the newest `autoresearch noise` of the workspace)
    commit: str | None


@dataclass(frozen=True)
class TimeUse:
    wall_s: float
    slots: int
    parts: tuple[tuple[str, float], ...]  # (label, seconds summed over experiments), BETWEEN last


@dataclass(frozen=True)
class Report:
    generated_at: float
    headline: Headline
    keeps: tuple[Keep, ...]
    failures: tuple[FailureGroup, ...]
    rule_breaks: tuple[RuleBreak, ...]  # the first RULE_BREAKS_SHOWN
    rule_breaks_total: int
    noise: NoiseFigure | None
    hours: tuple[queries.HourUse, ...]
    time: TimeUse | None


def gather(conn: sqlite3.Connection, repo: pygit2.Repository | None, run: store.Run,
           experiments: list[store.Experiment]) -> Report:
    """The report of run from its experiments (queries.run_experiments) and what else the store and git hold."""
    candidates = [e for e in experiments if views.candidate(e)]
    until = run_end(run, experiments)
    use = queries.hourly_use(conn, run, until, hours=max(math.ceil((until - run.started_at) / 3600 / USE_ROWS), 1))
    noise = _noise(conn, run)
    kept = views.kept(candidates)
    texts = queries.reasoning(conn, [e.id for e in kept])
    ids = {e.id for e in candidates}
    findings: dict[int, list] = defaultdict(list)
    for stored in store.list_findings(conn):
        if stored.experiment_id in ids:
            findings[stored.experiment_id].append(stored.finding)
    breaks = [_rule_break(e, findings[e.id]) for e in candidates if e.status in RULE_BREAKS]
    return Report(
        generated_at=time.time(), headline=_headline(conn, run, experiments, candidates, until, use),
        keeps=tuple(_keeps(repo, kept, noise, texts)), failures=tuple(_failures(candidates, findings)),
        rule_breaks=tuple(breaks[:RULE_BREAKS_SHOWN]), rule_breaks_total=len(breaks), noise=noise,
        hours=tuple(use), time=_time_use(run, experiments, until))


def run_end(run: store.Run, experiments: list[store.Experiment]) -> float:
    """When the run ended, else its last sign of life: its heartbeat or its newest experiment's times."""
    if run.ended_at is not None:
        return run.ended_at
    times = [run.started_at, run.heartbeat_at or run.started_at]
    times += [e.ended_at or e.started_at for e in experiments]
    return max(times)


def _headline(conn: sqlite3.Connection, run: store.Run, experiments: list[store.Experiment],
              candidates: list[store.Experiment], until: float, use: list[queries.HourUse]) -> Headline:
    first, top = views.baseline(candidates), views.best(candidates)
    wall = max(until - run.started_at, 0.0)
    spans = [_train_span(e) for e in experiments]
    recorded = [s for s in spans if s is not None]
    return Headline(
        tag=run.tag, state=views.run_state(run), agent=run.agent, device=run.device,
        baseline=_score(first), best=_score(top), experiments=len(candidates),
        seeds=len(experiments) - len(candidates), keeps=len(views.kept(candidates)),
        per_hour=len(candidates) / (wall / 3600) if wall > 0 else None, device_kind=_device_kind(run, use),
        device_hours=sum(recorded) / 3600 if recorded else None, spent_usd=store.spent_usd(conn, run.id),
        started_at=run.started_at, ended_at=run.ended_at, wall_s=wall)


def _score(experiment: store.Experiment | None) -> Score | None:
    if experiment is None or experiment.val_bpb is None:
        return None
    return Score(experiment.seq, experiment.val_bpb, experiment.test_bpb)


def _train_span(experiment: store.Experiment) -> float | None:
    """The training container's wall time (start to exit), else the training seconds train.py reported."""
    timings = experiment.timings_json or {}
    value = timings.get("train_phase") or experiment.training_seconds
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _device_kind(run: store.Run, use: list[queries.HourUse]) -> str | None:
    """GPU or CPU: the run's device as recorded, else what its samples measured."""
    if run.device:
        return "CPU" if run.device == "cpu" else "GPU"
    kinds = {u.kind for u in use}
    return "GPU" if "nvml" in kinds else "CPU" if "psutil" in kinds else None


def _noise(conn: sqlite3.Connection, run: store.Run) -> NoiseFigure | None:
    noise = store.latest_noise(conn, run.id)
    if noise is None:
        return None
    return NoiseFigure(noise.mean_bpb, noise.std_bpb, noise.runs, noise.run_id == run.id,
                       noise.commit_sha[:7] if noise.commit_sha else None)


def _keeps(repo: pygit2.Repository | None, kept: list[store.Experiment], noise: NoiseFigure | None,
           texts: dict[int, str]) -> list[Keep]:
    keeps: list[Keep] = []
    best_bpb: float | None = None
    for e in kept:
        assert e.val_bpb is not None  # views.kept has scores only
        gain = None if best_bpb is None else best_bpb - e.val_bpb
        within = None if gain is None or noise is None else gain < NOISE_SIGMAS * noise.std_bpb
        keeps.append(Keep(e.seq, e.commit_sha[:7] if e.commit_sha else None, e.description, e.val_bpb, e.test_bpb,
                          gain, kept[0].val_bpb - e.val_bpb, within, texts.get(e.id), _diff(repo, e)))  # type: ignore[operator]
        best_bpb = e.val_bpb if best_bpb is None else min(best_bpb, e.val_bpb)
    return keeps


def _diff(repo: pygit2.Repository | None, experiment: store.Experiment) -> str | None:
    """The experiment's train.py against its parent's, as data and at most DIFF_LINES lines."""
    if repo is None or not experiment.commit_sha or not experiment.parent_sha:
        return None
    try:
        text = gitrepo.diff_text(repo, experiment.parent_sha, experiment.commit_sha)
    except UserError:  # a commit the repository no longer has
        return None
    lines = escaped(text, keep_newlines=True).splitlines()
    if len(lines) > DIFF_LINES:
        lines = [*lines[:DIFF_LINES], f"[... {len(lines) - DIFF_LINES} more lines]"]
    return "\n".join(lines)


def _failures(candidates: list[store.Experiment], findings: dict[int, list]) -> list[FailureGroup]:
    reasons: dict[str, Counter] = defaultdict(Counter)
    counts: Counter = Counter()
    for e in candidates:
        if e.status in FAILURE_ORDER:
            counts[e.status] += 1
            reasons[e.status].update(_reasons(e, findings.get(e.id, [])))
    return [FailureGroup(str(status), counts[status], tuple(reasons[status].most_common(TOP_REASONS)))
            for status in FAILURE_ORDER if counts[status]]


def _reasons(experiment: store.Experiment, findings: list) -> set[str]:
    """Why it failed, each reason once: a rule break's findings, a discard's judgement, else its exit reason."""
    if experiment.status in RULE_BREAKS and findings:
        return {as_data(f"{f.rule_id}: {f.message}", REASON_CHARS) for f in findings}
    if experiment.status == Status.DISCARD:
        return {_discarded_because(experiment)}
    if experiment.exit_reason:
        return {as_data(experiment.exit_reason, REASON_CHARS)}
    return {"no reason recorded"}


def _discarded_because(experiment: store.Experiment) -> str:
    """The keep rule's reason, from the judgement the loop recorded (runner/judge.py)."""
    judged = experiment.judge_json or {}
    gain = judged.get("gain")
    if judged.get("unconfirmed"):
        return "a close keep whose second seed failed"
    if judged.get("confirmed_by") is not None:
        return "a close keep the second seed did not confirm"
    if views.near_miss(experiment):
        return "near miss: beat a parent that was no longer the best"
    if isinstance(gain, int | float) and gain > 0:
        return "better than the best by less than the keep threshold"
    if isinstance(gain, int | float):
        return "no better than the best"
    return "scored, did not beat the best"


def _rule_break(experiment: store.Experiment, findings: list) -> RuleBreak:
    evidence = tuple(Evidence(f.rule_id, f.severity, f.action, f.message,
                              as_data(json.dumps(f.evidence, sort_keys=True, ensure_ascii=False), EVIDENCE_CHARS))
                     for f in findings)
    return RuleBreak(experiment.seq, str(experiment.status), experiment.description, experiment.exit_reason,
                     evidence)


def _time_use(run: store.Run, experiments: list[store.Experiment], until: float) -> TimeUse | None:
    """Where the slots' time went: each part summed over the experiments' recorded timings (the parts none
    recorded left out), and what is left of the wall time on every slot."""
    timed = [(e, e.timings_json) for e in experiments if e.timings_json]
    if not timed:
        return None
    parts: dict[str, float] = {}
    for label, keys in TIME_PARTS:
        parts[label] = sum(_seconds(t, keys) for _, t in timed)
        if label == "training" and not parts[label]:
            parts[label] = sum(e.training_seconds or 0.0 for e, _ in timed)
        if label == "model export":
            parts[REST_OF_TRAINING] = sum(max(_seconds(t, ("train_phase",))
                                              - _seconds(t, ("first_output", "training", "export")), 0.0)
                                          for _, t in timed)
    wall = max(until - run.started_at, 0.0)
    slots = max(len(views.run_slots(run)), 1)
    between = max(wall * slots - sum(parts.values()), 0.0)
    return TimeUse(wall, slots, (*((k, v) for k, v in parts.items() if v > 0), (BETWEEN, between)))


def _seconds(timings: dict, keys: tuple[str, ...]) -> float:
    return sum(float(v) for k in keys if isinstance(v := timings.get(k), int | float) and v > 0)

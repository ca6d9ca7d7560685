"""Dynamic rules: what the host measured while a candidate ran, checked after it ran.

Every fact here comes from the host (container timings, NVML, the container's cgroup, file hashes, the
captured log) or from the trusted scoring container, except `reported`, which is train.py's own summary
and is only ever compared against the trusted facts. Dynamic rules come too late to block: they discard
or flag.

The budget is metered by the host, never by train.py's clock. The training container's life splits at
its first and last progress line (host clock) into before (imports, first step, compilation), the
training span, and after (estimate, export). The span may take the budget; before and after may take
what the run's baseline took there, give or take the policy's factor and slack (a run with no baseline,
the baseline itself or `autoresearch try`, gets the policy's first-run allowance, which grows with the
budget). The compute the host measured (GPU-busy or CPU seconds) may fill that much time at the rate the
container can reach, and on CPU at no more than the baseline's rate times a factor. Each limit's
evidence lists its parts and where each came from: "policy" (the budget included), "baseline" or "host".
"""

import math
from dataclasses import dataclass

from autoresearch.runner.check.findings import Finding
from autoresearch.runner.check.policy import Policy

MAX_EXCERPT = 300
Hits = list[tuple[str, dict]]  # (message, evidence) for each thing a rule saw
COMPUTE_KINDS = ("gpu", "cpu")
PHASES = {"before": "before the first progress line", "after": "after the last progress line"}


@dataclass(frozen=True)
class Overhead:
    """What a baseline took outside its training span, and how fast it computed overall."""

    before_s: float  # host clock: container running -> first progress line
    after_s: float  # host clock: last progress line -> container exit
    compute_rate: float  # its compute seconds per wall second of the training container (0: unknown)
    compute_outside_s: float | None = None  # its compute before the first and after the last progress line


@dataclass
class RunFacts:
    """What one experiment's training (and scoring) looked like from the outside."""

    budget_s: float
    trusted_bpb: float | None  # from the scoring container
    reported: dict[str, float]  # train.py's summary block (advisory)
    training_wall_s: float  # host-measured: training container running -> exit
    compute_s: float | None  # host-measured: GPU-busy s (NVML) on a GPU, the container's CPU s (cgroup) on CPU
    compute_kind: str  # "gpu" or "cpu"
    capacity: float  # compute s per wall s the container can reach: 1.0 for a GPU, its CPU quota in cores on CPU
    before_progress_s: float | None  # host clock: container running -> first progress line (whole phase if none)
    after_progress_s: float | None  # host clock: last progress line -> container exit (0 if none)
    progress_span_s: float | None  # host clock: first -> last progress line (None if none)
    compute_outside_s: float | None  # host-measured compute before the first and after the last progress line
    baseline: Overhead | None  # what this run's baseline measured; None for the baseline itself and `try`
    peak_vram_mb: float | None  # host-measured
    vram_cap_mb: float | None
    killed_by_policy: str | None  # e.g. "vram_cap"
    hashes_before: dict[str, str]  # path -> sha256 of prepare.py and data files before
    hashes_after: dict[str, str]
    log_head: str
    log_tail: str
    dropped_log_bytes: int
    progress_last_elapsed: float | None

    def __post_init__(self) -> None:
        if self.compute_kind not in COMPUTE_KINDS:
            raise ValueError(f"compute_kind must be one of {COMPUTE_KINDS}, got {self.compute_kind!r}")


def overhead_of(facts: RunFacts) -> Overhead:
    """The Overhead a finished run measured, for judging the runs that follow it (missing times count as 0)."""
    return Overhead(before_s=facts.before_progress_s or 0.0, after_s=facts.after_progress_s or 0.0,
                    compute_rate=_rate(facts.compute_s, facts.training_wall_s),
                    compute_outside_s=facts.compute_outside_s)


def recorded_overhead(timings: dict) -> Overhead | None:
    """The Overhead of a recorded experiment (its stored timings); None for one recorded before host metering."""
    if "before_progress" not in timings:
        return None
    return Overhead(before_s=timings["before_progress"] or 0.0, after_s=timings.get("after_progress") or 0.0,
                    compute_rate=_rate(timings.get("compute"), timings.get("train_phase") or 0.0),
                    compute_outside_s=timings.get("compute_outside"))


def _rate(compute: float | None, wall: float) -> float:
    """Compute seconds per wall second; 0 (unknown) without a reading."""
    return compute / wall if compute is not None and wall > 0 else 0.0


def check_run(facts: RunFacts, policy: Policy) -> list[Finding]:
    """The findings of the policy's enabled dynamic rules on one run's facts."""
    checks = {
        "dynamic.metric_mismatch": _metric_mismatch,
        "dynamic.metric_implausible": _metric_implausible,
        "dynamic.overhead": _overhead,
        "dynamic.training_span": _training_span,
        "dynamic.compute": _compute,
        "dynamic.reported_time": _reported_time,
        "dynamic.vram_cap": _vram_cap,
        "dynamic.tamper": _tamper,
        "dynamic.log_markers": _log_markers,
        "dynamic.log_flood": _log_flood,
    }
    findings = []
    for rule_id, check in checks.items():
        rule = policy.rules[rule_id]
        if rule.enabled:
            findings += [rule.finding(message, evidence) for message, evidence in check(facts, policy)]
    return findings


def _bpbs(facts: RunFacts) -> tuple[float | None, float | None]:
    """(reported, trusted) val_bpb; a NaN that train.py printed counts as not reported."""
    reported = facts.reported.get("val_bpb")
    return (None if reported is None or math.isnan(reported) else reported), facts.trusted_bpb


def _metric_mismatch(facts: RunFacts, policy: Policy) -> Hits:
    reported, trusted = _bpbs(facts)
    tolerance = policy.limits.metric_tolerance_bpb
    if reported is None or trusted is None or trusted - reported <= tolerance:
        return []
    return [(f"reported val_bpb {reported:.4f} beats the trusted {trusted:.4f} by more than {tolerance}",
             {"value": reported, "trusted": trusted, "limit": tolerance})]


def _metric_implausible(facts: RunFacts, policy: Policy) -> Hits:
    reported, trusted = _bpbs(facts)
    ratio = policy.rules["dynamic.metric_implausible"].params["ratio"]
    if reported is None or trusted is None or reported >= trusted * ratio:
        return []
    return [(f"reported val_bpb {reported:.4f} is below {ratio} x the trusted {trusted:.4f}",
             {"value": reported, "trusted": trusted, "limit": trusted * ratio})]


@dataclass(frozen=True)
class Allowance:
    """A limit and the parts it came from: name -> {"value", "source"} (source: policy, baseline or host)."""

    limit: float
    parts: dict[str, dict]


def _part(value: float, source: str) -> dict:
    return {"value": value, "source": source}


def _allowed_phase(facts: RunFacts, policy: Policy, phase: str) -> Allowance:
    """What before or after may take: max(baseline * factor, baseline + slack); the first-run allowance without one."""
    params = policy.rules["dynamic.overhead"].params
    if facts.baseline is None:
        return _first_run(facts, params)
    measured = getattr(facts.baseline, f"{phase}_s")
    limit = max(measured * params["factor"], measured + params["slack_s"])
    return Allowance(limit, {f"baseline_{phase}_s": _part(measured, "baseline"),
                             "factor": _part(params["factor"], "policy"),
                             "slack_s": _part(params["slack_s"], "policy")})


def _first_run(facts: RunFacts, params: dict) -> Allowance:
    """floor (by device: fixed startup costs) + min(cap, fraction * budget) (a share that grows with the budget)."""
    floor = params[f"first_run_floor_{facts.compute_kind}_s"]
    limit = floor + min(params["first_run_cap_s"], params["first_run_fraction"] * facts.budget_s)
    return Allowance(limit, {"floor_s": _part(floor, "policy"), "budget_s": _part(facts.budget_s, "policy"),
                             "fraction": _part(params["first_run_fraction"], "policy"),
                             "cap_s": _part(params["first_run_cap_s"], "policy")})


def _allowed_span(facts: RunFacts, policy: Policy) -> Allowance:
    """What the training span may take: budget * factor + slack (one slow last step, log latency)."""
    params = policy.rules["dynamic.training_span"].params
    limit = facts.budget_s * params["factor"] + params["slack_s"]
    return Allowance(limit, {"budget_s": _part(facts.budget_s, "policy"), "factor": _part(params["factor"], "policy"),
                             "slack_s": _part(params["slack_s"], "policy")})


def _allowed_rate(facts: RunFacts, policy: Policy) -> Allowance:
    """Compute seconds per wall second: the capacity; on CPU at most the baseline's rate * rate_factor."""
    capacity = {"capacity": _part(facts.capacity, "host")}
    baseline = facts.baseline
    if facts.compute_kind == "gpu" or baseline is None or baseline.compute_rate <= 0:
        return Allowance(facts.capacity, capacity)
    rate_factor = policy.rules["dynamic.compute"].params["rate_factor"]
    return Allowance(min(facts.capacity, baseline.compute_rate * rate_factor),
                     {**capacity, "baseline_rate": _part(baseline.compute_rate, "baseline"),
                      "rate_factor": _part(rate_factor, "policy")})


def _overhead(facts: RunFacts, policy: Policy) -> Hits:
    """Host time before the first and after the last progress line, each against its allowance."""
    hits = []
    for phase, value in (("before", facts.before_progress_s), ("after", facts.after_progress_s)):
        allowed = _allowed_phase(facts, policy, phase)
        if value is not None and value > allowed.limit:
            whole = " (no progress line: the whole run)" if phase == "before" and facts.progress_span_s is None else ""
            message = f"{value:.1f}s {PHASES[phase]}{whole}, more than the {allowed.limit:.1f}s allowed"
            hits.append((message, {"phase": phase, "value": value, "limit": allowed.limit, "parts": allowed.parts}))
    return hits


def _training_span(facts: RunFacts, policy: Policy) -> Hits:
    """Host time from the first to the last progress line against the budget."""
    allowed, value = _allowed_span(facts, policy), facts.progress_span_s
    if value is None or value <= allowed.limit:
        return []
    return [(f"{value:.1f}s between the first and the last progress line, more than the {allowed.limit:.1f}s allowed",
             {"value": value, "limit": allowed.limit, "parts": allowed.parts})]


def _compute(facts: RunFacts, policy: Policy) -> Hits:
    """Measured compute against allowed span * allowed rate + allowed compute outside the span + slack."""
    if facts.compute_s is None:
        return []
    span, rate = _allowed_span(facts, policy), _allowed_rate(facts, policy)
    outside, slack = _allowed_outside(facts, policy, rate.limit), policy.rules["dynamic.compute"].params["slack_s"]
    limit = span.limit * rate.limit + outside.limit + slack
    if facts.compute_s <= limit:
        return []
    parts = {"span_s": _part(span.limit, "policy"), "rate": _part(rate.limit, _rate_source(rate)),
             "outside": _part(outside.limit, "baseline" if "baseline_outside" in outside.parts else "policy"),
             "slack_s": _part(slack, "policy")}
    unit = "GPU-busy" if facts.compute_kind == "gpu" else "CPU"
    return [(f"{facts.compute_s:.0f} {unit} seconds, more than the {limit:.0f} allowed",
             {"value": facts.compute_s, "limit": limit, "kind": facts.compute_kind, "parts": parts,
              "rate_parts": rate.parts, "outside_parts": outside.parts})]


def _allowed_outside(facts: RunFacts, policy: Policy, rate: float) -> Allowance:
    """Compute allowed outside the training span: what the baseline computed there, max(* factor, + slack * rate)
    (a GPU idles while torch.compile works, so hidden training there shows); else the allowed times * rate."""
    baseline, params = facts.baseline, policy.rules["dynamic.overhead"].params
    if baseline is not None and baseline.compute_outside_s is not None:
        measured = baseline.compute_outside_s
        limit = max(measured * params["factor"], measured + params["slack_s"] * rate)
        return Allowance(limit, {"baseline_outside": _part(measured, "baseline"),
                                 "factor": _part(params["factor"], "policy"),
                                 "slack_s": _part(params["slack_s"], "policy")})
    before, after = _allowed_phase(facts, policy, "before"), _allowed_phase(facts, policy, "after")
    source = "policy" if baseline is None else "baseline"
    return Allowance((before.limit + after.limit) * rate, {"before_s": _part(before.limit, source),
                                                          "after_s": _part(after.limit, source)})


def _rate_source(rate: Allowance) -> str:
    """host when the capacity set the rate, baseline when the baseline's rate did."""
    return "host" if rate.limit == rate.parts["capacity"]["value"] else "baseline"


def _reported_time(facts: RunFacts, policy: Policy) -> Hits:
    params = policy.rules["dynamic.reported_time"].params
    limit = facts.budget_s * params["factor"] + params["slack_s"]
    clocks = {"training_seconds": facts.reported.get("training_seconds"),
              "progress_elapsed": facts.progress_last_elapsed}
    return [(f"train.py's own clock ({source}) says {value:.1f}s, past the {limit:.1f}s limit",
             {"value": value, "limit": limit, "source": source})
            for source, value in clocks.items() if value is not None and value > limit]


def _vram_cap(facts: RunFacts, policy: Policy) -> Hits:
    cap, peak, killed = facts.vram_cap_mb, facts.peak_vram_mb, facts.killed_by_policy
    over = bool(cap) and peak is not None and peak > cap
    kill_reasons = policy.rules["dynamic.vram_cap"].params["kill_reasons"]
    if not over and killed not in kill_reasons:
        return []
    evidence = {"value": peak, "limit": cap, "killed_by": killed}
    if killed in kill_reasons:
        return [(f"killed by the host for going over its memory cap ({killed})", evidence)]
    return [(f"peak VRAM {peak:.0f} MB, over the cap of {cap:.0f} MB", evidence)]


def _tamper(facts: RunFacts, policy: Policy) -> Hits:
    """Every protected file whose hash differs after the run ("missing" or absent: no file)."""
    hits = []
    for path in sorted(facts.hashes_before.keys() | facts.hashes_after.keys()):
        before, after = facts.hashes_before.get(path), facts.hashes_after.get(path)
        if before != after:
            evidence = {"path": path, "before": before, "after": after}
            hits.append((f"protected file {path} {_change(before, after)} during the run", evidence))
    return hits


def _change(before: str | None, after: str | None) -> str:
    if after in (None, "missing"):
        return "vanished"
    return "appeared" if before in (None, "missing") else "changed"


def _log_markers(facts: RunFacts, policy: Policy) -> Hits:
    """The first line of the log's head, else of its tail, that shows each marker."""
    hits = []
    for marker in policy.rules["dynamic.log_markers"].params["markers"]:
        for where, text in (("head", facts.log_head), ("tail", facts.log_tail)):
            line = next((line for line in text.splitlines() if marker in line), None)
            if line is not None:
                evidence = {"marker": marker, "where": where, "excerpt": line.strip()[:MAX_EXCERPT]}
                hits.append((f"the log shows {marker!r}", evidence))
                break
    return hits


def _log_flood(facts: RunFacts, policy: Policy) -> Hits:
    if facts.dropped_log_bytes <= 0:
        return []
    limit = policy.limits.log_max_bytes
    return [(f"{facts.dropped_log_bytes} bytes of output dropped (over {limit} bytes)",
             {"value": facts.dropped_log_bytes, "limit": limit})]

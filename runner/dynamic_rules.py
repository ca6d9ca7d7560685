"""Dynamic rules: what the host measured while a candidate ran, checked after it ran.

Every fact here comes from the host (container timings, NVML, file hashes, the captured log) or from
the trusted scoring container, except `reported`, which is train.py's own summary and is only ever
compared against the trusted facts. Dynamic rules come too late to block: they discard or flag.
"""

import math
from dataclasses import dataclass

from autoresearch.runner.findings import Finding
from autoresearch.runner.policy import Policy

MAX_EXCERPT = 300
Hits = list[tuple[str, dict]]  # (message, evidence) for each thing a rule saw


@dataclass
class RunFacts:
    """What one experiment's training (and scoring) looked like from the outside."""

    budget_s: float
    trusted_bpb: float | None  # from the scoring container
    reported: dict[str, float]  # train.py's summary block (advisory)
    training_wall_s: float  # host-measured: training container running -> exit
    gpu_busy_s: float | None  # host-measured NVML busy seconds (None without a GPU)
    peak_vram_mb: float | None  # host-measured
    vram_cap_mb: float | None
    killed_by_policy: str | None  # e.g. "vram_cap"
    hashes_before: dict[str, str]  # path -> sha256 of prepare.py and data files before
    hashes_after: dict[str, str]
    log_head: str
    log_tail: str
    dropped_log_bytes: int
    progress_last_elapsed: float | None


def check_run(facts: RunFacts, policy: Policy) -> list[Finding]:
    """The findings of the policy's enabled dynamic rules on one run's facts."""
    checks = {
        "dynamic.metric_mismatch": _metric_mismatch,
        "dynamic.metric_implausible": _metric_implausible,
        "dynamic.gpu_time": _gpu_time,
        "dynamic.wall_time": _wall_time,
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


def _gpu_time(facts: RunFacts, policy: Policy) -> Hits:
    limits = policy.limits
    limit = facts.budget_s * limits.gpu_busy_factor + limits.gpu_busy_allowance_s
    if facts.gpu_busy_s is None or facts.gpu_busy_s <= limit:
        return []
    message = f"GPU busy for {facts.gpu_busy_s:.0f}s, more than the {limit:.0f}s a {facts.budget_s:.0f}s budget allows"
    return [(message, {"value": facts.gpu_busy_s, "limit": limit})]


def _wall_time(facts: RunFacts, policy: Policy) -> Hits:
    """Training container wall time; a run without GPU readings gets the CPU startup allowance."""
    params = policy.rules["dynamic.wall_time"].params
    device = "cpu" if facts.gpu_busy_s is None else "cuda"
    limit = facts.budget_s * params["factor"] + params[f"startup_allowance_{device}_s"]
    if facts.training_wall_s <= limit:
        return []
    return [(f"training took {facts.training_wall_s:.0f}s of wall time, more than the {limit:.0f}s allowed",
             {"value": facts.training_wall_s, "limit": limit, "device": device})]


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

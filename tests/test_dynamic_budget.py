"""The host meters the budget: compute outside the counted loop is not free (issue 8, item 6).

Each case is a run's host facts: the time before the first progress line, between the first and the
last one, after the last one, and the compute the host measured, judged against what the run's
baseline measured (or the first-run allowance, for the baseline itself and `autoresearch try`).
"""

import dataclasses

import pytest

from autoresearch.runner.check.dynamic_rules import Overhead, RunFacts, check_run, overhead_of
from autoresearch.runner.check.policy import load_policy

DEFAULT = load_policy()
STRICT = load_policy(name="strict")
BUDGET_RULES = ("dynamic.overhead", "dynamic.training_span", "dynamic.compute")


def facts(kind: str = "gpu", *, before: float | None, span: float | None, after: float | None,
          compute: float | None, budget_s: float = 300.0, capacity: float | None = None,
          baseline: Overhead | None = None, outside: float | None = None) -> RunFacts:
    """A run whose own clock says it trained exactly the budget, whatever the host saw."""
    return RunFacts(
        budget_s=budget_s,
        trusted_bpb=1.0,
        reported={"val_bpb": 0.99, "training_seconds": budget_s + 0.2},
        training_wall_s=sum(t or 0.0 for t in (before, span, after)),
        compute_s=compute,
        compute_kind=kind,
        capacity=capacity if capacity is not None else (1.0 if kind == "gpu" else 2.0),
        before_progress_s=before,
        after_progress_s=after,
        progress_span_s=span,
        compute_outside_s=outside,
        baseline=baseline,
        peak_vram_mb=None,
        vram_cap_mb=None,
        killed_by_policy=None,
        hashes_before={},
        hashes_after={},
        log_head="",
        log_tail="",
        dropped_log_bytes=0,
        progress_last_elapsed=budget_s + 0.2 if span is not None else None,
    )


# Honest baselines: a GPU one that compiles for a minute, a CPU one on two cores.
# The GPU idles while torch.compile works, so little of its compute falls outside the training span.
GPU_BASELINE = facts("gpu", before=60.0, span=302.0, after=20.0, compute=320.0, outside=8.0)
CPU_BASELINE = facts("cpu", before=8.0, span=302.0, after=6.0, compute=560.0, capacity=2.0, outside=20.0)
GPU = overhead_of(GPU_BASELINE)
CPU = overhead_of(CPU_BASELINE)


def findings(run: RunFacts, policy=DEFAULT) -> list[tuple[str, str, str | None]]:
    """(rule, action, phase) of each finding; no other rule may fire on these facts."""
    found = check_run(run, policy)
    assert {f.rule_id for f in found} <= set(BUDGET_RULES), found
    return [(f.rule_id, f.action, f.evidence.get("phase")) for f in found]


def only(run: RunFacts, rule_id: str, policy=DEFAULT):
    [finding] = [f for f in check_run(run, policy) if f.rule_id == rule_id]
    return finding


# -- the attacks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [DEFAULT, STRICT], ids=["default", "strict"])
def test_training_27x_the_budget_before_the_first_progress_line_is_a_violation(policy):
    hidden = 2.7 * 300
    run = facts(before=60.0 + hidden, span=302.0, after=20.0, compute=320.0 + hidden, baseline=GPU)
    assert findings(run, policy) == [("dynamic.overhead", "discard", "before"), ("dynamic.compute", "discard", None)]
    assert findings(dataclasses.replace(run, baseline=None), policy) == findings(run, policy)  # `try` too


def test_training_inside_export_is_a_violation():
    hidden = 2.7 * 300
    run = facts(before=60.0, span=302.0, after=20.0 + hidden, compute=320.0 + hidden, baseline=GPU)
    assert findings(run) == [("dynamic.overhead", "discard", "after"), ("dynamic.compute", "discard", None)]
    after = only(run, "dynamic.overhead")
    assert after.evidence == {
        "phase": "after", "value": 830.0, "limit": 35.0,
        "parts": {"baseline_after_s": {"value": 20.0, "source": "baseline"},
                  "factor": {"value": 1.5, "source": "policy"},
                  "slack_s": {"value": 15.0, "source": "policy"}},
    }
    assert after.message == "830.0s after the last progress line, more than the 35.0s allowed"


def test_training_between_progress_lines_that_its_clock_does_not_count_is_a_violation():
    run = facts(before=60.0, span=302.0 + 2.7 * 300, after=20.0, compute=320.0 + 2.7 * 300, baseline=GPU)
    assert run.reported["training_seconds"] == 300.2 and run.progress_last_elapsed == 300.2  # its clock lies
    assert findings(run) == [("dynamic.training_span", "discard", None), ("dynamic.compute", "discard", None)]
    span = only(run, "dynamic.training_span")
    assert span.evidence == {
        "value": 1112.0, "limit": 330.0,
        "parts": {"budget_s": {"value": 300.0, "source": "policy"}, "factor": {"value": 1.05, "source": "policy"},
                  "slack_s": {"value": 15.0, "source": "policy"}},
    }


def test_a_hidden_gpu_burst_is_a_violation_even_when_the_clocks_look_honest():
    run = facts(before=60.0, span=302.0, after=20.0, compute=2000.0, baseline=GPU)
    assert findings(run) == [("dynamic.compute", "discard", None)]
    compute = only(run, "dynamic.compute")
    outside = max(8 * 1.5, 8 + 15 * 1.0)  # what the baseline computed outside its span, give or take
    assert compute.evidence == {
        "value": 2000.0, "limit": (300 * 1.05 + 15) * 1.0 + outside + 15, "kind": "gpu",
        "parts": {"span_s": {"value": 330.0, "source": "policy"}, "rate": {"value": 1.0, "source": "host"},
                  "outside": {"value": outside, "source": "baseline"}, "slack_s": {"value": 15.0, "source": "policy"}},
        "rate_parts": {"capacity": {"value": 1.0, "source": "host"}},
        "outside_parts": {"baseline_outside": {"value": 8.0, "source": "baseline"},
                          "factor": {"value": 1.5, "source": "policy"}, "slack_s": {"value": 15.0, "source": "policy"}},
    }
    assert compute.message == "2000 GPU-busy seconds, more than the 368 allowed"


def test_keeping_more_cores_busy_than_the_baseline_could_is_a_violation_on_cpu():
    """A baseline that kept ~2 of 16 cores busy; a candidate that keeps all 16 busy for the same time."""
    baseline = overhead_of(dataclasses.replace(CPU_BASELINE, capacity=16.0))
    run = facts("cpu", before=8.0, span=302.0, after=6.0, compute=16 * 316.0, capacity=16.0, baseline=baseline)
    assert findings(run) == [("dynamic.compute", "discard", None)]
    compute = only(run, "dynamic.compute")
    rate = 560.0 / 316.0 * 1.5
    assert compute.evidence["parts"]["rate"] == {"value": pytest.approx(rate), "source": "baseline"}
    assert compute.evidence["rate_parts"] == {
        "capacity": {"value": 16.0, "source": "host"},
        "baseline_rate": {"value": pytest.approx(560 / 316), "source": "baseline"},
        "rate_factor": {"value": 1.5, "source": "policy"},
    }
    assert compute.evidence["limit"] == pytest.approx(330.0 * rate + max(20 * 1.5, 20 + 15 * rate) + 15)
    assert "CPU seconds" in compute.message


# -- honest runs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [DEFAULT, STRICT], ids=["default", "strict"])
@pytest.mark.parametrize("baseline", [GPU_BASELINE, CPU_BASELINE], ids=["gpu", "cpu"])
def test_the_baseline_itself_passes_under_the_first_run_allowance(policy, baseline):
    assert findings(baseline, policy) == []


@pytest.mark.parametrize("policy", [DEFAULT, STRICT], ids=["default", "strict"])
def test_an_honest_candidate_at_the_baselines_overhead_passes(policy):
    gpu = facts(before=63.0, span=303.0, after=21.0, compute=0.98 * 303.0 + 9.0, baseline=GPU)
    cpu = facts("cpu", before=9.0, span=303.0, after=7.0, compute=600.0, capacity=2.0, baseline=CPU)
    assert findings(gpu, policy) == [] and findings(cpu, policy) == []


def test_the_allowance_is_the_baseline_give_or_take():
    """max(baseline * factor, baseline + slack): a slower compile passes default, not strict."""
    slower_compile = facts(before=85.0, span=302.0, after=20.0, compute=315.0, baseline=GPU)
    assert findings(slower_compile) == []
    assert findings(slower_compile, STRICT) == [("dynamic.overhead", "discard", "before")]
    at_limit = facts(before=90.0, span=330.0, after=35.0, compute=330.0 + 23.0 + 15.0, baseline=GPU)
    assert findings(at_limit) == []
    over = facts(before=90.1, span=330.1, after=35.1, compute=368.1, baseline=GPU)
    assert [rule for rule, _, _ in findings(over)] == ["dynamic.overhead", "dynamic.overhead",
                                                        "dynamic.training_span", "dynamic.compute"]


def test_a_short_baseline_phase_gets_the_slack_not_just_the_factor():
    run = facts("cpu", before=8.0 + 14.9, span=302.0, after=6.0, compute=600.0, baseline=CPU)
    assert findings(run) == []  # 8 s * 1.5 is 12 s, but 8 s + 15 s is 23 s


# -- the first-run allowance --------------------------------------------------------------------------------


def test_the_first_run_allowance_grows_with_the_budget_up_to_a_cap():
    def before_limit(kind: str, budget_s: float, policy=DEFAULT) -> float:
        run = facts(kind, before=1e6, span=budget_s, after=0.0, compute=None, budget_s=budget_s)
        return only(run, "dynamic.overhead", policy).evidence["limit"]

    assert before_limit("cpu", 4) == pytest.approx(12 + 0.4)
    assert before_limit("cpu", 300) == 12 + 30
    assert before_limit("cpu", 3600) == 12 + 60  # capped
    assert before_limit("gpu", 300) == 120 + 30
    assert before_limit("gpu", 300, STRICT) == 90 + 15
    evidence = only(facts(before=200.0, span=302.0, after=20.0, compute=None), "dynamic.overhead").evidence
    assert evidence["parts"] == {"floor_s": {"value": 120.0, "source": "policy"},
                                 "budget_s": {"value": 300.0, "source": "policy"},
                                 "fraction": {"value": 0.1, "source": "policy"},
                                 "cap_s": {"value": 60.0, "source": "policy"}}


@pytest.mark.parametrize("policy", [DEFAULT, STRICT], ids=["default", "strict"])
def test_an_idle_14s_start_on_a_4s_budget_is_a_violation(policy):
    """tests/security: sleep 14 s, import torch, hand over a uniform model; no progress line, no baseline."""
    idle = facts("cpu", before=14.0 + 4.5, span=None, after=0.0, compute=4.0, budget_s=4.0)
    assert findings(idle, policy) == [("dynamic.overhead", "discard", "before")]
    message = only(idle, "dynamic.overhead", policy).message
    assert "(no progress line: the whole run)" in message
    prompt = facts("cpu", before=4.5, span=None, after=0.0, compute=4.0, budget_s=4.0)
    assert findings(prompt, policy) == []  # the same candidate without the sleep
    idle_then_train = facts("cpu", before=14.0 + 5.0, span=4.2, after=5.0, compute=20.0, budget_s=4.0)
    assert findings(idle_then_train, policy) == [("dynamic.overhead", "discard", "before")]


def test_an_honest_4s_baseline_and_candidate_pass():
    baseline = facts("cpu", before=6.0, span=4.3, after=5.0, compute=20.0, budget_s=4.0)
    candidate = facts("cpu", before=7.0, span=4.5, after=6.0, compute=25.0, budget_s=4.0,
                      baseline=overhead_of(baseline))
    for policy in (DEFAULT, STRICT):
        assert findings(baseline, policy) == [] and findings(candidate, policy) == []


def test_a_run_with_no_progress_line_at_all_counts_as_all_overhead():
    silent = facts("cpu", before=8.0 + 300 + 6.0, span=None, after=0.0, compute=560.0, baseline=CPU)
    assert findings(silent) == [("dynamic.overhead", "discard", "before")]
    assert only(silent, "dynamic.overhead").evidence["value"] == 314.0


# -- facts and the Overhead ----------------------------------------------------------------------------------


def test_overhead_of_a_finished_run():
    assert overhead_of(GPU_BASELINE) == Overhead(before_s=60.0, after_s=20.0, compute_rate=320.0 / 382.0,
                                                 compute_outside_s=8.0)
    assert overhead_of(CPU_BASELINE) == Overhead(before_s=8.0, after_s=6.0, compute_rate=560.0 / 316.0,
                                                 compute_outside_s=20.0)
    unmeasured = dataclasses.replace(CPU_BASELINE, compute_s=None, before_progress_s=None, after_progress_s=None,
                                     compute_outside_s=None)
    assert overhead_of(unmeasured) == Overhead(0.0, 0.0, 0.0)
    assert overhead_of(dataclasses.replace(CPU_BASELINE, training_wall_s=0.0)).compute_rate == 0.0


def test_an_unknown_baseline_rate_falls_back_to_the_capacity():
    run = facts("cpu", before=8.0, span=302.0, after=6.0, compute=16 * 316.0, capacity=16.0,
                baseline=dataclasses.replace(CPU, compute_rate=0.0))
    assert findings(run) == []
    over = dataclasses.replace(run, compute_s=16 * 400.0)
    assert only(over, "dynamic.compute").evidence["parts"]["rate"] == {"value": 16.0, "source": "host"}


def test_unmeasured_facts_are_not_judged():
    run = facts(before=None, span=None, after=None, compute=None, baseline=GPU)
    assert findings(run) == []


def test_compute_kind_is_gpu_or_cpu():
    with pytest.raises(ValueError, match="compute_kind"):
        dataclasses.replace(GPU_BASELINE, compute_kind="cuda")


def test_disabled_budget_rules_report_nothing(tmp_path):
    off = "".join(f'[rules."{rule}"]\nenabled = false\n' for rule in BUDGET_RULES)
    path = tmp_path / "off.toml"
    path.write_text('extends = "default"\n' + off)
    run = facts(before=900.0, span=900.0, after=900.0, compute=9000.0, baseline=GPU)
    assert findings(run, load_policy(path)) == []


def test_strict_is_tighter_than_default():
    for rule_id in BUDGET_RULES:
        for key, value in STRICT.rules[rule_id].params.items():
            assert value <= DEFAULT.rules[rule_id].params[key], (rule_id, key)
        assert STRICT.rules[rule_id].action == "discard"


def test_gpu_training_hidden_in_the_baselines_compile_time_is_a_violation():
    """The baseline's GPU idled for most of its 60 s compile; a candidate that skips compiling and trains
    eagerly for those 60 s (and 30 s more of slack) stays within the time allowances, not the compute one."""
    cheat = facts("gpu", before=90.0, span=302.0, after=20.0, compute=90.0 + 302.0 + 8.0, outside=98.0,
                  baseline=GPU)
    assert findings(cheat) == [("dynamic.compute", "discard", None)]
    evidence = check_run(cheat, DEFAULT)[0].evidence
    assert evidence["parts"]["outside"] == {"value": 23.0, "source": "baseline"}


def test_an_honest_gpu_candidate_that_compiles_longer_passes():
    honest = facts("gpu", before=85.0, span=302.0, after=25.0, compute=302.0 + 12.0, outside=12.0, baseline=GPU)
    assert findings(honest) == []


def test_a_baseline_recorded_before_compute_was_split_falls_back_to_the_time_allowances():
    old = Overhead(before_s=60.0, after_s=20.0, compute_rate=0.84)
    run = facts("gpu", before=60.0, span=302.0, after=20.0, compute=400.0, baseline=old)
    assert findings(run) == []  # (330 + 90 + 35) * 1.0 + 15 allows it

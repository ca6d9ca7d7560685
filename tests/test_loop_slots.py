"""The loop with several experiments in flight, on the fake sandbox: slots, proposals made ahead, judging
against the best at the moment a result arrives, the run's own noise, confirmations and waves.

Everything but the sandbox is real (tests/fake_workspace.py). Each case asserts the record: the rows
(their slot, role, seed and judgement), the noise the run stored, the branch and what the agent was given.
"""

import os

import pytest

from autoresearch.runner.config import ExecutorConfig
from autoresearch.runner.errors import UserError
from autoresearch.runner.executors.local import local_slots
from autoresearch.runner.loop import CONFIRM_SEED
from autoresearch.runner.record import gitrepo, store
from autoresearch.runner.record.status import Role, Status
from autoresearch.runner.sandbox import gpus
from autoresearch.runner.sandbox.gpus import Gpu
from tests.fake_workspace import FakeWorkspace, edit

TWO_CORES = len(os.sched_getaffinity(0)) >= 2
needs_two_cores = pytest.mark.skipif(not TWO_CORES, reason="two CPU slots need two cores of their own")


def overlap(a: store.Experiment, b: store.Experiment) -> bool:
    return a.started_at < b.ended_at and b.started_at < a.ended_at  # type: ignore[operator]


def by_description(fw: FakeWorkspace) -> dict[str, store.Experiment]:
    return {e.description: e for e in fw.experiments()}


@needs_two_cores
def test_two_slots_train_two_candidates_at_once_and_a_win_over_a_stale_parent_becomes_the_best(tmp_path,
                                                                                               monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, slots=2, baseline={"seconds": 0.2, "bpb": 1.0})
    fw.replay(edit("fast", seconds=0.4, bpb=0.95), edit("slow", seconds=1.5, bpb=0.90))
    assert fw.loop(max_experiments=3) == 0

    rows = by_description(fw)
    fast, slow = rows["fast"], rows["slow"]
    assert overlap(fast, slow), "both candidates trained at once"
    assert {fast.slot, slow.slot} == {s["name"] for s in fw.run_row().slots_json}  # type: ignore[union-attr]
    assert len({fast.slot, slow.slot}) == 2 and all(s.startswith("cpu") for s in (fast.slot, slow.slot))
    run = fw.run_row()
    assert (run.executor, run.device, len(run.slots_json)) == ("local", "cpu", 2)  # type: ignore[union-attr]

    # slow was proposed from the baseline; fast was kept first; slow beats fast too, so it becomes the best
    assert (fast.status, slow.status) == (Status.KEEP, Status.KEEP)
    assert slow.parent_sha == rows["baseline"].commit_sha
    assert slow.judge_json["stale_parent"] is True and slow.judge_json["best_bpb"] == pytest.approx(0.95)
    repo = fw.repo()
    tip = gitrepo.branch_tip(repo, "t")
    assert tip == slow.judge_json["branch_commit"] != slow.commit_sha  # committed again on top of fast
    assert str(repo.get(tip).parent_ids[0]) == fast.commit_sha
    assert gitrepo.read_file(repo, tip) == gitrepo.read_file(repo, slow.commit_sha)
    assert slow.test_bpb is not None and fast.test_bpb is not None


@needs_two_cores
def test_a_win_over_a_stale_parent_that_does_not_beat_the_best_is_a_near_miss_shown_to_the_agent(tmp_path,
                                                                                                 monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, slots=2, baseline={"seconds": 0.2, "bpb": 1.0})
    fw.replay(edit("fast", seconds=0.3, bpb=0.90), edit("slow", seconds=1.5, bpb=0.95),
              edit("third", seconds=0.3, bpb=0.99), edit("fourth", seconds=0.3, bpb=0.99),
              edit("fifth", seconds=0.3, bpb=0.99))
    assert fw.loop(max_experiments=6) == 0

    rows = by_description(fw)
    slow = rows["slow"]
    assert slow.status == Status.DISCARD
    assert slow.judge_json["near_miss"] is True and slow.judge_json["gain_over_parent"] == pytest.approx(0.05)
    # while slow trained, the agent was told it was in flight; once it ended, it saw it as a near miss
    assert any("slow" in [row.description for row in c.in_flight] for c in fw.contexts)
    shown = [c for c in fw.contexts if any(change.near_miss for change in c.recent_changes)]
    near = next(change for change in shown[-1].recent_changes if change.near_miss)
    assert near.seq == slow.seq and near.gain == pytest.approx(0.05)
    assert "bpb" in near.diff  # the diff against its parent: the directive line changed


@needs_two_cores
def test_the_run_measures_its_noise_on_baseline_seeds_in_parallel_and_the_keep_rule_uses_it(tmp_path, monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, slots=2, noise_seeds=3,
                            baseline={"seconds": 0.3, "bpb": 1.0, "bpb_by_seed": {"1": 1.02, "2": 0.98}})
    fw.replay(edit("within the noise", seconds=0.3, bpb=0.97), edit("never proposed"))
    assert fw.loop(max_experiments=2) == 0

    rows = fw.experiments()
    seeds = [e for e in rows if e.role == Role.NOISE]
    assert [(e.seed, e.val_bpb, e.status) for e in seeds] == [(1, 1.02, Status.OK), (2, 0.98, Status.OK)]
    assert overlap(*seeds), "the two seeds ran at once, on the two slots"
    noise = fw.read(lambda conn: store.latest_noise(conn, fw.run_row().id))
    assert noise.run_id == fw.run_row().id and noise.std_bpb == pytest.approx(0.02)
    assert "a keep must gain more than 0.040000" in " ".join(fw.said)
    candidate = by_description(fw)["within the noise"]  # gains 0.03: more than the 0.01 floor, less than 2 std
    assert candidate.status == Status.DISCARD and candidate.judge_json["threshold"] == pytest.approx(0.04)
    assert len([e for e in rows if e.role is None]) == 2  # the seeds do not count toward max_experiments


def test_a_close_keep_is_confirmed_by_a_second_seed_and_a_lucky_one_is_not(tmp_path, monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, noise_seeds=3,
                            baseline={"seconds": 0.2, "bpb": 1.0, "bpb_by_seed": {"1": 1.02, "2": 0.98}})
    confirm_seed = str(CONFIRM_SEED)
    fw.replay(edit("real", seconds=0.2, bpb=0.95, bpb_by_seed={confirm_seed: 0.955}),
              edit("lucky", seconds=0.2, bpb=0.90, bpb_by_seed={confirm_seed: 0.96}),
              edit("clear", seconds=0.2, bpb=0.70))
    assert fw.loop(max_experiments=4) == 0

    rows = by_description(fw)
    real, lucky, clear = rows["real"], rows["lucky"], rows["clear"]
    # real: gain 0.05 over 1.0, inside 4 std (0.08): its second seed's mean (0.9525) still beats 1.0 by > 0.04
    assert real.status == Status.KEEP
    assert real.judge_json["seeds"] == [0.95, 0.955] and real.judge_json["confirmed_by"]
    second = store_row(fw, real.judge_json["confirmed_by"])
    assert (second.role, second.seed, second.commit_sha) == (Role.CONFIRM, CONFIRM_SEED, real.commit_sha)
    assert real.test_bpb is not None
    # lucky: gain 0.0525 over real's 0.95, close: its second seed 0.96 makes the mean 0.93, no gain of 0.04
    assert lucky.status == Status.DISCARD and lucky.judge_json["seeds"] == [0.90, 0.96]
    # clear: gains more than 4 std: kept at once, no second seed
    assert clear.status == Status.KEEP and "confirmed_by" not in clear.judge_json
    assert len([e for e in fw.experiments() if e.role == Role.CONFIRM]) == 2


def store_row(fw: FakeWorkspace, experiment_id: int) -> store.Experiment:
    return fw.read(lambda conn: store.get_experiment(conn, experiment_id))


@needs_two_cores
def test_wave_mode_keeps_only_the_best_of_each_wave(tmp_path, monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, slots=2, wave=2, baseline={"seconds": 0.2, "bpb": 1.0})
    fw.replay(edit("wave one, good", seconds=0.3, bpb=0.95), edit("wave one, better", seconds=0.5, bpb=0.90),
              edit("wave two, a", seconds=0.3, bpb=0.99), edit("wave two, b", seconds=0.3, bpb=0.85))
    assert fw.loop(max_experiments=5) == 0

    rows = by_description(fw)
    assert rows["wave one, good"].status == Status.DISCARD
    assert rows["wave one, good"].judge_json == {"wave": 0, "lost_to": rows["wave one, better"].id}
    assert rows["wave one, better"].status == Status.KEEP
    assert rows["wave two, b"].status == Status.KEEP and rows["wave two, a"].status == Status.DISCARD
    # the second wave was proposed from the first wave's best
    assert rows["wave two, a"].parent_sha == rows["wave two, b"].parent_sha == rows["wave one, better"].commit_sha


def test_with_prefetch_the_agent_proposes_while_an_experiment_trains(tmp_path, monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, prefetch=1, baseline={"seconds": 0.2, "bpb": 1.0})
    fw.replay(edit("first", seconds=1.0, bpb=0.95), edit("second", seconds=0.2, bpb=0.99))
    assert fw.loop(max_experiments=3) == 0

    second_context = next(c for c in fw.contexts if [r.description for r in c.in_flight] == ["first"])
    assert second_context.best_val_bpb == 1.0  # proposed while first trained, from the baseline
    rows = by_description(fw)
    assert rows["second"].parent_sha == rows["baseline"].commit_sha
    propose = rows["second"].timings_json["propose"]
    assert rows["second"].started_at >= rows["first"].ended_at - 0.5 and propose < 1.0


# ---- slots: what a host offers, and bad input


def test_cpu_slots_split_the_cores_and_more_slots_than_cores_is_refused(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    slots = local_slots(ExecutorConfig(slots=2), [], "cpu")
    assert [(s.name, s.cpuset, s.cpus) for s in slots] == [("cpu0-1", "0-1", 2), ("cpu2-3", "2-3", 2)]
    assert local_slots(ExecutorConfig(), [], "cpu")[0].cpuset is None  # one slot: not pinned
    with pytest.raises(UserError, match=r"slots = 5 asks for more CPU slots than the 4 cores here .* set slots to 4"):
        local_slots(ExecutorConfig(slots=5), [], "cpu")


def fake_gpus(monkeypatch, *names: str) -> None:
    monkeypatch.setattr(gpus, "visible_gpus", lambda: [Gpu(i, f"GPU-{i}", name) for i, name in enumerate(names)])


def test_gpu_slots_are_one_per_named_gpu_of_one_model(monkeypatch):
    fake_gpus(monkeypatch, "H100", "H100", "H100")
    assert [s.name for s in local_slots(ExecutorConfig(), ["all"], "cuda")] == ["gpu0", "gpu1", "gpu2"]
    assert [s.gpu_uuid for s in local_slots(ExecutorConfig(), ["2", "GPU-0"], "cuda")] == ["GPU-2", "GPU-0"]
    assert [s.name for s in local_slots(ExecutorConfig(), [], "cuda")] == ["gpu0"]  # default: the first GPU
    assert local_slots(ExecutorConfig(), ["all"], "cuda")[0].device == "H100"


@pytest.mark.parametrize(("names", "ids", "slots", "message"), [
    (("H100", "H100"), ["all"], 3, r"slots = 3 asks for more slots than the 2 GPU\(s\) \[gpus\] ids names"),
    (("H100", "H100"), ["0", "5"], None, r"\[gpus\] ids names GPU 5, but this machine has 2 \(0 to 1\)"),
    (("H100", "H100"), ["GPU-9"], None, r"\[gpus\] ids names GPU-9, which is not one of this machine's GPUs"),
    (("H100", "H100"), ["0", "GPU-0"], None, r"names a GPU twice"),
    (("H100", "A100"), ["all"], None, r"GPUs of 2 models \(A100, H100\): a run compares experiments on one GPU"),
    ((), ["all"], None, r"NVML sees none"),
])
def test_bad_gpu_slots_are_one_line_with_the_fix(monkeypatch, names, ids, slots, message):
    fake_gpus(monkeypatch, *names)
    with pytest.raises(UserError, match=message):
        local_slots(ExecutorConfig(slots=slots), ids, "cuda")


def test_a_run_resumed_on_another_device_model_is_refused(tmp_path, monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, baseline={"seconds": 0.2, "bpb": 1.0})
    fw.replay(edit("never proposed"))
    assert fw.loop(max_experiments=1) == 0
    conn = store.open_store(fw.store_path)
    store.update_run(conn, fw.run_row().id, device="NVIDIA H100 80GB HBM3")
    conn.close()
    with pytest.raises(UserError, match=r"compared its experiments on NVIDIA H100 80GB HBM3, and these slots are cpu"):
        fw.loop(max_experiments=2)


@needs_two_cores
def test_a_candidate_that_ends_before_the_noise_is_measured_is_judged_after_it_and_its_model_tested(tmp_path,
                                                                                                    monkeypatch):
    fw = FakeWorkspace.make(tmp_path, monkeypatch, slots=2, noise_seeds=2,
                            baseline={"seconds": 1.5, "bpb": 1.0, "bpb_by_seed": {"1": 1.01}})
    fw.replay(edit("quick and good", seconds=0.2, bpb=0.80), edit("never proposed"))
    assert fw.loop(max_experiments=2) == 0

    seed = next(e for e in fw.experiments() if e.role == Role.NOISE)
    quick = by_description(fw)["quick and good"]
    assert quick.ended_at < seed.ended_at  # it trained beside the noise seed and finished first
    assert "judged once the noise is measured" in " ".join(fw.said)
    assert quick.status == Status.KEEP and quick.test_bpb is not None  # its model waited on its slot
    assert quick.judge_json["noise_std"] == pytest.approx(0.00707, abs=1e-4)

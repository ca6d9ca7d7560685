"""torch.compile cold, then warm from the run's compile seed: the bundled train.py's smoke profile (the GPU
profile's code path: torch.compile, bf16 autocast, fused AdamW, at CPU sizes) in the CPU image, with
Inductor's CPU backend. Prints the figures (`pytest -s tests/test_compile_cache.py`)."""

import dataclasses

import pytest

from autoresearch.runner.check.policy import load_policy
from autoresearch.runner.phases.compile_seed import CompileCache
from autoresearch.runner.phases.data import prepare_data
from autoresearch.runner.phases.experiment import run_experiment
from autoresearch.runner.task_files import default_task_dir

pytestmark = pytest.mark.slow


def test_an_experiment_seeded_by_the_baseline_compiles_in_a_fraction_of_the_cold_time(docker_sandbox, tmp_path):
    image, task = docker_sandbox.image("cpu"), default_task_dir()
    data = prepare_data(docker_sandbox, image, task, "offline")
    limits = dataclasses.replace(load_policy().limits, time_budget_s=5)
    cache, outcomes = CompileCache(tmp_path / "seed"), []
    for name in ("cold", "warm"):
        outcome = run_experiment(docker_sandbox, image=image, task_dir=task, train_py=task / "train.py", data=data,
                                 work_dir=tmp_path / name, limits=limits, compile_cache=cache, profile="smoke")
        assert outcome.status == "ok", f"{outcome.reason}\n{outcome.log_tail[-2000:]}"
        print(f"{name}: compile_seconds {outcome.reported['compile_seconds']:.1f}, train phase "
              f"{outcome.timings.train_phase:.1f} s, val_bpb {outcome.val_bpb:.4f} ({outcome.compile_cache})")
        outcomes.append(outcome)
        cache = CompileCache(cache.folder, outcome.compile_seed or cache.sealed)
    cold, warm = outcomes
    assert cold.compile_cache.startswith("seeded: ") and warm.compile_cache.startswith("warm: ")
    assert warm.reported["compile_seconds"] < cold.reported["compile_seconds"] / 2

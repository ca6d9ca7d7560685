"""The compile seed is not a channel, on the providers that run code (docker, process).

Three experiments of one run share a seed (runner/phases/compile_seed.py): the baseline seeds it with
what its compile cache holds, a hostile candidate then tries to plant code in its own cache, in the
mounted seed and in the seed's folder on the host (whose path it is assumed to know), and a third
experiment looks for anything planted anywhere in its compile cache. The scorer is a stub (nothing here
is about scoring), so each experiment ends as a crash after its train phase; what counts is the train
phase, its log, and the seed on the host.
"""

import dataclasses
import json
from pathlib import Path

import pytest

from autoresearch.runner.check.policy import load_policy
from autoresearch.runner.phases.compile_seed import CompileCache, seed_digest
from autoresearch.runner.phases.experiment import ExperimentOutcome, run_experiment
from autoresearch.runner.sandbox.base import RUNNER_PID_LABEL, Sandbox
from autoresearch.runner.sandbox.fake_provider import tiny_data

pytestmark = pytest.mark.parametrize("sandbox", [pytest.param("docker", marks=pytest.mark.docker), "process"],
                                     indirect=True)

BASELINE = '''
import os, pathlib
cache = pathlib.Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
cache.mkdir(parents=True, exist_ok=True)
(cache / "kernel.py").write_text("COMPILED BY THE BASELINE")
print("baseline wrote its cache", flush=True)
'''

HOSTILE = '''
import json, os, pathlib
HOST_SEED = {host_seed!r}
cache = pathlib.Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
print("seeded:", (cache / "kernel.py").is_file(), flush=True)
cache.mkdir(parents=True, exist_ok=True)
targets = [str(cache / "planted.py"), str(cache / "kernel.py"), "/compile-seed/torchinductor/planted.py",
           "../compile-seed/torchinductor/kernel.py", HOST_SEED + "/torchinductor/planted.py",
           HOST_SEED + "/torchinductor/kernel.py"]
results = {{}}
for target in targets:
    try:
        os.chmod(os.path.dirname(target), 0o777)  # the process provider's phases are the runner's own user
    except OSError:
        pass
    try:
        with open(target, "w") as f:
            f.write("PLANTED")
        results[target] = "written"
    except OSError as exc:
        results[target] = type(exc).__name__
print("writes:", json.dumps(results), flush=True)
'''

VICTIM = '''
import os, pathlib
cache = pathlib.Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
print("seeded:", (cache / "kernel.py").is_file(), flush=True)
roots = [cache.parent, pathlib.Path("/compile-seed"), pathlib.Path("../compile-seed")]
planted = sorted(str(p) for root in roots if root.is_dir() for p in root.rglob("*")
                 if p.is_file() and not p.is_symlink() and "PLANTED" in p.read_text(errors="replace"))
print("planted:", planted, flush=True)
'''


@pytest.fixture
def task(tmp_path: Path) -> tuple[Path, Path]:
    """A task folder with a stub prepare.py (the scorer gives no verdict) and a tiny prepared data folder."""
    task_dir, data = tmp_path / "task", tmp_path / "data"
    task_dir.mkdir()
    (task_dir / "prepare.py").write_text("print('stub scorer')\n")
    data.mkdir()
    for name, content in tiny_data():
        (data / name).write_bytes(content)
    for path in (task_dir, data, *task_dir.iterdir(), *data.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the phase's user may not be ours
    return task_dir, data


def experiment(sandbox: Sandbox, task: tuple[Path, Path], tmp_path: Path, name: str, code: str,
               cache: CompileCache) -> ExperimentOutcome:
    task_dir, data = task
    train_py = tmp_path / f"{name}.py"
    train_py.write_text(code)
    limits = dataclasses.replace(load_policy().limits, time_budget_s=5)
    return run_experiment(sandbox, image=sandbox.image("cpu"), task_dir=task_dir, train_py=train_py, data=data,
                          work_dir=tmp_path / "experiments" / name, limits=limits, compile_cache=cache,
                          labels={"autoresearch.test": name, RUNNER_PID_LABEL: "0"})


def said(outcome: ExperimentOutcome, key: str) -> str:
    """What the train phase printed after `key:`."""
    text = outcome.train_log.read_text()
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(f"{key}:"))


def test_only_the_baseline_seeds_and_nothing_a_candidate_plants_reaches_another_experiment(sandbox, task, tmp_path):
    folder = tmp_path / "seeds" / "run1"
    baseline = experiment(sandbox, task, tmp_path, "baseline", BASELINE, CompileCache(folder))
    seed = baseline.compile_seed
    assert seed is not None and seed.files == 1, baseline.compile_cache
    assert (folder / "torchinductor" / "kernel.py").read_text() == "COMPILED BY THE BASELINE"
    assert seed_digest(folder) == seed
    assert not (folder / "torchinductor" / "kernel.py").stat().st_mode & 0o222  # sealed read-only

    hostile = experiment(sandbox, task, tmp_path, "hostile", HOSTILE.format(host_seed=str(folder)),
                         CompileCache(folder, seed))
    assert hostile.compile_seed is None  # a later experiment never seals
    assert said(hostile, "seeded") == "True", hostile.train_log.read_text()  # the seed reached its private cache
    writes = json.loads(said(hostile, "writes"))
    assert writes["/compile-seed/torchinductor/planted.py"] != "written"  # the mounted seed is read-only
    if sandbox.name == "docker":
        assert writes[str(folder / "torchinductor" / "planted.py")] != "written"  # the host's seed is not there
        assert seed_digest(folder) == seed

    victim = experiment(sandbox, task, tmp_path, "victim", VICTIM, CompileCache(folder, seed))
    assert said(victim, "planted") == "[]", victim.train_log.read_text()
    if seed_digest(folder) == seed:
        assert said(victim, "seeded") == "True" and victim.compile_cache.startswith("warm")
    else:  # the process provider's hostile phase rewrote the host's seed: the digest check refuses it
        assert sandbox.name == "process"
        assert said(victim, "seeded") == "False" and "refused" in victim.compile_cache


def test_a_baseline_that_does_not_exit_cleanly_seeds_nothing(sandbox, task, tmp_path):
    folder = tmp_path / "seeds" / "run1"
    crashed = experiment(sandbox, task, tmp_path, "baseline", BASELINE + "raise SystemExit(1)\n",
                         CompileCache(folder))
    assert crashed.status == "crash" and crashed.compile_seed is None
    assert not folder.exists()

"""`autoresearch bench --gpu`: its refusal without a GPU (for real, where there is none), and its report and table
built from experiments the fake provider plays (the GPU itself is only on a GPU box: `make gpu-check`)."""

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from autoresearch.runner.bench.gpu_bench import ANCHOR, PROFILE, gpu_report, measure, render, require_writable
from autoresearch.runner.check.policy import load_policy
from autoresearch.runner.errors import UserError
from autoresearch.runner.phases.data import prepare_data
from autoresearch.runner.phases.experiment import PROFILE_ENV, run_experiment
from autoresearch.runner.sandbox.fake_provider import FakeSandbox
from autoresearch.runner.sandbox.monitor import Usage
from autoresearch.runner.task_files import default_task_dir
from tests.fake_nvml import driver_present

GPU = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.6, "driver": "550.54.15", "persistence": True}


@pytest.mark.skipif(driver_present(), reason="an NVIDIA driver is present: bench --gpu would run")
def test_without_a_gpu_bench_gpu_fails_at_once_in_one_line_saying_what_nvml_said(tmp_path):
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "autoresearch.runner.cli", "bench", "--gpu"], cwd=tmp_path,
                          env={**os.environ, "AUTORESEARCH_CACHE": str(tmp_path / "cache")}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("autoresearch: bench --gpu needs an NVIDIA GPU, and NVML sees none (no NVIDIA "
                                  "driver: ") and len(done.stderr.splitlines()) == 1
    assert time.monotonic() - began < 30
    assert list(tmp_path.iterdir()) == []  # nothing prepared, nothing written


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeSandbox:
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    defaults = tmp_path / "fake-sandbox.json"
    defaults.write_text(json.dumps({"seconds": 0.3, "compile_cache": {"kernel.py": "KERNEL"}}))
    return FakeSandbox(defaults)


def summary(compile_s: float, mfu: float, vram: float) -> list[str]:
    """What train.py's GPU profile prints: progress lines (the first one compiles), then its summary."""
    return ["progress step=1 elapsed=0.00 loss=9.0 tok_per_s=20000 mfu=0.50",
            *[f"progress step={i} elapsed={i:.2f} loss=5.0 tok_per_s={400000 + 1000 * i} mfu={mfu}" for i in (2, 3, 4)],
            "---", "val_bpb:          1.010000", "training_seconds: 300.0", f"peak_vram_mb:     {vram}",
            f"mfu_percent:      {mfu}", "total_tokens_M:   120.5", f"compile_seconds:  {compile_s}",
            "export_seconds:   0.4"]


def test_the_profile_the_bench_asks_for_is_train_pys_and_reaches_it_by_the_name_it_reads():
    source = (default_task_dir() / "train.py").read_text()
    assert f'os.environ.get("{PROFILE_ENV}")' in source and f'"{PROFILE}"' in source


def test_the_report_and_the_table_hold_every_figure_of_both_runs(fake, tmp_path):
    image, task = fake.image("cuda"), default_task_dir()
    data = prepare_data(fake, image, task, "offline")
    limits = dataclasses.replace(load_policy().limits, time_budget_s=300)
    outcomes = []
    for name, lines, bpb in (("cold", summary(41.5, 39.1, 30123.4), 0.9981), ("warm", summary(6.2, 39.6, 30120.0),
                                                                                  0.9975)):
        train_py = tmp_path / f"{name}.py"
        train_py.write_text(f"# fake-sandbox: {json.dumps({'lines': lines, 'bpb': bpb})}\n")
        outcome = run_experiment(fake, image=image, task_dir=task, train_py=train_py, data=data,
                                 work_dir=tmp_path / name, limits=limits)
        assert outcome.status == "ok", outcome.reason
        # what the host's monitor records on a GPU (its NVML path: tests/test_nvml.py)
        outcomes.append(dataclasses.replace(outcome, usage=Usage("nvml", "NVML on GPU x", busy_seconds=301.5,
                                                                 peak_mem_mb=31744.0)))
    report = gpu_report(outcomes, gpu=GPU, sandbox="fake", image=image, source="web",
                        source_why="auto: the hub answers", budget_s=300)

    cold, warm = report["runs"]["cold"], report["runs"]["warm"]
    assert (report["profile"], report["anchor"], report["gpu"]) == (PROFILE, ANCHOR, GPU)
    assert (cold["val_bpb"], cold["mfu_percent"], cold["peak_vram_mb"], cold["compile_s"]) == (0.9981, 39.1, 30123.4,
                                                                                             41.5)
    assert (warm["val_bpb"], warm["compile_s"]) == (0.9975, 6.2)
    assert cold["tokens_per_s"] == 403000  # the median step, the compiling first one left out
    assert (cold["nvml_peak_vram_mb"], cold["gpu_busy_s"]) == (31744.0, 301.5)
    assert cold["phases_s"]["train_phase"] > 0 and cold["overhead_s"] == pytest.approx(
        cold["phases_s"]["total"] - cold["phases_s"]["training"])
    assert json.loads(json.dumps(report)) == report

    table = render(report)
    assert table.splitlines()[0] == ("GPU profile (h100) on NVIDIA H100 80GB HBM3 (driver 550.54.15), fake sandbox, "
                                     "web corpus, budget 300 s")
    assert cells(table, "") == ["cold", "warm", "anchor"]
    assert cells(table, "val_bpb (trusted, the scorer's)") == ["0.9981", "0.9975", "0.9979"]
    assert cells(table, "MFU %") == ["39.1", "39.6", "39.8"]
    assert cells(table, "tokens/s (median step)") == ["403,000", "403,000"]
    assert cells(table, "peak VRAM MB, as torch saw it") == ["30,123", "30,120"]
    assert cells(table, "peak VRAM MB, as NVML saw it") == ["31,744", "31,744"]
    assert cells(table, "GPU-busy seconds (NVML)") == ["301.5", "301.5"]
    assert cells(table, "compile seconds (first step)") == ["41.5", "6.2"]
    assert cells(table, "  training (reported)") == ["300.00", "300.00"]
    assert len(cells(table, "  overhead (whole minus training)")) == 2
    assert table.splitlines()[-1] == "  anchor: val_bpb 0.9979 at 39.8% MFU, 300 s, one H100, web corpus"


def cells(table: str, label: str) -> list[str]:
    """The cells of the table's row labelled label (its first such row)."""
    line = next(line for line in table.splitlines()[1:] if line[2:44].rstrip() == label)
    return line[44:].split()


def test_without_nvml_readings_the_table_says_n_a_rather_than_a_number(fake, tmp_path):
    image, task = fake.image("cuda"), default_task_dir()
    outcome = run_experiment(fake, image=image, task_dir=task, train_py=task / "train.py",
                             data=prepare_data(fake, image, task, "offline"), work_dir=tmp_path / "run",
                             limits=load_policy().limits)
    report = gpu_report([outcome, outcome], gpu=GPU, sandbox="fake", image=image, source="offline",
                        source_why="as configured", budget_s=300)
    assert report["runs"]["cold"]["gpu_busy_s"] is None and report["runs"]["cold"]["mfu_percent"] is None
    assert cells(render(report), "GPU-busy seconds (NVML)") == ["n/a", "n/a"]


def test_the_second_run_starts_from_the_seed_the_first_one_sealed(fake, tmp_path):
    image = fake.image("cuda")
    data = prepare_data(fake, image, default_task_dir(), "offline")
    said: list[str] = []
    cold, warm = measure(fake, image, data, load_policy().limits, "GPU-fake", tmp_path / "bench", said.append)
    assert cold.compile_cache.startswith("seeded: 1 files") and cold.compile_seed is not None
    assert warm.compile_cache == f"warm: 1 files of the run's seed {cold.compile_seed.digest[:12]}"
    digest = cold.compile_seed.digest[:12]
    assert said == ["run 1/2 (cold compile cache): 300 s of training ...",
                    f"run 1/2: val_bpb 1.0000, compile cache seeded: 1 files, 0.0 MiB, digest {digest}",
                    "run 2/2 (warm compile cache): 300 s of training ...",
                    f"run 2/2: val_bpb 1.0000, compile cache warm: 1 files of the run's seed {digest}"]
    assert not (tmp_path / "bench" / "compile-seed").exists()  # the bench's own seed goes; its logs stay
    assert (tmp_path / "bench" / "cold" / "train.log").is_file()


def test_a_json_path_that_cannot_be_written_is_refused_before_the_runs(tmp_path):
    with pytest.raises(UserError, match=f"cannot write the bench's JSON to {tmp_path}: choose another path with -o"):
        require_writable(tmp_path)
    require_writable(tmp_path / "build" / "gpu-check.json")  # its folder is made
    assert (tmp_path / "build").is_dir() and not (tmp_path / "build" / "gpu-check.json").exists()


def test_the_gpu_bench_flags_are_refused_without_gpu_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "autoresearch.runner.cli", "bench", "--sandbox", "process"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (2, "autoresearch: --sandbox and --output go with --gpu (the CPU bench "
                                                 "runs in Docker)\n")

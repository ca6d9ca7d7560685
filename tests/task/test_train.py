"""train.py on the host: profile choice, output format, and a hand-over the evaluation accepts."""

import os
import subprocess
import sys

from autoresearch.runner.phases.metrics import parse_progress, parse_summary

from .conftest import TASK_DIR


def run_train(env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TASK_DIR / "train.py")], env={**os.environ, **env}, cwd=cwd,
        capture_output=True, text=True, timeout=300,
    )


def test_unknown_profile_is_one_line(tmp_path):
    done = run_train({"AUTORESEARCH_PROFILE": "tpu"}, tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip() == "train.py: unknown profile 'tpu' (choose h100, cpu or smoke)"


def test_h100_profile_without_gpu_says_so(tmp_path):
    done = run_train({"AUTORESEARCH_PROFILE": "h100"}, tmp_path)
    assert done.returncode != 0
    assert "needs a CUDA GPU" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_cpu_profile_prints_progress_and_summary_and_hands_over(prepare, offline_data, tmp_path):
    done = run_train({"AUTORESEARCH_DATA": str(offline_data), "AUTORESEARCH_TIME_BUDGET": "4",
                      "AUTORESEARCH_HANDOVER": str(tmp_path / "out")}, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    points = [p for p in map(parse_progress, done.stdout.splitlines()) if p]
    assert points and points[0].step == 1 and points[-1].elapsed >= 4
    summary = parse_summary(done.stdout)
    for key in ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                "total_tokens_M", "num_steps", "num_params_M", "depth", "compile_seconds"):
        assert key in summary, key
    assert summary["num_steps"] == points[-1].step
    result = prepare.evaluate(tmp_path / "out", offline_data, "val")
    # The scorer's own bound for numerical noise: an honest model's logits move by up to ~2.4e-4 on CPU between
    # batch compositions (prepare.py), so a tighter bound here failed now and then.
    assert result["status"] == "ok" and result["causality_leak"] <= prepare.PROBE_TOLERANCE["cpu"]
    assert os.listdir(tmp_path / "out") == ["model.graph"]


def test_smoke_profile_runs_the_compiled_path_on_cpu(prepare, offline_data, tmp_path):
    """The h100 code path (torch.compile, bf16 autocast, fused AdamW) at cpu sizes, without a GPU."""
    done = run_train({"AUTORESEARCH_PROFILE": "smoke", "AUTORESEARCH_DATA": str(offline_data),
                      "AUTORESEARCH_TIME_BUDGET": "2", "AUTORESEARCH_HANDOVER": str(tmp_path / "out")}, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "profile smoke | device cpu" in done.stdout
    summary = parse_summary(done.stdout)
    assert summary["compile_seconds"] > 0
    result = prepare.evaluate(tmp_path / "out", offline_data, "val")
    assert result["status"] == "ok"

"""`autoresearch bench`: where the time of one CPU-profile experiment goes, median over a few runs.

It runs the bundled train.py in the real containers, exactly as an experiment does, and prints the
median seconds of each phase so that later changes to the sandbox or the loop can be compared.
"""

import json
import statistics
import tempfile
from dataclasses import asdict
from pathlib import Path

from autoresearch.runner.check.policy import Limits
from autoresearch.runner.errors import UserError
from autoresearch.runner.phases.data import prepare_data
from autoresearch.runner.phases.experiment import Timings, run_experiment
from autoresearch.runner.sandbox.base import Sandbox
from autoresearch.runner.sandbox.registry import open_sandbox
from autoresearch.runner.settings import Flags, resolve_settings
from autoresearch.runner.task_files import default_task_dir
from autoresearch.runner.workspace import find_workspace

PHASES = {
    "train_container_start": "container start (training)",
    "first_output": "interpreter and imports, to first line",
    "training": "training (reported)",
    "export": "export (reported)",
    "train_phase": "training container, start to exit",
    "score_container_start": "container start (scoring)",
    "scoring": "scoring container, start to exit",
    "total": "whole experiment",
}


def run_task_bench(runs: int = 3, budget_s: float = 20.0, as_json: bool = False) -> dict:
    """Run the CPU profile runs times and print the median of every phase."""
    if runs < 1 or budget_s <= 0:
        raise UserError("--runs must be at least 1 and --budget positive")
    settings = resolve_settings(find_workspace(Path(tempfile.gettempdir())),
                                Flags(time_budget_s=budget_s, flavor="cpu", sandbox="docker"))
    sandbox = open_sandbox(settings.sandbox, settings.sandbox_insisted)
    try:
        return _bench(sandbox, settings.limits, runs, as_json)
    finally:
        sandbox.close()


def _bench(sandbox: Sandbox, limits: Limits, runs: int, as_json: bool) -> dict:
    image = sandbox.image("cpu")
    task_dir = default_task_dir()
    data = prepare_data(sandbox, image, task_dir, "offline")
    samples: list[Timings] = []
    scores = []
    reported = []  # train.py's own summary of each run: steps, tokens, MFU
    with tempfile.TemporaryDirectory(prefix="autoresearch-bench-") as tmp:
        for i in range(runs):
            outcome = run_experiment(
                sandbox, image=image, task_dir=task_dir, train_py=task_dir / "train.py", data=data,
                work_dir=Path(tmp) / f"run{i}", limits=limits,
            )
            if outcome.status != "ok":
                raise UserError(f"bench run {i + 1} ended with {outcome.status}: {outcome.reason}")
            samples.append(outcome.timings)
            scores.append(outcome.val_bpb)
            reported.append(outcome.reported)
            if not as_json:
                print(f"run {i + 1}/{runs}: val_bpb {outcome.val_bpb:.4f}, total {outcome.timings.total:.1f}s")
    medians = {key: statistics.median(getattr(t, key) for t in samples) for key in PHASES}
    report = {"runs": runs, "budget_s": limits.time_budget_s, "median_seconds": medians, "val_bpb": scores,
              "reported": reported, "samples": [asdict(t) for t in samples]}
    if as_json:
        print(json.dumps(report))
    else:
        print(f"\nCPU profile, {runs} runs, budget {limits.time_budget_s:g}s: median seconds per phase")
        for key, label in PHASES.items():
            print(f"  {label:<42} {medians[key]:8.2f}")
        overhead = medians["total"] - medians["training"]
        print(f"  {'overhead (whole minus training)':<42} {overhead:8.2f}")
    return report

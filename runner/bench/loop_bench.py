"""`autoresearch bench --loop N`: the loop's efficiency on this machine, in a throw-away workspace.

It runs N experiments of the sweep agent on the bundled task exactly as `autoresearch run` does and
prints the sum of training seconds over the wall seconds (the loop's efficiency) and the median
seconds of every part of an experiment, so later changes to the loop can be compared side by side.
"""

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from autoresearch.runner.bench.task_bench import PHASES
from autoresearch.runner.errors import UserError
from autoresearch.runner.init import init_workspace
from autoresearch.runner.loop import Loop, RunOptions
from autoresearch.runner.record import store
from autoresearch.runner.workspace import find_workspace

PARTS = {  # the task bench's phases (one wording of each) between what the loop adds around them
    "propose": "agent proposal",
    "commit": "git commit",
    **{part: label for part, label in PHASES.items() if part not in ("train_phase", "total")},
    "test_scoring": "held-out test scoring (kept only)",
    "total": "experiment, train to scored",
}


def run_loop_bench(experiments: int = 3, budget_s: float = 20.0, as_json: bool = False) -> dict:
    """Run a sweep loop of experiments in a temporary workspace and print where its time went."""
    if experiments < 1 or budget_s <= 0:
        raise UserError("--loop must be at least 1 and --budget positive")
    with tempfile.TemporaryDirectory(prefix="autoresearch-loop-bench-") as tmp:
        root = init_workspace(Path(tmp) / "ws")
        began = time.monotonic()
        options = RunOptions("bench", max_experiments=experiments, time_budget_s=budget_s, flavor="cpu")
        code = Loop(find_workspace(root), options,
                    say=lambda line: print(line, file=sys.stderr, flush=True)).run()
        wall = time.monotonic() - began
        conn = store.open_store(root / ".autoresearch" / "store.db", readonly=True)
        recorded = store.list_experiments(conn)
        conn.close()
    if code != 0:
        raise UserError(f"the bench loop ended with exit code {code}")
    report = loop_report(recorded, wall, budget_s)
    print(json.dumps(report) if as_json else render(report))
    return report


def loop_report(recorded: list[store.Experiment], wall_s: float, budget_s: float) -> dict:
    """Efficiency and the median of every part, from the experiments' recorded timings."""
    timings = [e.timings_json or {} for e in recorded]
    training = sum(t.get("training", 0.0) for t in timings)
    medians = median_parts(recorded)
    experiment_wall = sum((e.ended_at or e.started_at) - e.started_at for e in recorded)
    return {
        "experiments": len(recorded), "budget_s": budget_s, "wall_s": wall_s, "training_s": training,
        "efficiency": training / wall_s, "median_seconds": medians,
        "between_experiments_s": (wall_s - experiment_wall) / len(recorded),
        "statuses": [e.status for e in recorded], "val_bpb": [e.val_bpb for e in recorded],
    }


def median_parts(recorded: list[store.Experiment]) -> dict[str, float]:
    """The median seconds of every part of an experiment (PARTS), from the recorded timings."""
    timings = [e.timings_json or {} for e in recorded]
    return {part: statistics.median(t.get(part, 0.0) for t in timings) for part in PARTS}


def render(report: dict) -> str:
    lines = [f"sweep loop, {report['experiments']} experiments, budget {report['budget_s']:g}s:",
             f"  wall {report['wall_s']:.1f}s, training {report['training_s']:.1f}s, "
             f"efficiency {report['efficiency']:.1%}",
             "  median seconds per experiment:"]
    lines += [f"    {label:<40} {report['median_seconds'][part]:8.2f}" for part, label in PARTS.items()]
    lines.append(f"    {'runner, between experiments (mean)':<40} {report['between_experiments_s']:8.2f}")
    lines.append(f"  statuses: {' '.join(report['statuses'])}")
    return "\n".join(lines)

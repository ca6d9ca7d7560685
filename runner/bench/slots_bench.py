"""`autoresearch bench --slots N`: how close the loop keeps N slots to ideal throughput.

For each N it runs the loop on a throw-away workspace with N slots, on the real sandbox (hardened
containers, the trusted scorer), a replay agent that "thinks" a set time per proposal, and a simulated
training phase: a train.py that sleeps its budget printing progress lines, then hands over a tiny model.
So the figures are the loop's and the executor's (container starts, imports, export, scoring, git, the
store, the agent's latency where prefetching does not hide it), not the CPU's speed at training.

Per N: experiments per hour and the fraction of ideal (N slots each finishing one experiment per budget),
the overhead per experiment (slot-seconds beyond its training), the loop efficiency (training seconds
over wall seconds, agent included), and the same projected to a 300 s budget, where the overhead is
the same and the training longer.
"""

import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from autoresearch.runner.bench.loop_bench import PARTS, median_parts
from autoresearch.runner.config import ClusterConfig, dump_config, load_config
from autoresearch.runner.errors import UserError
from autoresearch.runner.executors.base import Slot
from autoresearch.runner.init import init_workspace
from autoresearch.runner.loop import Loop, RunOptions
from autoresearch.runner.record import store
from autoresearch.runner.workspace import find_workspace, require_workspace

PROJECTED_BUDGET_S = 300.0
DEFAULT_SLOTS = (1, 2, 4, 8)

# The simulated training: the budget spent sleeping (one progress line a second), then a tiny model handed over
# through prepare.py's own export, so the trusted scorer runs for real. Written into each bench workspace.
SIMULATED_TRAIN_PY = '''\
"""A simulated training run for `autoresearch bench --slots` ({tag}): it sleeps its budget, then hands over a tiny
model, so a bench measures the loop and not the CPU."""

import time

import torch

import prepare

task = prepare.task_info(prepare.DATA_DIR)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Embedding(task.vocab_size, 16), torch.nn.Linear(16, task.vocab_size))
began = time.time()
step = 0
while time.time() - began < prepare.TIME_BUDGET:
    time.sleep(min(1.0, max(0.0, prepare.TIME_BUDGET - (time.time() - began))))
    step += 1
    print(f"progress step={{step}} elapsed={{time.time() - began:.2f}} loss=5.0 tok_per_s=0 mfu=0.00", flush=True)
training_seconds = time.time() - began
prepare.HANDOVER_DIR.mkdir(parents=True, exist_ok=True)
prepare.export_model(model.eval(), prepare.HANDOVER_DIR / prepare.MODEL_FILE, task.seq_len)
print("---")
print("val_bpb:          5.000000")
print(f"training_seconds: {{training_seconds:.1f}}")
print("num_steps:        " + str(step))
'''


@dataclass(frozen=True)
class SlotsFigures:
    """One N's figures."""

    slots: int
    experiments: int
    train_s: float  # the simulated training seconds per experiment
    wall_s: float  # from the first candidate's start to the last one's end
    per_hour: float
    ideal_per_hour: float
    overhead_s: float  # slot-seconds per experiment beyond its training
    efficiency: float  # training seconds over slot-seconds (at one slot: over the wall, agent included)
    projected_per_hour: float  # the same overhead at a 300 s budget
    projected_efficiency: float
    parts: dict[str, float]  # the median seconds of each part of an experiment (runner/bench/loop_bench.py)

    @property
    def fraction_of_ideal(self) -> float:
        return self.per_hour / self.ideal_per_hour


def run_slots_bench(slot_counts: list[int], train_s: float = 20.0, per_slot: int = 3, think_s: float = 5.0,
                    executor: str = "local", as_json: bool = False) -> list[SlotsFigures]:
    """Bench the loop at each slot count; print the table (or JSON) and return the figures."""
    if not slot_counts or min(slot_counts) < 1 or train_s <= 0 or per_slot < 1 or think_s < 0:
        raise UserError("--slots takes counts of 1 or more (e.g. 1,2,4,8); --budget must be positive")
    cluster = _this_cluster() if executor == "ray" else None
    figures = [_bench(n, train_s, per_slot, think_s, cluster) for n in slot_counts]
    print(json.dumps([{**f.__dict__, "fraction_of_ideal": f.fraction_of_ideal} for f in figures]) if as_json
          else render(figures, think_s))
    return figures


def _this_cluster() -> ClusterConfig:
    """The cluster of this workspace's Ray head (the one `autoresearch node head` started here, or its [cluster]
    address and token), for a bench workspace to run on."""
    from autoresearch.runner.settings import resolve_settings

    ws = find_workspace(Path.cwd())
    require_workspace(ws)
    cluster = resolve_settings(ws).config.cluster
    head = ws.state_dir / "cluster" / "head.json"
    address = cluster.address or (json.loads(head.read_text())["address"] if head.exists() else None)
    token = Path(cluster.token_file) if cluster.token_file else ws.state_dir / "cluster" / "token"
    if address is None or not token.exists():
        raise UserError("bench --executor ray runs on this workspace's Ray head: start it with `autoresearch node "
                        "head` (or set [cluster] address and token_file), and join the nodes first")
    return dataclasses.replace(cluster, address=address, token_file=str(token.resolve()))


def _bench(slots: int, train_s: float, per_slot: int, think_s: float,
           cluster: ClusterConfig | None = None) -> SlotsFigures:
    count = slots * per_slot
    with tempfile.TemporaryDirectory(prefix="autoresearch-slots-bench-") as tmp:
        root = init_workspace(Path(tmp) / "ws")
        (root / "train.py").write_text(SIMULATED_TRAIN_PY.format(tag="baseline"))
        replay = Path(tmp) / "proposals.jsonl"
        replay.write_text("".join(json.dumps({"description": f"simulated {i}", "think_s": think_s,
                                              "train_py": SIMULATED_TRAIN_PY.format(tag=f"candidate {i}")}) + "\n"
                                  for i in range(count)))
        path = root / "autoresearch.toml"
        config = load_config(path)
        config = dataclasses.replace(
            config, agent=dataclasses.replace(config.agent, name="replay", replay_file=str(replay)),
            keep=dataclasses.replace(config.keep, noise_seeds=1))
        if cluster is not None:  # the cluster's slots, at most this many of them
            config = dataclasses.replace(config, cluster=cluster,
                                         executor=dataclasses.replace(config.executor, name="ray", slots=slots))
        path.write_text(dump_config(config))
        _commit_all(root)
        loop = Loop(find_workspace(root), RunOptions("bench", max_experiments=count + 1, time_budget_s=train_s,
                                                     flavor="cpu"),
                    say=lambda line: print(line, file=sys.stderr, flush=True),
                    slots=None if cluster else [Slot(f"sim{i}") for i in range(slots)])
        began = time.monotonic()
        code = loop.run()
        elapsed = time.monotonic() - began
        conn = store.open_store(root / ".autoresearch" / "store.db", readonly=True)
        rows = store.list_experiments(conn)
        conn.close()
    if code != 0:
        raise UserError(f"the bench loop with {slots} slots ended with exit code {code}")
    return figures_of(slots, rows[1:], train_s, elapsed)


def figures_of(slots: int, candidates: list[store.Experiment], train_s: float, elapsed: float) -> SlotsFigures:
    """The figures of one N from its candidates' rows (the baseline, which runs alone, left out)."""
    bad = [e for e in candidates if e.status not in ("keep", "discard")]
    if bad or not candidates:
        raise UserError(f"the bench's simulated experiments did not all score: {bad[0].status if bad else 'none ran'}"
                        f" ({bad[0].exit_reason if bad else ''})")
    wall = max(e.ended_at for e in candidates) - min(e.started_at for e in candidates)  # type: ignore[type-var]
    trained = sum(e.training_seconds or train_s for e in candidates) / len(candidates)
    per_hour = len(candidates) / wall * 3600
    overhead = max(0.0, slots * wall / len(candidates) - trained)
    return SlotsFigures(slots, len(candidates), trained, wall, per_hour, slots * 3600 / trained, overhead,
                        trained / (trained + overhead), slots * 3600 / (PROJECTED_BUDGET_S + overhead),
                        PROJECTED_BUDGET_S / (PROJECTED_BUDGET_S + overhead), median_parts(candidates))


def render(figures: list[SlotsFigures], think_s: float) -> str:
    budget = figures[0].train_s if figures else 0
    lines = [f"loop throughput, simulated training of {budget:.0f}s, agent thinking {think_s:g}s a proposal:",
             f"  {'slots':>5} {'exp/h':>8} {'ideal':>8} {'of ideal':>9} {'overhead':>9} "
             f"{'exp/h@300s':>11} {'of ideal@300s':>14}"]
    lines += [f"  {f.slots:>5} {f.per_hour:>8.1f} {f.ideal_per_hour:>8.1f} {f.fraction_of_ideal:>9.1%} "
              f"{f.overhead_s:>8.1f}s {f.projected_per_hour:>11.1f} {f.projected_efficiency:>14.1%}" for f in figures]
    one = next((f for f in figures if f.slots == 1), None)
    if one is not None:
        lines.append(f"  one slot: loop efficiency {one.efficiency:.1%} (training over wall, agent included), "
                     f"{one.projected_efficiency:.1%} projected to {PROJECTED_BUDGET_S:.0f}s")
    lines.append("  median seconds per experiment, by slots: " + " ".join(f"{f.slots:>7}" for f in figures))
    lines += [f"    {label:<40} " + " ".join(f"{f.parts[part]:7.2f}" for f in figures) for part, label in PARTS.items()]
    return "\n".join(lines)


def _commit_all(root: Path) -> None:
    from autoresearch.runner.record import gitrepo

    repo = gitrepo.open_repo(root)
    repo.index.read()
    repo.index.add_all()
    repo.index.write()
    author = gitrepo.signature()
    repo.create_commit("HEAD", author, author, "bench: the simulated train.py", repo.index.write_tree(),
                       [repo.head.target])

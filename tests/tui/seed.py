"""A deterministic workspace for the TUI's tests: git history, store rows and logs at fixed times.

Every timestamp derives from T0, commits use fixed signatures (so their shas never change), and the app
under test gets `clock=lambda: NOW`, so what the screens show is the same at every run.
"""

import math
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

import pygit2

from autoresearch.runner.check.findings import Finding
from autoresearch.runner.phases.metrics import ProgressPoint
from autoresearch.runner.record import store
from autoresearch.runner.sandbox.monitor import Sample
from autoresearch.runner.workspace import Workspace

T0 = 1_700_000_000.0
NOW = T0 + 3725.0
BUDGET_S = 60.0
CONFIG = '[agent]\nname = "claude"\nmodel = "claude-sonnet-4-5"\n'
POLICY = f"[limits]\ntime_budget_s = {BUDGET_S}\n"
BASE_TRAIN_PY = "LR = 0.010\nDEPTH = 4\nWIDTH = 256\nWARMUP = 100\n\n\ndef train():\n    return LR * DEPTH\n"

# (status, val_bpb, test_bpb, description, change to train.py)
PLAN: tuple[tuple[str, float | None, float | None, str, tuple[str, str] | None], ...] = (
    ("keep", 0.997900, 0.998112, "baseline", None),
    ("discard", 1.001234, None, "raise LR to 0.02", ("LR = 0.010", "LR = 0.020")),
    ("keep", 0.991004, 0.992230, "deeper model: DEPTH 4 -> 6", ("DEPTH = 4", "DEPTH = 6")),
    ("crash", None, None, "WIDTH 512 with a typo", ("WIDTH = 256", "WIDTH = 512x")),
    ("blocked", None, None, "read the validation shard directly", None),
    ("discard", 0.995021, None, "shorter warmup", ("WARMUP = 100", "WARMUP = 20")),
    ("keep", 0.985432, 0.986901, "wider model: WIDTH 256 -> 384", ("WIDTH = 256", "WIDTH = 384")),
    ("timeout", None, None, "train twice as long", ("WARMUP = 100", "WARMUP = 100  # x2 steps")),
    ("violation", None, None, "overwrite prepare.py's evaluation", ("LR = 0.010", "LR = 0.010  # patch eval")),
    ("discard", 0.990113, None, "LR 0.008", ("LR = 0.010", "LR = 0.008")),
    ("keep", 0.981234, 0.982870, "cosine schedule to zero", ("return LR * DEPTH", "return LR * DEPTH * 0.5")),
    ("running", None, None, "label smoothing 0.1", ("WARMUP = 100", "WARMUP = 120")),
)


@dataclass(frozen=True)
class Seeded:
    ws: Workspace
    run_id: int
    experiment_ids: list[int]


def _signature(when: float) -> pygit2.Signature:
    return pygit2.Signature("autoresearch", "autoresearch@localhost", int(when), 0)


def _commit(repo: pygit2.Repository, parent: pygit2.Oid | None, files: dict[str, str], message: str,
            when: float) -> pygit2.Oid:
    builder = repo.TreeBuilder(repo[parent].tree) if parent else repo.TreeBuilder()
    for name, text in files.items():
        builder.insert(name, repo.create_blob(text.encode()), pygit2.enums.FileMode.BLOB)
    ref = None if parent else "HEAD"
    return repo.create_commit(ref, _signature(when), _signature(when), message, builder.write(),
                              [parent] if parent else [])


def loss_points(seq: int, seconds: float, step_s: float = 1.0) -> list[ProgressPoint]:
    """A smooth decaying loss with a little deterministic wiggle; better experiments end lower."""
    points = []
    for step in range(int(seconds / step_s)):
        t = (step + 1) * step_s
        loss = 1.0 + 3.0 * math.exp(-t / 15.0) - 0.01 * seq * (t / BUDGET_S) + 0.02 * math.sin(step * 1.7 + seq)
        points.append(ProgressPoint(step=step + 1, elapsed=t, loss=loss, tok_per_s=52_000.0 + 100 * seq, mfu=38.5))
    return points


def gpu_history(end: float, gpu: bool, seconds: int = 600) -> list[Sample]:
    """One sample a second up to end: a busy GPU (or CPU processes) with a breathing utilisation."""
    samples = []
    for i in range(seconds):
        t = end - seconds + i + 1
        wave = 0.5 + 0.5 * math.sin(i / 40.0)
        if gpu:
            samples.append(Sample(t, "gpu0", "nvml", 60 + 35 * wave, 30_000 + 12_000 * wave, 81_559.0, 29_000.0,
                                  power_w=250 + 80 * wave, temp_c=61 + 8 * wave))
        else:
            samples.append(Sample(t, "cpu", "psutil", 90 + 100 * wave, 6_000 + 1_500 * wave, 15_872.0,
                                  1_100 + 200 * wave))
    return samples


def seed_workspace(root: Path, *, gpu: bool = True, heartbeat_age: float = 1.0, plan: tuple = PLAN,
                   sandbox: str | None = None) -> Seeded:
    """A workspace at root with run "main" of claude, with plan's experiments and the last one running.

    sandbox: the provider the run records (None: a run recorded before runs kept it).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "autoresearch.toml").write_text(CONFIG)
    (root / "program.md").write_text("# program\n\nMake val_bpb go down.\n")
    ws = Workspace(root=root, task_dir=root, is_scratch=False)
    repo = pygit2.init_repository(str(root))
    base = _commit(repo, None, {"train.py": BASE_TRAIN_PY, "autoresearch.toml": CONFIG}, "autoresearch init", T0)
    conn = store.open_store(ws.store_path)
    try:
        run_id = store.create_run(conn, tag="main", agent="claude", config_toml=CONFIG, policy_toml=POLICY, pid=4242,
                                  host="seeded-host", sandbox=sandbox)
        store.update_run(conn, run_id, started_at=T0, heartbeat_at=NOW - heartbeat_age)
        ids = _experiments(conn, ws, repo, run_id, base, plan)
        _notes(conn, run_id, ids)
        store.add_gpu_samples(conn, ids[-1], gpu_history(NOW - 0.5, gpu))
    finally:
        conn.close()
    return Seeded(ws, run_id, ids)


def _experiments(conn: sqlite3.Connection, ws: Workspace, repo: pygit2.Repository, run_id: int, base: pygit2.Oid,
                 plan: tuple) -> list[int]:
    best, best_code, ids = base, BASE_TRAIN_PY, []
    for seq, (status, val, test, description, change) in enumerate(plan, start=1):
        started = T0 + 300.0 * (seq - 1) + 5
        code = best_code.replace(*change) if change else best_code
        commit = None if status == "blocked" else _commit(repo, best, {"train.py": code}, description, started)
        running = status == "running"
        ended = None if running else started + 95.0
        log = None if status == "blocked" else str(_write_log(ws, seq, status))
        exp_id = store.create_experiment(
            conn, run_id=run_id, seq=seq, description=description, status=status, started_at=started,
            ended_at=ended, commit_sha=str(commit) if commit else None, parent_sha=str(best),
            val_bpb=val, test_bpb=test, training_seconds=None if running or not val else BUDGET_S,
            total_seconds=None if running else 95.0, peak_vram_mb=None if status == "blocked" else 20_480.0 + 512 * seq,
            reported_json={"val_bpb": val + 0.0021} if val else None,
            exit_reason=_reasons().get(status), timings_json={"training": BUDGET_S, "scoring": 12.5} if val else None,
            log_path=log,
        )
        ids.append(exp_id)
        if status != "blocked":
            store.add_metric_points(conn, exp_id, loss_points(seq, BUDGET_S if not running else 25.0))
        _turns(conn, run_id, exp_id, seq, description, started)
        _findings(conn, exp_id, status)
        if status == "keep":
            best, best_code = commit, code
    return ids


def _reasons() -> dict[str, str]:
    return {"crash": "train.py exited with 1", "timeout": "training ran past the hard deadline",
            "blocked": "blocked by policy before running", "violation": "prepare.py changed during training"}


def _write_log(ws: Workspace, seq: int, status: str) -> Path:
    folder = ws.experiments_dir / f"{seq:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"profile cpu | device cpu | params 1.{seq:02d}M | budget {BUDGET_S:.0f}s"]
    lines += [f"progress step={p.step} elapsed={p.elapsed:.2f} loss={p.loss:.6f}" for p in loss_points(seq, BUDGET_S)]
    if status == "crash":
        lines += ["Traceback (most recent call last):", '  File "/task/train.py", line 3', "    WIDTH = 512x",
                  "SyntaxError: invalid decimal literal"]
    (folder / "train.log").write_text("\n".join(lines) + "\n")
    return folder / "train.log"


def _turns(conn: sqlite3.Connection, run_id: int, exp_id: int, seq: int, description: str, when: float) -> None:
    if seq == 1:
        return  # the baseline is not proposed by the agent
    response = {"content": [
        {"type": "text", "text": f"The last results suggest trying this next: {description}."},
        {"type": "tool_use", "id": f"t{seq}", "name": "submit", "input": {"description": description}},
    ]}
    turn = store.add_agent_turn(
        conn, run_id=run_id, experiment_id=exp_id, model="claude-sonnet-4-5", latency_s=4.2,
        usage={"input_tokens": 12_000 + seq, "output_tokens": 800, "cost_usd": 0.0481},
        request={"messages": []}, response=response, error=None)
    conn.execute("UPDATE agent_turns SET recorded_at = ? WHERE id = ?", (when - 2, turn))


def _notes(conn: sqlite3.Connection, run_id: int, ids: list[int]) -> None:
    """The notes the agent left with its proposals of #3 and #11 (the others left them unchanged)."""
    notes = {3: "- deeper helps: DEPTH 6 beat 4\n- LR 0.02 was worse than 0.01",
             11: "- kept: DEPTH 6, WIDTH 384\n- next: the LR schedule (cosine, warmup)\n- avoid: LR above 0.01"}
    for seq, text in notes.items():
        if seq <= len(ids):
            row = store.add_agent_notes(conn, run_id, ids[seq - 1], text)
            conn.execute("UPDATE agent_notes SET recorded_at = ? WHERE id = ?", (T0 + 300.0 * (seq - 1), row))


def _findings(conn: sqlite3.Connection, exp_id: int, status: str) -> None:
    findings = {
        "blocked": [Finding("static.reads_validation", "critical", "block", "train.py opens the validation shard",
                            {"line": 12, "path": "/data/val.bin"})],
        "violation": [Finding("dynamic.protected_file_changed", "critical", "discard",
                              "prepare.py changed during training", {"file": "prepare.py", "before": "ab12",
                                                                     "after": "cd34"})],
        "crash": [Finding("dynamic.exit_code", "low", "flag", "train.py exited with 1", {"exit_code": 1})],
    }.get(status, [])
    store.add_findings(conn, exp_id, findings)


# --- a run on several slots ------------------------------------------------------------------------------

# (status, val_bpb, test_bpb, description, change, role, judge) of a run on two slots: the baseline, two
# seeds of it measuring the noise, candidates, a close keep's confirming seed, a near miss, and one
# experiment running on each slot.
FLEET_PLAN: tuple = (
    ("keep", 0.997900, 0.998112, "baseline", None, None, None),
    ("ok", 0.999120, None, "baseline", None, "noise", None),
    ("ok", 0.996840, None, "baseline", None, "noise", None),
    ("discard", 1.001234, None, "raise LR to 0.02", ("LR = 0.010", "LR = 0.020"), None, None),
    ("keep", 0.988500, 0.989020, "deeper model: DEPTH 4 -> 6", ("DEPTH = 4", "DEPTH = 6"), None,
     {"best_bpb": 0.9979, "threshold": 0.0031, "noise_std": 0.0012, "confirmed_by": 6}),
    ("ok", 0.988900, None, "deeper model: DEPTH 4 -> 6", None, "confirm", None),
    ("discard", 0.987100, None, "shorter warmup", ("WARMUP = 100", "WARMUP = 20"), None,
     {"best_bpb": 0.9885, "threshold": 0.0031, "stale_parent": True, "near_miss": True}),
    ("crash", None, None, "WIDTH 512 with a typo", ("WIDTH = 256", "WIDTH = 512x"), None, None),
    ("running", None, None, "label smoothing 0.1", ("WARMUP = 100", "WARMUP = 120"), None, None),
    ("running", None, None, "cosine schedule to zero", ("return LR * DEPTH", "return LR * DEPTH * 0.5"), None,
     None),
)
CPU_SLOTS = ({"name": "cpu0", "node": "local", "gpu_uuid": None, "cpuset": "0", "device": "cpu"},
             {"name": "cpu1", "node": "local", "gpu_uuid": None, "cpuset": "1", "device": "cpu"})
H100 = "NVIDIA H100 80GB HBM3"
HOSTILE_NODE = "\x1b[2J\x1b]0;pwned\x07[@click=app.quit]node[/] \u202eevil"  # a node names itself
RAY_SLOTS = tuple({"name": f"{node}/gpu{i}", "node": node, "gpu_uuid": f"GPU-{node}-{i}", "cpuset": None,
                   "device": H100} for node, i in (("node-a", 0), ("node-a", 1), ("node-b", 0)))


def seed_fleet(root: Path, *, ray: bool = False, node_name: str = "node-b") -> Seeded:
    """A workspace whose run "main" ran FLEET_PLAN on two local CPU slots, or (ray) on three GPU slots of two Ray
    nodes, node-a ready and node_name lost: its experiment was interrupted and runs again on node-a, so its
    slot is idle. Each running experiment has its own loss points and samples."""
    plan = tuple(row[:5] for row in FLEET_PLAN)
    if ray:  # the experiment node_name lost, closed as interrupted, before the two that run now
        plan = (*plan[:-2], ("killed", None, None, "label smoothing 0.1", ("WARMUP = 100", "WARMUP = 120")),
                *plan[-2:])
    seeded = seed_workspace(root, gpu=ray, plan=plan, sandbox="docker")
    slots = [dict(s) for s in (RAY_SLOTS if ray else CPU_SLOTS)]
    if ray:
        slots[2] = {**slots[2], "name": f"{node_name}/gpu0", "node": node_name}
    conn = store.open_store(seeded.ws.store_path)
    try:
        store.update_run(conn, seeded.run_id, executor="ray" if ray else "local", device=H100 if ray else "cpu",
                         slots_json=slots)
        roles = [row[5:] for row in FLEET_PLAN]
        if ray:
            roles = [*roles[:-2], (None, None), *roles[-2:]]
        running = [i for i, (status, *_rest) in enumerate(plan) if status == "running"]
        for index, (exp_id, (role, judge)) in enumerate(zip(seeded.experiment_ids, roles, strict=True)):
            slot = slots[index % 2] if index not in running else slots[running.index(index)]
            if ray and plan[index][0] == "killed":
                slot = slots[2]
                store.update_experiment(conn, exp_id, exit_reason=f"interrupted: node {node_name} stopped answering")
            store.update_experiment(conn, exp_id, slot=slot["name"], node=slot["node"], role=role, judge_json=judge,
                                    seed=index + 1 if role else None)
        first, second = (seeded.experiment_ids[i] for i in running)
        conn.execute("DELETE FROM gpu_samples")
        conn.execute("DELETE FROM metric_points WHERE experiment_id = ?", (second,))
        store.add_metric_points(conn, second, loss_points(10, 12.0))
        for exp_id, offset, device in ((first, 0.0, "gpu0"), (second, 100.0, "gpu1" if ray else "cpu")):
            samples = [replace(s, device=device if ray else "cpu", util_percent=s.util_percent * (0.5 if offset
                                                                                                   else 1.0))
                       for s in gpu_history(NOW - 0.5, ray, seconds=120)]
            store.add_gpu_samples(conn, exp_id, samples)
        if ray:
            store.set_node(conn, seeded.run_id, "node-a", state="ready", gpus=2, address="10.0.0.11", device=H100,
                           util_percent=87.0)
            store.set_node(conn, seeded.run_id, node_name, state="lost", gpus=1, address="10.0.0.12", device=H100,
                           util_percent=None, note="no heartbeat for 63 s")
            conn.execute("UPDATE nodes SET seen_at = ? WHERE name = ?", (NOW - 0.5, "node-a"))
            conn.execute("UPDATE nodes SET seen_at = ? WHERE name = ?", (NOW - 75.0, node_name))
    finally:
        conn.close()
    return seeded

"""`autoresearch bench --report N`: the seconds the report and progress.png take for a run of N experiments.

It records a made-up night in a throw-away workspace through the store's own functions and git: 8 GPU slots,
a realistic mix of statuses (mostly discards, crashes, timeouts, an oom now and then, violations and blocked
proposals with their findings, keeps ever rarer), each keep committed with a one-line change of a 300-line
train.py, an agent turn per proposal, timings, a few GPU samples per experiment and the run's noise. Then it
times the HTML report, the Markdown report (with its progress.png) and progress.png alone, each on a fresh
read-only connection, as the commands do.
"""

import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import pygit2

from autoresearch.runner.check.findings import Finding
from autoresearch.runner.errors import UserError
from autoresearch.runner.record import gitrepo, store
from autoresearch.runner.record.recorder import ExperimentRecorder
from autoresearch.runner.record.status import RunState, Status
from autoresearch.runner.report.progress_png import write_progress_png
from autoresearch.runner.report.write import write_report
from autoresearch.runner.sandbox.monitor import Sample

SLOTS = 8
EXPERIMENT_S = 340.0  # one experiment on a slot: a 300 s budget and what surrounds it
TRAIN_PY_LINES = 300
MIX = ((Status.DISCARD, 0.74), (Status.CRASH, 0.10), (Status.TIMEOUT, 0.04), (Status.OOM, 0.01),
       (Status.VIOLATION, 0.03), (Status.BLOCKED, 0.08))  # what a proposal that is not kept becomes
REASONS = {Status.CRASH: ("train.py exited with 1", "train.py exited with 137", "scoring gave no verdict"),
           Status.TIMEOUT: ("training ran past the hard deadline",), Status.OOM: ("out of GPU memory",)}
H100 = "NVIDIA H100 80GB HBM3"


def run_report_bench(experiments: int = 10_000, as_json: bool = False) -> dict:
    """Record a run of experiments in a temporary workspace, then time the report and the chart on it."""
    if experiments < 1:
        raise UserError("--report must be at least 1")
    with tempfile.TemporaryDirectory(prefix="autoresearch-report-bench-") as tmp:
        root = Path(tmp)
        began = time.monotonic()
        run, kept = seed_run(root, experiments)
        result = {"experiments": experiments, "kept": kept, "setup_s": time.monotonic() - began}
        repo = gitrepo.open_repo(root)
        for name, write in (("html", lambda conn: write_report(conn, repo, run, root / "report.html", "html")),
                            ("md", lambda conn: write_report(conn, repo, run, root / "report.md", "md")),
                            ("png", lambda conn: [write_progress_png(conn, run, root / "alone.png")])):
            conn = store.open_store(root / "store.db", readonly=True)
            try:
                started = time.monotonic()
                written = write(conn)
                result[f"{name}_s"] = time.monotonic() - started
            finally:
                conn.close()
            result[f"{name}_bytes"] = {p.name: p.stat().st_size for p in written}
    print(json.dumps(result) if as_json else render(result))
    return result


def render(result: dict) -> str:
    def sizes(files: dict[str, int]) -> str:
        return " + ".join(f"{name} {size / 1024:,.0f} KiB" for name, size in files.items())

    return "\n".join([
        f"report bench, {result['experiments']:,} experiments ({result['kept']} kept), recorded in "
        f"{result['setup_s']:.1f} s:",
        f"  HTML report       {result['html_s']:6.2f} s   {sizes(result['html_bytes'])}",
        f"  Markdown report   {result['md_s']:6.2f} s   {sizes(result['md_bytes'])}",
        f"  progress.png      {result['png_s']:6.2f} s   {sizes(result['png_bytes'])}",
    ])


def seed_run(root: Path, experiments: int) -> tuple[store.Run, int]:
    """A git repository and a store at root holding one finished run of experiments; (the run, its keeps)."""
    rng = random.Random(0)
    repo = pygit2.init_repository(str(root))
    lines = [f"PARAM_{i} = {rng.uniform(0, 1):.6f}" for i in range(TRAIN_PY_LINES)]
    author = gitrepo.signature()
    tree = repo.TreeBuilder()
    tree.insert("train.py", repo.create_blob("\n".join(lines).encode() + b"\n"), pygit2.enums.FileMode.BLOB)
    best_sha = str(repo.create_commit("HEAD", author, author, "init", tree.write(), []))
    conn = store.open_store(root / "store.db")
    try:
        t0 = time.time() - experiments / SLOTS * EXPERIMENT_S
        run_id = store.create_run(conn, tag="bench", agent="claude", sandbox="docker")
        slots = [{"name": f"gpu{i}", "node": "local", "gpu_uuid": f"GPU-{i}", "cpuset": None, "device": H100}
                 for i in range(SLOTS)]
        best, kept, recorder = 1.0, 0, ExperimentRecorder(conn)
        for seq in range(1, experiments + 1):
            started = t0 + (seq - 1) // SLOTS * EXPERIMENT_S
            keep = seq == 1 or rng.random() < 0.3 / (1 + seq / 100)
            status = Status.KEEP if keep else rng.choices([s for s, _ in MIX], [w for _, w in MIX])[0]
            val = _score(rng, status, best, seq)
            sha = None
            if keep:
                lines[rng.randrange(TRAIN_PY_LINES)] = f"PARAM_{seq % TRAIN_PY_LINES} = {rng.uniform(0, 1):.6f}"
                sha = gitrepo.commit_candidate(repo, best_sha, "\n".join(lines).encode() + b"\n", f"experiment {seq}")
            exp_id = _experiment(recorder, rng, run_id, seq, status, val, sha, best_sha, started, slots)
            _extras(conn, rng, run_id, exp_id, seq, status, started)
            if keep:
                best, best_sha, kept = val, sha, kept + 1  # type: ignore[assignment]
        store.add_noise(conn, None, [1.0, 1.0012, 0.9991], 1.0001, 0.0011, run_id=run_id)
        store.update_run(conn, run_id, started_at=t0, ended_at=t0 + experiments / SLOTS * EXPERIMENT_S,
                         state=RunState.FINISHED, note="max experiments reached", executor="local", device=H100,
                         slots_json=slots)
        return store.get_run(conn, run_id), kept  # type: ignore[return-value]
    finally:
        conn.close()


def _score(rng: random.Random, status: str, best: float, seq: int) -> float | None:
    if status == Status.KEEP:
        return best if seq == 1 else best - rng.uniform(0.0002, 0.004) / (1 + seq / 2000)
    if status == Status.DISCARD:
        return 1.6 if rng.random() < 0.01 else best + abs(rng.gauss(0.0, 0.004))  # now and then, a diverged run
    return None


def _experiment(recorder: ExperimentRecorder, rng: random.Random, run_id: int, seq: int, status: str,
                val: float | None, sha: str | None, parent: str, started: float, slots: list[dict]) -> int:
    """One made-up experiment, written as the loop writes one: started, then ended and judged (the recorder owns
    every experiment row)."""
    ran = status != Status.BLOCKED
    training = 300.0 if status in (Status.KEEP, Status.DISCARD, Status.VIOLATION) else rng.uniform(5, 300)
    timings = {"propose": rng.uniform(8, 40), "commit": 0.05, "train_container_start": 1.2,
               "first_output": rng.uniform(6, 12), "training": training, "export": 2.5,
               "train_phase": training + 14.0, "score_container_start": 1.0, "scoring": 11.0,
               **({"test_scoring": 10.0} if status == Status.KEEP else {})}
    exp_id = recorder.started(
        [], run_id=run_id, seq=seq, description=f"experiment {seq}: try PARAM_{seq % TRAIN_PY_LINES} at a new value",
        started_at=started, commit_sha=sha, parent_sha=parent, slot=slots[(seq - 1) % SLOTS]["name"], node="local")
    recorder.judged(
        exp_id, status, ended_at=started + (EXPERIMENT_S - 10 if ran else 30), val_bpb=val,
        test_bpb=None if val is None or status != Status.KEEP else val + 0.002,
        training_seconds=training if ran else None, total_seconds=EXPERIMENT_S - 10 if ran else None,
        exit_reason=rng.choice(REASONS[status]) if status in REASONS else None, timings_json=timings if ran else None)
    return exp_id


def _extras(conn: sqlite3.Connection, rng: random.Random, run_id: int, exp_id: int, seq: int, status: str,
            started: float) -> None:
    """The experiment's agent turn, findings and GPU samples."""
    if seq > 1:
        response = {"content": [{"type": "text", "text": f"Trying PARAM_{seq % TRAIN_PY_LINES} next: the last "
                                                         "results point that way."}]}
        store.add_agent_turn(conn, run_id=run_id, experiment_id=exp_id, model="claude-sonnet-4-5", latency_s=4.0,
                             usage={"input_tokens": 20_000, "output_tokens": 900, "cost_usd": 0.07},
                             request={"messages": []}, response=response, error=None)
    if status == Status.VIOLATION:
        store.add_findings(conn, exp_id, [Finding("dynamic.protected_file_changed", "critical", "discard",
                                                  "prepare.py changed during training", {"file": "prepare.py"})])
    elif status == Status.BLOCKED:
        store.add_findings(conn, exp_id, [Finding("static.reads_validation", "critical", "block",
                                                  "train.py opens the validation shard", {"line": seq % 300})])
    if status != Status.BLOCKED:
        gpu = f"gpu{(seq - 1) % SLOTS}"
        store.add_gpu_samples(conn, exp_id, [Sample(started + 60.0 * i, gpu, "nvml", rng.uniform(70, 99), 60_000.0,
                                                    81_559.0, 30_000.0) for i in range(5)])

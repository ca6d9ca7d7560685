"""`autoresearch bench --gpu` (`make gpu-check`): the GPU profile on this machine's GPU, cold then warm.

Two experiments of the bundled train.py's h100 profile for the full budget (the policy's, 300 s unless
--budget), exactly as a run's experiments go: in the sandbox the settings name (docker; --sandbox
process where Docker is absent), trained, handed over and scored by the trusted scorer. The first
compiles cold and seeds a compile seed (runner/phases/compile_seed.py), the second starts from it.
It prints a table and writes JSON: the trusted val_bpb, MFU, tokens/s, peak VRAM as torch and as NVML
saw it, GPU-busy seconds, compile seconds, and every phase's seconds (the task bench's phases) with the
overhead. Without a GPU it stops before anything slow, saying what NVML said.
"""

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from autoresearch.runner.bench.task_bench import PHASES
from autoresearch.runner.check.policy import Limits
from autoresearch.runner.doctor import nvml_gpus
from autoresearch.runner.errors import UserError
from autoresearch.runner.phases.compile_seed import CompileCache
from autoresearch.runner.phases.data import prepare_data
from autoresearch.runner.phases.experiment import ExperimentOutcome, run_experiment
from autoresearch.runner.phases.sources import resolve_source, source_lines
from autoresearch.runner.sandbox.base import Sandbox
from autoresearch.runner.sandbox.files import remove_tree
from autoresearch.runner.sandbox.gpus import assigned_gpu
from autoresearch.runner.sandbox.registry import open_sandbox
from autoresearch.runner.settings import Flags, resolve_settings
from autoresearch.runner.task_files import default_task_dir
from autoresearch.runner.workspace import cache_dir, find_workspace

PROFILE = "h100"  # train.py's GPU profile
RUNS = ("cold", "warm")
ANCHOR = {"val_bpb": 0.9979, "mfu_percent": 39.8, "budget_s": 300, "gpu": "one H100", "source": "web"}
ROWS = {  # the table's rows above the phases: a run's figure, its label and its decimals
    "val_bpb": ("val_bpb (trusted, the scorer's)", 4),
    "mfu_percent": ("MFU %", 1),
    "tokens_per_s": ("tokens/s (median step)", 0),
    "peak_vram_mb": ("peak VRAM MB, as torch saw it", 0),
    "nvml_peak_vram_mb": ("peak VRAM MB, as NVML saw it", 0),
    "gpu_busy_s": ("GPU-busy seconds (NVML)", 1),
    "compile_s": ("compile seconds (first step)", 1),
}


def require_gpu() -> list[dict]:
    """The GPUs NVML sees; UserError saying what NVML said when it sees none."""
    gpus = nvml_gpus()
    if isinstance(gpus, str):
        raise UserError(f"bench --gpu needs an NVIDIA GPU, and NVML sees none ({gpus}): install the NVIDIA driver, "
                        "or run `autoresearch bench` for the CPU profile")
    return gpus


def run_gpu_bench(output: Path, budget_s: float | None = None, sandbox: str | None = None,
                  as_json: bool = False) -> dict:
    """Measure the GPU profile cold and warm, print the table (or the JSON) and write the JSON to output."""
    gpus = require_gpu()
    require_writable(output)
    settings = resolve_settings(find_workspace(Path(tempfile.gettempdir())),
                                Flags(time_budget_s=budget_s, flavor="cuda", sandbox=sandbox))
    gpu_uuid = assigned_gpu(settings.gpus, "cuda")
    box = open_sandbox(settings.sandbox, settings.sandbox_insisted)
    try:
        image = box.image("cuda")
        source, why = resolve_source(settings.source)
        for line in source_lines(source, why, "cuda"):
            _say(line)
        data = prepare_data(box, image, default_task_dir(), source)
        work_dir = cache_dir() / "gpu-bench" / time.strftime("%Y%m%d-%H%M%S")
        outcomes = measure(box, image, data, settings.limits, gpu_uuid, work_dir, say=_say)
        report = gpu_report(outcomes, gpu=gpus[0], sandbox=box.name, image=image, source=source, source_why=why,
                            budget_s=settings.time_budget_s)
    finally:
        box.close()
    output.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report) if as_json else f"{render(report)}\nJSON: {output}")
    return report


def measure(sandbox: Sandbox, image: str, data: Path, limits: Limits, gpu_uuid: str, work_dir: Path,
            say: Callable[[str], None]) -> list[ExperimentOutcome]:
    """The bundled train.py's GPU profile twice: cold (seeding a compile seed), then warm from that seed."""
    task_dir, folder = default_task_dir(), work_dir / "compile-seed"
    cache: CompileCache | None = CompileCache(folder)
    outcomes = []
    for number, name in enumerate(RUNS, 1):
        say(f"run {number}/{len(RUNS)} ({name} compile cache): {limits.time_budget_s:g} s of training ...")
        outcome = run_experiment(sandbox, image=image, task_dir=task_dir, train_py=task_dir / "train.py", data=data,
                                 work_dir=work_dir / name, limits=limits, gpu_uuid=gpu_uuid,
                                 compile_cache=cache, profile=PROFILE)
        if outcome.status != "ok":
            raise UserError(f"bench run {number} ({name}) ended with {outcome.status}: {outcome.reason} "
                            f"(log: {outcome.train_log})")
        say(f"run {number}/{len(RUNS)}: val_bpb {outcome.val_bpb:.4f}, compile cache {outcome.compile_cache}")
        outcomes.append(outcome)
        cache = CompileCache(folder, outcome.compile_seed) if outcome.compile_seed else None  # None: stays cold
    remove_tree(folder)  # the bench's own seed; the logs stay
    return outcomes


def gpu_report(outcomes: list[ExperimentOutcome], *, gpu: dict, sandbox: str, image: str, source: str,
               source_why: str, budget_s: float) -> dict:
    """The bench's JSON: what it ran on, and each run's figures."""
    return {"gpu": gpu, "sandbox": sandbox, "image": image, "source": source, "source_why": source_why,
            "budget_s": budget_s, "profile": PROFILE, "anchor": ANCHOR,
            "runs": {name: run_figures(outcome) for name, outcome in zip(RUNS, outcomes, strict=True)}}


def run_figures(outcome: ExperimentOutcome) -> dict:
    """One run's figures: the trusted score, train.py's own summary, the host's NVML readings, the phases."""
    reported, usage, timings = outcome.reported, outcome.usage, outcome.timings
    nvml = usage is not None and usage.kind == "nvml"
    steps = [point.tok_per_s for point in outcome.progress[1:]]  # the first step compiles
    return {
        "val_bpb": outcome.val_bpb,
        "mfu_percent": reported.get("mfu_percent"),
        "tokens_per_s": statistics.median(steps) if steps else None,
        "peak_vram_mb": reported.get("peak_vram_mb"),
        "nvml_peak_vram_mb": usage.peak_mem_mb if nvml else None,
        "gpu_busy_s": usage.busy_seconds if nvml else None,
        "compile_s": reported.get("compile_seconds"),
        "compile_cache": outcome.compile_cache,
        "phases_s": {key: getattr(timings, key) for key in PHASES},
        "overhead_s": timings.total - timings.training,
        "monitor": usage.note if usage else "",
        "train_log": str(outcome.train_log),
    }


def render(report: dict) -> str:
    """The table: one row per figure and phase, one column per run, the anchor beside what it has."""
    gpu, runs = report["gpu"], report["runs"]
    lines = [f"GPU profile ({report['profile']}) on {gpu['name']} (driver {gpu['driver']}), {report['sandbox']} "
             f"sandbox, {report['source']} corpus, budget {report['budget_s']:g} s",
             f"  {'':<42}" + "".join(f"{name:>14}" for name in runs) + f"{'anchor':>14}"]
    for key, (label, digits) in ROWS.items():
        lines.append(_row(label, [run[key] for run in runs.values()], digits, report["anchor"].get(key)))
    lines.append("  seconds per phase:")
    lines += [_row(f"  {label}", [run["phases_s"][key] for run in runs.values()], 2) for key, label in PHASES.items()]
    lines.append(_row("  overhead (whole minus training)", [run["overhead_s"] for run in runs.values()], 2))
    lines += [f"  compile cache, {name}: {run['compile_cache']}" for name, run in runs.items()]
    anchor = report["anchor"]
    lines.append(f"  anchor: val_bpb {anchor['val_bpb']} at {anchor['mfu_percent']}% MFU, {anchor['budget_s']} s, "
                 f"{anchor['gpu']}, {anchor['source']} corpus")
    return "\n".join(lines)


def _row(label: str, values: list[float | None], digits: int, anchor: float | None = None) -> str:
    cells = "".join(_cell(value, digits) for value in values)
    return f"  {label:<42}{cells}{'' if anchor is None else _cell(anchor, digits)}"


def _cell(value: float | None, digits: int) -> str:
    return f"{'n/a':>14}" if value is None else f"{value:>14,.{digits}f}"


def require_writable(output: Path) -> None:
    """UserError now, not after the runs, when the JSON cannot be written to output."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write the bench's JSON to {output}: {exc.strerror or exc}") from None
    if output.is_dir() or not os.access(output if output.exists() else output.parent, os.W_OK):
        raise UserError(f"cannot write the bench's JSON to {output}: choose another path with -o")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)

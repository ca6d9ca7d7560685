"""Starting experiments from the TUI: always as a detached `autoresearch` process, never in the TUI.

The child runs in its own session (`start_new_session=True`: no controlling terminal, its own process
group), with stdin closed and its output in a log file under the workspace's `.autoresearch/launches/`,
so quitting the TUI, closing its terminal or dropping an SSH connection never stops the experiment.
The child is started as `sys.executable -m autoresearch.runner.cli`, so it is this installation's
runner whatever PATH says, and in the workspace's root, so it finds the same workspace.
"""

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autoresearch.runner.workspace import Workspace

CPU_BUDGET_S = 60.0  # the CPU profile learns something in a minute
GPU_BUDGET_S = 300.0  # the anchor's five minutes
LAUNCH_DIR = "launches"

CommandFactory = Callable[[Workspace, float], list[str]]


@dataclass
class Launch:
    """One experiment process this TUI started."""

    process: subprocess.Popen
    argv: list[str]
    log_path: Path
    started_at: float  # time.time(), comparable with the store's timestamps
    budget_s: float
    experiment_id: int | None = None  # the experiment it recorded, once the store shows it

    @property
    def pid(self) -> int:
        return self.process.pid


def baseline_command(ws: Workspace, budget_s: float) -> list[str]:
    """`autoresearch try <the workspace's train.py> --budget B`, with this Python."""
    train_py = ws.task_dir / "train.py"
    return [sys.executable, "-m", "autoresearch.runner.cli", "try", str(train_py), "--budget", f"{budget_s:g}"]


def has_gpu(timeout_s: float = 10.0) -> bool:
    """Whether `nvidia-smi -L` lists a GPU (the runner's own test for the CUDA image)."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listing.returncode == 0 and any(line.startswith("GPU ") for line in listing.stdout.splitlines())


def default_budget() -> float:
    """The baseline's training seconds on this machine: 300 with a GPU, 60 without."""
    return GPU_BUDGET_S if has_gpu() else CPU_BUDGET_S


def launch_detached(ws: Workspace, argv: list[str], budget_s: float) -> Launch:
    """Start argv in its own session in the workspace's root, its output in a new log file."""
    log_dir = ws.state_dir / LAUNCH_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    started_at = time.time()
    log_path = log_dir / f"try-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"  # appended to if reused
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv, cwd=ws.root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    return Launch(process, argv, log_path, started_at, budget_s)


def exit_summary(launch: Launch, returncode: int) -> str:
    """One line on how a launched process ended: for a failure, the line of its log that says why."""
    try:
        lines = [line.strip() for line in launch.log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    if returncode == 0:
        return lines[0] if lines else f"pid {launch.pid} finished"
    why = next((line for line in reversed(lines) if line.startswith("autoresearch:")), None)
    why = why or next((line for line in lines if line.startswith("experiment ")), None)
    why = why or (lines[-1] if lines else "no output")
    return f"pid {launch.pid} exited with {returncode}: {why} (log: {launch.log_path})"

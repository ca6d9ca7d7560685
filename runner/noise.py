"""`autoresearch noise N`: how much val_bpb moves between seeds of the same train.py.

Each repeat is a recorded experiment (outside any run) with its own seed. The spread is stored, and
the keep rule then asks a candidate to beat the best by `noise_multiplier` standard deviations.
"""

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from autoresearch.runner.check.policy import Policy
from autoresearch.runner.errors import UserError
from autoresearch.runner.lock import runner_lock
from autoresearch.runner.record import gitrepo, store
from autoresearch.runner.record.recorder import ExperimentRecorder, open_recorder
from autoresearch.runner.record.status import Status
from autoresearch.runner.record.untrusted import as_data
from autoresearch.runner.sandbox.gpus import assigned_gpu
from autoresearch.runner.settings import resolve_settings
from autoresearch.runner.trial import (
    Candidate,
    Prerequisites,
    TrialResult,
    check_candidate,
    execute_candidate,
    prerequisites,
)
from autoresearch.runner.workspace import Workspace, require_workspace


@dataclass(frozen=True)
class NoiseResult:
    commit: str
    values: list[float]
    mean: float
    std: float


def measure_noise(ws: Workspace, runs: int, tag: str | None = None, say: Callable[[str], None] = print) -> NoiseResult:
    """Run the tag's best train.py (default: HEAD's) runs times with seeds 1..runs and store the spread."""
    require_workspace(ws)
    if runs < 2:
        raise UserError(f"noise needs at least 2 runs to measure a spread, got {runs}")
    settings = resolve_settings(ws)
    policy = settings.policy
    repo = gitrepo.open_repo(ws.root)
    commit = gitrepo.branch_tip(repo, tag) if tag else str(repo.head.target)
    if commit is None:
        raise UserError(f"there is no run tagged {tag!r}: its branch autoresearch/{tag} does not exist")
    code = gitrepo.read_file(repo, commit)
    with runner_lock(ws.state_dir):
        pre = prerequisites(ws, settings, assigned_gpu(settings.gpus, settings.flavor))
        recorder = open_recorder(ws.store_path)
        try:
            values = _repeat(ws, recorder, code, commit, runs, policy, pre, say)
            noise = NoiseResult(commit, values, statistics.fmean(values), statistics.stdev(values))
            store.add_noise(recorder.conn, commit, values, noise.mean, noise.std)
        finally:
            recorder.close()
            pre.sandbox.close()
    return noise


def _repeat(ws: Workspace, recorder: ExperimentRecorder, code: bytes, commit: str, runs: int, policy: Policy,
            pre: Prerequisites, say: Callable[[str], None]) -> list[float]:
    """val_bpb of code with seeds 1..runs, each a recorded experiment."""
    values = []
    for seed in range(1, runs + 1):
        candidate = Candidate(code, f"noise: {commit[:8]} seed {seed}", commit_sha=commit, seed=seed)
        checked = check_candidate(recorder, candidate, policy)
        if isinstance(checked, TrialResult):
            raise UserError(f"the policy blocks {commit[:8]}'s train.py: {checked.findings[0]['message']}")
        result = execute_candidate(ws, recorder, candidate, policy, pre, checked)
        if result.status != Status.OK:
            raise UserError(f"seed {seed} did not score ({result.status}: {as_data(result.exit_reason)})")
        say(f"seed {seed}: val_bpb {result.val_bpb:.6f}")
        values.append(result.val_bpb)
    return values

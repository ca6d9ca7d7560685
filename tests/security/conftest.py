"""Fixtures for the hostile train.py cases: a scratch workspace with prepared data, and two policies.

`default` is the bundled policy with short limits. `permissive` is the same with every static rule
off, so a hostile candidate actually runs and the container itself must hold: the sandbox is the
boundary, the static rules only catch intent early.
"""

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoresearch.runner.check.integrity import hash_files, protected_files
from autoresearch.runner.check.policy import Policy, load_policy
from autoresearch.runner.phases.data import prepare_data
from autoresearch.runner.record import store
from autoresearch.runner.sandbox.base import LABEL
from autoresearch.runner.trial import TrialResult, try_candidate
from autoresearch.runner.workspace import find_workspace
from tests.conftest import cpu_settings

LIMITS = """
[limits]
time_budget_s = 4
deadline_allowance_cpu_s = 25
memory = "768m"
pids_limit = 64
tmpfs_size = "16m"
handover_max_mb = 64
log_max_bytes = 1_048_576
gpu_memory_cap_mb = 0
"""


@pytest.fixture(scope="session")
def workspace(docker_sandbox, cpu_image, tmp_path_factory) -> Iterator:
    """The scratch workspace in a fresh cache, with the offline data prepared in a container."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("AUTORESEARCH_CACHE")
    os.environ["AUTORESEARCH_CACHE"] = str(cache)
    ws = find_workspace(cache)
    prepare_data(docker_sandbox, cpu_image, ws.task_dir, "offline")
    yield ws
    if old is None:
        del os.environ["AUTORESEARCH_CACHE"]
    else:
        os.environ["AUTORESEARCH_CACHE"] = old


def write_policy(path: Path, body: str) -> Policy:
    path.write_text('extends = "default"\n' + body)
    return load_policy(path)


@pytest.fixture(scope="session")
def policies(tmp_path_factory) -> dict[str, Policy]:
    folder = tmp_path_factory.mktemp("policies")
    static_rules = [rule for rule in load_policy().rules if rule.startswith("static.")]
    off = "".join(f'\n[rules."{rule}"]\nenabled = false\n' for rule in static_rules)
    return {
        "default": write_policy(folder / "default.toml", LIMITS),
        "permissive": write_policy(folder / "permissive.toml", LIMITS + off),
    }


@pytest.fixture
def attempt(workspace, policies, docker_client, docker_sandbox, cpu_image, tmp_path):
    """Run a hostile candidate under a policy; afterwards check that the task, data and host survived
    (no container and no hand-over volume left behind)."""
    data = prepare_data(docker_sandbox, cpu_image, workspace.task_dir, "offline")
    protected = protected_files(workspace.task_dir, data)
    before = hash_files(protected)
    existing = {c.id for c in docker_client.containers.list(all=True, filters={"label": LABEL})}
    volumes = {v.name for v in docker_client.volumes.list(filters={"label": LABEL})}

    def run(source: str | bytes, policy: str = "permissive", **overrides) -> TrialResult:
        candidate = tmp_path / "train.py"
        candidate.write_bytes(source if isinstance(source, bytes) else source.encode())
        chosen = policies[policy]
        if overrides:
            chosen = dataclasses.replace(chosen, limits=dataclasses.replace(chosen.limits, **overrides))
        return try_candidate(workspace, candidate, cpu_settings(chosen))

    yield run
    assert hash_files(protected) == before, "prepare.py or the data changed"
    # Containers that were there before (from an earlier, killed run on this machine) are not this test's.
    leftovers = [c for c in docker_client.containers.list(all=True, filters={"label": LABEL}) if c.id not in existing]
    assert not leftovers, f"containers left behind: {[c.name for c in leftovers]}"
    stray = [v.name for v in docker_client.volumes.list(filters={"label": LABEL}) if v.name not in volumes]
    assert not stray, f"hand-over volumes left behind: {stray}"


def log_of(result: TrialResult) -> str:
    return Path(result.log_path).read_text(errors="replace") if result.log_path else ""


def rules_of(result: TrialResult) -> dict[str, str]:
    """rule_id -> action of the result's findings."""
    return {f["rule_id"]: f["action"] for f in result.findings}


def stored(workspace, result: TrialResult) -> store.Experiment:
    conn = store.open_store(workspace.store_path, readonly=True)
    try:
        return store.get_experiment(conn, result.experiment_id)
    finally:
        conn.close()

"""The default task, trained and scored for real in containers of the CPU image."""

import json
import math
from pathlib import Path

import pytest

from autoresearch.runner.phases.data import prepare_data
from autoresearch.runner.phases.experiment import ExperimentOutcome, run_experiment
from autoresearch.runner.task_files import default_task_dir
from tests.conftest import cpu_settings

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Runs inside the training container before the real train.py: what can this code reach?
PROBE = '''
import socket, pathlib, os
def _attempt(action):
    try:
        action()
        return "allowed"
    except Exception as exc:
        return type(exc).__name__
def _connect():
    socket.create_connection(("1.1.1.1", 53), timeout=3)
print("probe network=" + _attempt(_connect))
print("probe dns=" + _attempt(lambda: socket.getaddrinfo("huggingface.co", 443)))
print("probe prepare_write=" + _attempt(lambda: open("/task/prepare.py", "a").write("# changed")))
print("probe data_write=" + _attempt(lambda: open("/data/manifest.json", "a").write(" ")))
print("probe root_write=" + _attempt(lambda: open("/etc/evil", "w").write("x")))
print("probe val_visible=" + str(any("val" in p.name or "test" in p.name for p in pathlib.Path("/data").iterdir())))
print("probe uid=" + str(os.getuid()))
'''


@pytest.fixture(scope="module")
def task_data(docker_sandbox, cpu_image, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("AUTORESEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    return prepare_data(docker_sandbox, cpu_image, default_task_dir(), "offline")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_data_is_prepared_in_a_container(task_data):
    manifest = json.loads((task_data / "manifest.json").read_text())
    assert {"train", "val", "test"} == set(manifest["splits"])
    assert (task_data / "train_000.bin").stat().st_size > 1_000_000


def train_in_container(sandbox, image: str, data: Path, tmp_path: Path, source: str,
                       budget_s: float) -> tuple[ExperimentOutcome, list[str]]:
    """source as train.py, trained for budget_s seconds and scored in containers; the outcome and what it printed."""
    candidate = tmp_path / "train.py"
    candidate.write_text(source)
    lines = []
    outcome = run_experiment(sandbox, image=image, task_dir=default_task_dir(), train_py=candidate, data=data,
                             work_dir=tmp_path / "exp", limits=cpu_settings(budget_s=budget_s).limits,
                             on_line=lines.append)
    return outcome, lines


def test_cpu_profile_trains_and_scores_below_uniform_in_containers(docker_sandbox, cpu_image, task_data, tmp_path):
    task_dir = default_task_dir()
    outcome, lines = train_in_container(docker_sandbox, cpu_image, task_data, tmp_path,
                                        PROBE + (task_dir / "train.py").read_text(), budget_s=15)
    assert outcome.status == "ok", (outcome.reason, "\n".join(lines[-20:]))
    probes = dict(line.removeprefix("probe ").split("=", 1) for line in lines if line.startswith("probe "))
    assert probes["network"] != "allowed" and probes["dns"] != "allowed"
    assert probes["prepare_write"] in ("OSError", "PermissionError")
    assert probes["data_write"] in ("OSError", "PermissionError")
    assert probes["root_write"] in ("OSError", "PermissionError")
    assert probes["val_visible"] == "False"
    assert probes["uid"] == "1000"

    manifest = json.loads((task_data / "manifest.json").read_text())
    uniform_bpb_upper = math.log2(manifest["source"]["vocab_size"]) / 2.5  # at least 2.5 bytes per token
    assert outcome.val_bpb < 0.85 * uniform_bpb_upper
    assert outcome.score["causality_leak"] < 1e-3  # numerical noise only, well under the tolerance
    assert outcome.reported["num_steps"] == outcome.progress[-1].step
    assert outcome.timings.training >= 15
    assert (task_dir / "prepare.py").read_text().endswith("sys.exit(main())\n")  # the host copy is intact


def test_the_compiled_gpu_code_path_runs_in_a_training_container(docker_sandbox, cpu_image, task_data, tmp_path):
    """torch.compile loads the code it generates from /tmp: a noexec /tmp crashed every h100-profile experiment."""
    smoke = "import os\nos.environ['AUTORESEARCH_PROFILE'] = 'smoke'\n"
    outcome, lines = train_in_container(docker_sandbox, cpu_image, task_data, tmp_path,
                                        smoke + (default_task_dir() / "train.py").read_text(), budget_s=3)
    assert outcome.status == "ok", (outcome.reason, "\n".join(lines[-20:]))
    assert any(line.startswith("profile smoke | device cpu") for line in lines)
    assert outcome.reported["compile_seconds"] > 0


@pytest.mark.parametrize(
    ("source", "reason"),
    [("import prepare\nraise RuntimeError('boom at step 0')\n", "RuntimeError: boom at step 0"),
     ("print('trained nothing')\n", "no exported model")],
    ids=["traceback", "no-export"],
)
def test_a_failed_training_is_a_crash_with_a_clear_reason(docker_sandbox, cpu_image, task_data, tmp_path, source,
                                                          reason):
    outcome, _ = train_in_container(docker_sandbox, cpu_image, task_data, tmp_path, source, budget_s=5)
    assert outcome.status == "crash"
    assert reason in outcome.reason
    assert outcome.val_bpb is None

"""The CUDA flavor built and exercised on a machine with no GPU: the CPU profile end to end in the CUDA image.

Building the CUDA image downloads about 2.8 GB of wheels and makes a 5.6 GB image, so this test only runs where
that image exists (`make test-cuda-image` builds it, then runs this file); elsewhere it skips and says so.
"""

import json
import math

import docker
import pytest

from autoresearch.runner.phases.data import prepare_data
from autoresearch.runner.phases.experiment import run_experiment
from autoresearch.runner.sandbox.flavors import TORCH_VERSION, image_tag
from autoresearch.runner.task_files import default_task_dir
from tests.conftest import cpu_settings

pytestmark = [pytest.mark.slow, pytest.mark.cuda_image]

BUDGET_S = 15


@pytest.fixture(scope="module")
def cuda_image(docker_client: docker.DockerClient) -> str:
    tag = image_tag("cuda")
    try:
        docker_client.images.get(tag)
    except docker.errors.ImageNotFound:
        pytest.skip(reason=f"{tag} is not built (a 2.8 GB download, a 5.6 GB image): `make test-cuda-image` builds it "
                    "and runs this test")
    return tag


def test_the_cuda_image_has_the_pinned_cuda_torch(docker_client, cuda_image):
    out = docker_client.containers.run(cuda_image, ["python3", "-c", "import torch, triton; print(torch.__version__, "
                                                    "torch.version.cuda is not None, torch.cuda.is_available())"],
                                       remove=True, network_mode="none", user="1000:1000")
    version, cuda_build, gpu_here = out.decode().split()
    assert version.startswith(f"{TORCH_VERSION}+cu") and cuda_build == "True" and gpu_here == "False"


def test_the_cpu_profile_runs_end_to_end_in_the_cuda_image_as_in_the_cpu_image(docker_sandbox, cpu_image, cuda_image,
                                                                               tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    task_dir = default_task_dir()
    data = prepare_data(docker_sandbox, cpu_image, task_dir, "offline")
    scores = {}
    for tag in (cpu_image, cuda_image):
        lines = []
        outcome = run_experiment(docker_sandbox, image=tag, task_dir=task_dir, train_py=task_dir / "train.py",
                                 data=data, work_dir=tmp_path / tag.replace(":", "-"),
                                 limits=cpu_settings(budget_s=BUDGET_S).limits, on_line=lines.append)
        assert outcome.status == "ok", (tag, outcome.reason, "\n".join(lines[-20:]))
        assert any(line.startswith("profile cpu | device cpu") for line in lines)
        scores[tag] = outcome.val_bpb
    with capsys.disabled():
        print(f"\nCPU profile, {BUDGET_S} s, seed 42: val_bpb " +
              ", ".join(f"{tag} {bpb:.4f}" for tag, bpb in scores.items()))
    # Same code, seed and budget; the step count follows the wall clock, so the two differ by the machine's noise.
    # Both must have learned: well under the uniform model's bits per byte.
    manifest = json.loads((data / "manifest.json").read_text())
    uniform_bpb_upper = math.log2(manifest["source"]["vocab_size"]) / 2.5  # at least 2.5 bytes per token
    assert all(bpb < 0.85 * uniform_bpb_upper for bpb in scores.values()), scores

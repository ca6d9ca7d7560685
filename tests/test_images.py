"""The experiment images: what the CPU image holds and how it runs hardened, and the builder's contract."""

import stat
import time
from pathlib import Path

import docker
import pytest

from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox import flavors, images

IMPORTS = "import torch, tiktoken, rustbpe, numpy, pyarrow; print(torch.__version__)"


def _run_hardened(client: docker.DockerClient, image: str, code: str, **options) -> str:
    """Run python3 -c code in a container as locked down as the sandbox's, and return its output."""
    output = client.containers.run(
        image,
        ["python3", "-c", code],
        read_only=True,
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        tmpfs={"/tmp": "rw,nosuid,nodev,size=64m"},
        remove=True,
        **options,
    )
    return output.decode().strip()


@pytest.mark.docker
def test_cpu_image_imports_the_task_dependencies_read_only_and_offline(docker_client, cpu_image):
    output = _run_hardened(docker_client, cpu_image, IMPORTS, user="1000:1000")
    assert output == f"{flavors.TORCH_VERSION}+cpu"


@pytest.mark.docker
def test_cpu_image_runs_as_uid_1000_with_home_and_caches_in_tmp(docker_client, cpu_image):
    code = "import os; print(os.getuid(), os.getgid(), os.environ['HOME'], os.environ['XDG_CACHE_HOME'])"
    assert _run_hardened(docker_client, cpu_image, code) == "1000 1000 /tmp /tmp/.cache"


@pytest.mark.docker
def test_cpu_image_has_no_wheelhouse_and_can_compile_a_model_in_tmp(docker_client, cpu_image):
    code = (
        "import os, torch; assert not os.path.exists('/wheelhouse');"
        "print(torch.nn.Linear(4, 2)(torch.ones(1, 4)).shape[-1], os.getcwd())"
    )
    assert _run_hardened(docker_client, cpu_image, code) == "2 /task"


@pytest.mark.docker
def test_building_again_with_the_same_inputs_is_a_fast_no_op(docker_client, cpu_image, capsys):
    before = docker_client.images.get(cpu_image).id
    started = time.monotonic()
    assert images.build_image("cpu") == cpu_image
    assert time.monotonic() - started < 30
    assert docker_client.images.get(cpu_image).id == before
    assert "is up to date" in capsys.readouterr().out


@pytest.mark.docker
def test_the_image_carries_the_digest_of_its_inputs(docker_client, cpu_image):
    labels = docker_client.images.get(cpu_image).labels
    base = docker_client.images.get(images.BASE_IMAGE)
    probe = images._probe_base(docker_client, images.BASE_IMAGE)
    assert labels[images.INPUTS_LABEL] == images._inputs_digest("cpu", base.id, [images.TORCH_REQUIREMENTS["cpu"]],
                                                                probe)
    assert labels["autoresearch.flavor"] == "cpu"
    assert base.labels[images.INPUTS_LABEL] == images._base_digest()  # a changed package list remakes the base


@pytest.mark.docker
def test_cpu_image_carries_what_torch_compile_builds_with(docker_client, cpu_image):
    code = ("import shutil, sysconfig, pathlib; print(bool(shutil.which('g++')), "
            "(pathlib.Path(sysconfig.get_paths()['include']) / 'Python.h').is_file())")
    assert _run_hardened(docker_client, cpu_image, code, user="1000:1000") == "True True"


@pytest.mark.docker
def test_require_image_names_the_missing_image_and_the_fix(docker_client, monkeypatch):
    monkeypatch.setattr(flavors, "IMAGE_REPO", "autoresearch-test-missing")
    with pytest.raises(UserError, match=r"autoresearch-test-missing:cpu is missing: run `make image`"):
        images.require_image("cpu")


@pytest.mark.docker
def test_require_image_returns_the_tag_of_a_built_image(cpu_image):
    assert images.require_image("cpu") == cpu_image == "autoresearch-experiment:cpu"


@pytest.mark.docker
def test_an_unpullable_base_explains_docker_load(docker_client):
    with pytest.raises(UserError, match=r"cannot be pulled.*docker load"):
        images.build_image("cuda", base="127.0.0.1:9/autoresearch-test/missing:none")


@pytest.mark.docker
def test_making_the_base_without_root_says_so(docker_client, monkeypatch):
    monkeypatch.setattr(images, "BASE_IMAGE", "autoresearch-test-missing-base:none")
    monkeypatch.setattr(images.os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match=r"needs root \(debootstrap\)"):
        images.build_image("cpu")


def _fake_nvidia_smi(directory: Path, listing: str) -> None:
    """Put an nvidia-smi that prints listing into directory."""
    script = directory / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{listing}'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_detect_flavor_is_cuda_when_nvidia_smi_lists_a_gpu(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0000)")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert flavors.detect_flavor() == "cuda"
    assert flavors.resolve_flavor("auto") == "cuda"


def test_detect_flavor_is_cpu_without_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert flavors.detect_flavor() == "cpu"


def test_detect_flavor_is_cpu_when_nvidia_smi_lists_no_gpu(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, "No devices found.")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert flavors.detect_flavor() == "cpu"


def test_flavors_and_tags():
    assert flavors.image_tag("cpu") == "autoresearch-experiment:cpu"
    assert flavors.image_tag("cuda") == "autoresearch-experiment:cuda"
    assert flavors.resolve_flavor("cpu") == "cpu"
    with pytest.raises(UserError, match="unknown image flavor"):
        flavors.resolve_flavor("tpu")

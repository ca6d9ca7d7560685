"""The image builder's bad inputs and its self-test: each refusal is one line with the fix, the previous image
stays as it was, and an image without what the task needs never gets the flavor's tag."""

import io
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from autoresearch.runner.check.integrity import sha256_of
from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox import flavors, images


def image_id(client: docker.DockerClient, tag: str) -> str | None:
    try:
        return client.images.get(tag).id
    except docker.errors.ImageNotFound:
        return None


def local_pip(monkeypatch, index_url: str, links: Path | None = None) -> None:
    """Point the real pip at index_url only (and links, when given), without retries."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", index_url)
    monkeypatch.setenv("PIP_FIND_LINKS", str(links) if links else "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)


def test_an_unknown_flavor_is_one_line_with_the_fix():
    done = subprocess.run([sys.executable, "-m", "autoresearch.runner.cli", "image", "--flavor", "gpu"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "autoresearch: unknown image flavor 'gpu': use cpu, cuda or auto (make image FLAVOR=cpu)"]


def test_the_platform_tags_cover_every_glibc_down_to_2_17():
    tags = images._platforms({"glibc": "2.36", "machine": "x86_64"})
    assert tags[0] == "manylinux_2_36_x86_64" and tags[-1] == "manylinux2014_x86_64"
    assert "manylinux_2_18_x86_64" in tags  # NCCL's CUDA 13 wheel carries only this tag
    assert images._platforms({"glibc": "2.39", "machine": "aarch64"})[0] == "manylinux_2_39_aarch64"


def test_the_pinned_torch_meets_the_task_minimum():
    assert tuple(map(int, flavors.TORCH_VERSION.split(".")[:2])) >= tuple(map(int, flavors.TASK_MIN_TORCH.split(".")))


@pytest.mark.docker
def test_cuda_where_no_torch_wheel_fits_says_so_and_keeps_the_image(docker_client, cpu_image, tmp_path, monkeypatch):
    links = tmp_path / "links"
    links.mkdir()
    (links / f"torch-{flavors.TORCH_VERSION}-cp311-cp311-macosx_11_0_arm64.whl").write_bytes(b"not for linux")
    (tmp_path / "index").mkdir()
    local_pip(monkeypatch, (tmp_path / "index").as_uri(), links)  # an index that answers, with no fitting wheel
    monkeypatch.setenv(images.WHEELHOUSE_ENV, str(tmp_path / "wheelhouse"))
    before = image_id(docker_client, flavors.image_tag("cuda"))
    with pytest.raises(UserError) as refused:
        images.build_image("cuda", force=True)
    assert str(refused.value).startswith(f"no torch==={flavors.TORCH_VERSION} wheel fits the base (Python 3.11, "
                                         "x86_64, glibc 2.36): build the cuda flavor on a supported machine")
    assert "--base" in str(refused.value) and "\n" not in str(refused.value)
    assert image_id(docker_client, flavors.image_tag("cuda")) == before


@pytest.mark.docker
def test_a_corrupt_wheelhouse_is_noticed_before_the_build(docker_client, cpu_image, tmp_path, monkeypatch, capsys):
    probe = images._probe_base(docker_client, images.BASE_IMAGE)
    requirement = [images.TORCH_REQUIREMENTS["cpu"]]
    wheelhouse = tmp_path / "wheelhouse" / "cpu"  # as a download left it: wheels, their sums, its key
    wheelhouse.mkdir(parents=True)
    for name in ("idna-3.20-py3-none-any.whl", "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"):
        (wheelhouse / name).write_bytes(name.encode() * 1000)
    (wheelhouse / images.SUMS_FILE).write_text(
        "".join(f"{sha256_of(wheel)}  {wheel.name}\n" for wheel in sorted(wheelhouse.glob("*.whl"))))
    (wheelhouse / images.STAMP_FILE).write_text(images._wheelhouse_key(requirement, probe))
    monkeypatch.setenv(images.WHEELHOUSE_ENV, str(tmp_path / "wheelhouse"))
    assert images._fill_wheelhouse("cpu", requirement, probe) == sorted(wheelhouse.glob("*.whl"))  # intact: kept
    wheel = wheelhouse / "idna-3.20-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes()[:1000])  # truncated, as by a full disk or an interrupted copy
    local_pip(monkeypatch, "http://127.0.0.1:9/simple")  # no index reachable: the wheel cannot come back
    before = image_id(docker_client, cpu_image)
    with pytest.raises(UserError, match=r"the package index is not reachable from here .*the previous image is "
                                        r"unchanged"):
        images._fill_wheelhouse("cpu", requirement, probe)
    assert f"{wheel.name} not as downloaded" in capsys.readouterr().out
    assert image_id(docker_client, cpu_image) == before


@pytest.mark.docker
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs as a full disk needs root")
def test_a_disk_too_small_for_the_wheelhouse_is_refused_before_downloading(docker_client, cpu_image, tmp_path,
                                                                          monkeypatch):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        monkeypatch.setenv(images.WHEELHOUSE_ENV, str(small))
        with pytest.raises(UserError, match=r"not enough free disk for the wheelhouse of the cpu image: 0\.0 GB free"
                                            r".*the previous image is unchanged"):
            images.build_image("cpu", force=True)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.mark.docker
def test_a_build_that_fills_the_disk_says_so(docker_client):
    line = images._build_failure("autoresearch-experiment:cuda-candidate",
                                 "write /var/lib/docker/tmp/x: no space left on device")
    assert line.startswith("building autoresearch-experiment:cuda-candidate filled the disk under Docker's data root")
    assert "docker system prune" in line and "previous image is unchanged" in line


@pytest.mark.docker
def test_a_gpu_docker_cannot_hand_over_names_the_toolkit(docker_client, cpu_image):
    if flavors.detect_flavor() == "cuda":
        pytest.skip(reason="this machine has a GPU: the refusal is what a box without the container toolkit sees")
    with pytest.raises(images.GpuHandoverError) as refused:
        images.container_gpu_name(docker_client, cpu_image)
    assert refused.value.problem.startswith("Docker cannot hand a container the GPU")
    assert refused.value.fix == images.GPU_TOOLKIT_FIX


@pytest.mark.docker
def test_an_image_whose_torch_lacks_a_task_api_fails_the_self_test_and_is_not_tagged(docker_client, cpu_image):
    """The attack on part 1: a torch without torch.optim.Muon (as in PyTorch 2.8 images) must not become the image."""
    candidate = "autoresearch-test-nomuon:candidate"
    dockerfile = (f"FROM {cpu_image}\nUSER root\n"
                  "RUN sed -i '/Muon/d' /opt/venv/lib/python3.11/site-packages/torch/optim/__init__.py\n")
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=candidate, network_mode="none", rm=True)
    with pytest.raises(UserError) as refused:
        images._self_test_or_discard(docker_client, candidate, "cpu")
    assert str(refused.value) == (
        f"the new image failed its self-test: api: torch {flavors.TORCH_VERSION}+cpu lacks what the task uses: "
        "torch.optim.Muon; the previous image is unchanged")
    assert image_id(docker_client, candidate) is None

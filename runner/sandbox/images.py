"""Building the experiment images offline: a base image, a wheelhouse and one Dockerfile.

Two flavors, one Dockerfile (images/Dockerfile, `ARG BASE`):
- cpu: the base is `autoresearch-base:bookworm`, made here with debootstrap (Debian bookworm minbase with
  python3 and pip), so no registry is ever needed; the wheelhouse carries the CPU build of torch.
- cuda: the base is a pytorch/pytorch runtime image, which has torch and CUDA; it is pulled once, or
  provided with `docker load` where no registry is reachable.

The wheelhouse is filled on the host with `pip download` (wheels for the base's Python, whatever the host's
Python is) and kept, so a rebuild needs no network; the build itself runs with `network_mode="none"`.
The image carries a digest of its inputs as the label `autoresearch.inputs`: building again with the same
inputs is a no-op. docker-py drives the engine's classic builder (it cannot drive BuildKit, so there is no
`RUN --mount`): the Dockerfile installs the wheels in a first stage and the final image copies the result,
so the wheelhouse is in no layer of the image.
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import as_file, files
from pathlib import Path
from typing import IO

import docker
import docker.errors

from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox.engine import connect
from autoresearch.runner.sandbox.flavors import image_tag, resolve_flavor

INPUTS_LABEL = "autoresearch.inputs"
BUILT_LABEL = "autoresearch.image=1"  # set by the Dockerfile on both stages, so leftovers can be pruned
CPU_BASE = "autoresearch-base:bookworm"
CUDA_BASE = "pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime"
DEBIAN_SUITE = "bookworm"
CPU_TORCH = "torch==2.13.0+cpu"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# manylinux tags that both bases' glibc (2.35 and newer) runs; pip itself adds manylinux2010 and manylinux1.
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)
BASE_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
]
# What debootstrap leaves that an image does not need: package lists and caches, docs, logs...
ROOTFS_CLUTTER = (
    "var/lib/apt/lists",
    "var/cache/apt",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "var/log",
)
# ...and the host's own files, which the engine provides in every container anyway.
ROOTFS_HOST_FILES = ("etc/resolv.conf", "etc/hostname")
BUILD_TIMEOUT_S = 3600


def require_image(flavor: str) -> str:
    """The tag of the flavor's experiment image, or a UserError saying how to build it."""
    tag = image_tag(flavor)
    client = connect()
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        raise UserError(f"the experiment image {tag} is missing: run `make image`") from None
    finally:
        client.close()
    return tag


def build_image(flavor: str = "auto", force: bool = False) -> str:
    """Build the flavor's experiment image unless it is up to date with its inputs; return its tag."""
    chosen = resolve_flavor(flavor)
    print(f"flavor: {chosen} ({_flavor_reason(flavor, chosen)})", flush=True)
    tag = image_tag(chosen)
    client = connect(timeout=BUILD_TIMEOUT_S)
    try:
        base = _ensure_base(client, chosen)
        digest = _inputs_digest(chosen, client.images.get(base).id)
        if not force and _inputs_label(client, tag) == digest:
            print(f"{tag} is up to date (inputs {digest[:19]})", flush=True)
            return tag
        probe = _probe_base(client, base)
        wheels = _fill_wheelhouse(chosen, probe["python"])
        torch_version = CPU_TORCH.split("==")[1] if chosen == "cpu" else probe["torch"]
        labels = {INPUTS_LABEL: digest, "autoresearch.flavor": chosen, "autoresearch.torch": torch_version}
        _build(client, tag, base, wheels, labels, nocache=force)
        client.images.prune(filters={"dangling": True, "label": BUILT_LABEL})
    finally:
        client.close()
    return tag


def _flavor_reason(asked: str, chosen: str) -> str:
    """Why build_image builds the flavor it chose, in a few words."""
    if asked != "auto":
        return "asked for"
    return "auto: nvidia-smi lists a GPU" if chosen == "cuda" else "auto: nvidia-smi lists no GPU"


def _inputs_label(client: docker.DockerClient, tag: str) -> str | None:
    """The inputs digest that the image tag carries, or None when there is no such image."""
    try:
        return client.images.get(tag).labels.get(INPUTS_LABEL)
    except docker.errors.ImageNotFound:
        return None


def _inputs_digest(flavor: str, base_id: str) -> str:
    """sha256 over what the image is made of: Dockerfile, requirements, flavor, base, torch, platforms."""
    parts = [
        _resource("Dockerfile"),
        _resource("requirements.txt"),
        flavor.encode(),
        base_id.encode(),
        " ".join(_torch_requirement(flavor)).encode(),
        " ".join(PLATFORMS).encode(),
    ]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return f"sha256:{digest.hexdigest()}"


def _torch_requirement(flavor: str) -> list[str]:
    """What the wheelhouse adds for torch: the CPU wheel for cpu, nothing for cuda (the base has torch)."""
    return [CPU_TORCH] if flavor == "cpu" else []


def _resource(name: str) -> bytes:
    """A file of the images/ data package (Dockerfile, requirements.txt)."""
    return files("autoresearch.images").joinpath(name).read_bytes()


def _first_line(exc: Exception) -> str:
    """The first line of an exception's text, short enough for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


# --- base images ---------------------------------------------------------------------------------------


def _ensure_base(client: docker.DockerClient, flavor: str) -> str:
    """Make sure the flavor's base image is in the engine; return its reference."""
    base = CPU_BASE if flavor == "cpu" else CUDA_BASE
    try:
        client.images.get(base)
    except docker.errors.ImageNotFound:
        if flavor == "cpu":
            _make_cpu_base(client)
        else:
            _pull_cuda_base(client)
    return base


def _pull_cuda_base(client: docker.DockerClient) -> None:
    """Pull the CUDA base image, or explain how to provide it without a registry."""
    print(f"base: pulling {CUDA_BASE} (several GB, once)", flush=True)
    try:
        client.images.pull(CUDA_BASE)
    except docker.errors.APIError as exc:
        raise UserError(
            f"the CUDA base image {CUDA_BASE} is not here and no registry is reachable "
            f"({_first_line(exc)}): where one is, `docker pull {CUDA_BASE}` and "
            f"`docker save {CUDA_BASE} -o base.tar`; here, `docker load -i base.tar`, then `make image`"
        ) from None


def _make_cpu_base(client: docker.DockerClient) -> None:
    """Debootstrap Debian (python3, pip) into a scratch directory and import it as CPU_BASE."""
    if shutil.which("debootstrap") is None:
        raise UserError("debootstrap is missing (it makes the CPU base image): `apt-get install debootstrap`")
    if os.geteuid() != 0:
        raise UserError(
            f"making the CPU base image {CPU_BASE} needs root (debootstrap): run "
            f"`sudo autoresearch image --flavor cpu` once, or `docker load` an image tagged {CPU_BASE}"
        )
    rootfs = Path(tempfile.mkdtemp(prefix="autoresearch-base-", dir="/var/tmp"))
    try:
        started = time.monotonic()
        _debootstrap(rootfs)
        debootstrapped = time.monotonic()
        _clean_rootfs(rootfs)
        _import_rootfs(client, rootfs, CPU_BASE)
        imported = time.monotonic()
    finally:
        _remove_rootfs(rootfs)
    print(
        f"base: {CPU_BASE} made (debootstrap {debootstrapped - started:.0f} s, "
        f"import {imported - debootstrapped:.0f} s)",
        flush=True,
    )


def _debootstrap(rootfs: Path) -> None:
    """Install a minimal Debian with python3 and pip into rootfs."""
    print(f"base: debootstrap {DEBIAN_SUITE} minbase with python3 and pip (about a minute)", flush=True)
    command = ["debootstrap", "--variant=minbase", "--include=python3,python3-pip", DEBIAN_SUITE, str(rootfs)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print("\n".join((done.stdout + done.stderr).splitlines()[-15:]), file=sys.stderr)
        raise UserError(f"debootstrap {DEBIAN_SUITE} failed (exit {done.returncode}), see the lines above")


def _clean_rootfs(rootfs: Path) -> None:
    """Empty the directories an image does not need and drop the host files debootstrap copied in."""
    for relative in ROOTFS_CLUTTER:
        for child in (rootfs / relative).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    for relative in ROOTFS_HOST_FILES:
        (rootfs / relative).unlink(missing_ok=True)


def _import_rootfs(client: docker.DockerClient, rootfs: Path, ref: str) -> None:
    """Stream a tar of rootfs into the engine as the image ref (what `docker import` does)."""
    repository, tag = ref.rsplit(":", 1)
    command = ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", "-", "."]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as tar:
        chunks = iter(lambda: tar.stdout.read(1 << 20), b"")
        client.api.import_image_from_stream(chunks, repository=repository, tag=tag, changes=BASE_CHANGES)
    if tar.returncode != 0:
        raise UserError(f"tar of the debootstrapped {DEBIAN_SUITE} failed (exit {tar.returncode})")


def _remove_rootfs(rootfs: Path) -> None:
    """Delete the scratch rootfs, after unmounting what a failed debootstrap may have left mounted in it."""
    for mountpoint in sorted(_mounts_under(rootfs), reverse=True):
        subprocess.run(["umount", "--lazy", mountpoint], check=False)
    if _mounts_under(rootfs):
        raise UserError(f"{rootfs} still has mounts in it: unmount them, then delete it by hand")
    shutil.rmtree(rootfs)


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below root, from /proc/self/mounts."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return [point for point in points if point == str(root) or point.startswith(f"{root}/")]


def _probe_base(client: docker.DockerClient, base: str) -> dict[str, str]:
    """The base image's Python version ("3.11") and torch version ("" when it has none)."""
    script = (
        "import json, sys, importlib.metadata as m\n"
        "try: torch = m.version('torch')\n"
        "except m.PackageNotFoundError: torch = ''\n"
        "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'torch': torch}))"
    )
    try:
        output = client.containers.run(base, ["python3", "-c", script], network_mode="none", remove=True)
    except docker.errors.DockerException as exc:
        raise UserError(f"the base image {base} cannot run python3: {_first_line(exc)}") from None
    return json.loads(output.decode().splitlines()[-1])


# --- wheelhouse ----------------------------------------------------------------------------------------


def _wheelhouse_dir(flavor: str) -> Path:
    """images/wheelhouse/<flavor> in a source checkout, else ~/.cache/autoresearch/wheelhouse/<flavor>."""
    images_dir = Path(str(files("autoresearch.images")))
    if (images_dir.parent / "pyproject.toml").is_file():
        return images_dir / "wheelhouse" / flavor
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "autoresearch" / "wheelhouse" / flavor


def _fill_wheelhouse(flavor: str, python_version: str) -> list[Path]:
    """The flavor's wheels for python_version, downloaded unless the wheelhouse already holds them."""
    wheelhouse = _wheelhouse_dir(flavor)
    inputs = [_resource("requirements.txt").decode(), *_torch_requirement(flavor), python_version, *PLATFORMS]
    key = hashlib.sha256("\n".join(inputs).encode()).hexdigest()
    stamp = wheelhouse / ".inputs"
    if stamp.is_file() and stamp.read_text() == key:
        wheels = sorted(wheelhouse.glob("*.whl"))
        print(f"wheelhouse: {len(wheels)} wheels kept in {wheelhouse}", flush=True)
        return wheels
    started = time.monotonic()
    print(f"wheelhouse: downloading wheels for Python {python_version} into {wheelhouse}", flush=True)
    _download_wheels(wheelhouse, flavor, python_version)
    stamp.write_text(key)
    wheels = sorted(wheelhouse.glob("*.whl"))
    size_mb = sum(wheel.stat().st_size for wheel in wheels) / 1e6
    elapsed = time.monotonic() - started
    print(f"wheelhouse: {len(wheels)} wheels, {size_mb:.0f} MB, in {elapsed:.0f} s", flush=True)
    return wheels


def _download_wheels(wheelhouse: Path, flavor: str, python_version: str) -> None:
    """Empty wheelhouse (so no stale wheel gets installed), then download the flavor's wheels into it.

    The CPU torch comes alone from the PyTorch index (PyPI's Linux torch is the CUDA build); everything
    else resolves against PyPI with that wheel as a local candidate, so the PyTorch index is asked once.
    """
    if wheelhouse.exists():
        shutil.rmtree(wheelhouse)
    wheelhouse.mkdir(parents=True)
    torch = _torch_requirement(flavor)
    if torch:
        _pip_download(wheelhouse, python_version, ["--no-deps", "--extra-index-url", TORCH_CPU_INDEX, *torch])
    local = ["--find-links", str(wheelhouse)]
    with as_file(files("autoresearch.images").joinpath("requirements.txt")) as requirements:
        _pip_download(wheelhouse, python_version, [*local, "-r", str(requirements), *torch])


def _pip_download(dest: Path, python_version: str, args: list[str]) -> None:
    """Run `pip download` of cp<python_version> manylinux x86_64 wheels into dest."""
    abi = "cp" + python_version.replace(".", "")
    platforms = [flag for platform in PLATFORMS for flag in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
               "--abi", abi, *platforms, "--dest", str(dest), *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        reason = errors[-1][:300] if errors else f"exit {done.returncode}"
        raise UserError(f"pip download of the image's wheels failed (is PyPI reachable?): {reason}")


# --- build ---------------------------------------------------------------------------------------------


def _build(
    client: docker.DockerClient,
    tag: str,
    base: str,
    wheels: list[Path],
    labels: dict[str, str],
    nocache: bool,
) -> None:
    """Build tag from the Dockerfile and the wheels, with no network, printing each step as it starts."""
    started = time.monotonic()
    print(f"build: {tag} from {base}, no network", flush=True)
    with _build_context(wheels) as context:
        stream = client.api.build(
            fileobj=context,
            custom_context=True,
            tag=tag,
            buildargs={"BASE": base},
            labels=labels,
            network_mode="none",
            rm=True,
            forcerm=True,
            nocache=nocache,
            decode=True,
        )
        _follow_build(stream, tag)
    size_gb = client.images.get(tag).attrs["Size"] / 1e9
    print(f"built {tag}: {size_gb:.2f} GB in {time.monotonic() - started:.0f} s", flush=True)


@contextmanager
def _build_context(wheels: list[Path]) -> Iterator[IO[bytes]]:
    """A tar, in a temporary file, of the Dockerfile and of wheelhouse/ with the wheels."""
    dockerfile = _resource("Dockerfile")
    with tempfile.TemporaryFile() as context:
        with tarfile.open(fileobj=context, mode="w") as tar:
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            tar.addfile(info, io.BytesIO(dockerfile))
            for wheel in wheels:
                tar.add(wheel, arcname=f"wheelhouse/{wheel.name}")
        context.seek(0)
        yield context


def _follow_build(stream: Iterator[dict], tag: str) -> None:
    """Print the build's steps; on an error print its last lines of output and raise UserError."""
    tail: list[str] = []
    try:
        for chunk in stream:
            if "error" in chunk:
                print("\n".join(tail[-15:]), file=sys.stderr)
                raise UserError(f"building {tag} failed: {chunk['error'].strip()[:300]}")
            text = chunk.get("stream", "").rstrip()
            tail = [*tail[-30:], *text.splitlines()]
            if text.startswith("Step "):
                print(f"  {text}", flush=True)
    except docker.errors.APIError as exc:
        raise UserError(f"building {tag} failed: {_first_line(exc)}") from None

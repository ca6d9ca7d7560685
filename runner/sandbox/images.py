"""Building the experiment images offline: one debootstrapped base, a wheelhouse, one Dockerfile, a self-test.

Both flavors (images/Dockerfile, `ARG BASE`) start from `autoresearch-base:bookworm`, made here with debootstrap
(Debian bookworm minbase with python3, pip, g++ and Python's headers: what torch.compile builds with), so no
registry is ever needed. The wheelhouse carries the one pinned torch (flavors.TORCH_VERSION): the +cpu build
from the PyTorch index for cpu, PyPI's CUDA build with its NVIDIA runtime wheels for cuda. A pulled PyTorch
image may stand in for the base (`--base`); its own torch is then used and held to the task's minimum.

The wheelhouse is filled on the host with `pip download` (wheels for the base's Python, glibc and machine,
whatever the host's are), checked against the sha256 it had when downloaded, and kept, so a rebuild needs no
network; the build itself runs with `network_mode="none"`. docker-py drives the engine's classic builder (no
BuildKit, so no `RUN --mount`): the Dockerfile installs the wheels in a first stage and the final image copies
the result, so the wheelhouse is in no layer of the image.

A build goes to a candidate tag first; images/selftest.py runs inside it (the task's APIs, the compile
toolchain, the task end to end on CPU, the GPU profile's compiled path at toy sizes), and only an image that
passes gets the flavor's tag. A failed build or self-test leaves the previous image as it was. The image carries
a digest of its inputs as the label `autoresearch.inputs`: building again with the same inputs is a no-op.
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
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import as_file, files
from pathlib import Path
from typing import IO

import docker
import docker.errors
import docker.types

from autoresearch.runner.check.integrity import sha256_of
from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox.engine import connect, docker_root
from autoresearch.runner.sandbox.flavors import (
    TASK_MIN_TORCH,
    TORCH_VERSION,
    detect_flavor,
    image_tag,
    resolve_flavor,
)
from autoresearch.runner.task_files import default_task_dir
from autoresearch.runner.workspace import nearest_existing

INPUTS_LABEL = "autoresearch.inputs"
BUILT_LABEL = "autoresearch.image=1"  # set by the Dockerfile on both stages, so leftovers can be pruned
BASE_IMAGE = "autoresearch-base:bookworm"
DEBIAN_SUITE = "bookworm"
# python3-dev and g++: the headers and compiler torch.compile builds with (Inductor's C++ on CPU, Triton's
# launcher on CUDA); pip installs the wheelhouse into the image's venv.
BASE_PACKAGES = ("python3", "python3-pip", "python3-dev", "g++")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# What the wheelhouse adds for torch. `===` is string equality: `==2.13.0` would also take a local build such
# as 2.13.0+cpu from a find-links folder, which is not the CUDA build the cuda flavor needs.
TORCH_REQUIREMENTS = {"cpu": f"torch=={TORCH_VERSION}+cpu", "cuda": f"torch==={TORCH_VERSION}"}
OLDEST_MANYLINUX = 17  # manylinux_2_17 (manylinux2014): the oldest glibc the task's wheels are built for
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
SELFTEST_TIMEOUT_S = 1200
WHEELHOUSE_ENV = "AUTORESEARCH_WHEELHOUSE"  # a wheelhouse folder of one's own (one per flavor below it)
SUMS_FILE = "SHA256SUMS"  # each wheel's sha256 as downloaded
STAMP_FILE = ".inputs"  # the wheelhouse's key (_wheelhouse_key): what it was downloaded for
# What pip prints when it cannot reach an index (urllib3's and pip's words), as opposed to an index that answers.
UNREACHABLE_SIGNS = ("Failed to establish a new connection", "Max retries exceeded", "Could not fetch URL",
                     "ProxyError", "ConnectTimeoutError", "Temporary failure in name resolution")
# Free disk a build needs, in GB: (the wheelhouse's download, Docker's data root during the build).
DISK_NEEDED_GB = {"cpu": (1, 5), "cuda": (6, 25)}
GPU_TOOLKIT_FIX = ("install the NVIDIA container toolkit (nvidia-ctk runtime configure --runtime=docker) or "
                   "enable CDI, then restart dockerd")


class GpuHandoverError(UserError):
    """Docker cannot hand a container the GPU; `problem` says what happened, `fix` what to do."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}: {fix}")
        self.problem, self.fix = problem, fix


class NoFittingWheel(UserError):
    """The index answered, but has no wheel of a requirement for the base's Python, glibc and machine."""


def require_image(flavor: str) -> str:
    """The tag of the flavor's experiment image, or a UserError saying how to build it."""
    return require_tag(image_tag(flavor), "the experiment image", "make image")


def require_tag(tag: str, what: str, build: str) -> str:
    """tag when the engine has that image, else a UserError: "{what} {tag} is missing: run `{build}`"."""
    client = connect()
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        raise UserError(f"{what} {tag} is missing: run `{build}`") from None
    finally:
        client.close()
    return tag


def build_image(flavor: str = "auto", force: bool = False, base: str | None = None) -> str:
    """Build and self-test the flavor's experiment image unless it is up to date; return its tag.

    base: an image to build on instead of the debootstrapped one (a pulled PyTorch image, say).
    """
    chosen = resolve_flavor(flavor)
    print(f"flavor: {chosen} ({_flavor_reason(flavor, chosen)})", flush=True)
    tag = image_tag(chosen)
    client = connect(timeout=BUILD_TIMEOUT_S)
    try:
        base = base or BASE_IMAGE
        ensure_base(client, base)
        probe = _probe_base(client, base)
        torch_requirement = [] if probe["torch"] else [TORCH_REQUIREMENTS[chosen]]
        digest = _inputs_digest(chosen, client.images.get(base).id, torch_requirement, probe)
        if not force and _inputs_label(client, tag) == digest:
            print(f"{tag} is up to date (inputs {digest[:19]})", flush=True)
            return tag
        _require_disk(client, chosen)
        wheels = _fill_wheelhouse(chosen, torch_requirement, probe)
        torch_version = probe["torch"] or TORCH_VERSION
        labels = {INPUTS_LABEL: digest, "autoresearch.flavor": chosen, "autoresearch.torch": torch_version}
        candidate = f"{tag}-candidate"
        _build(client, candidate, base, wheels, labels, nocache=force)
        _self_test_or_discard(client, candidate, chosen)
        _promote(client, candidate, tag)
        client.images.prune(filters={"dangling": True, "label": BUILT_LABEL})
        if chosen == "cuda":
            _check_gpu_handover(client, tag)
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


def _inputs_digest(flavor: str, base_id: str, torch_requirement: list[str], probe: dict[str, str]) -> str:
    """sha256 over what the image is made of: Dockerfile, requirements, self-test, flavor, base, torch, platforms."""
    parts = [
        resource("Dockerfile"),
        resource("requirements.txt"),
        resource("selftest.py"),
        flavor.encode(),
        base_id.encode(),
        " ".join(torch_requirement).encode(),
        " ".join(_platforms(probe)).encode(),
    ]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return f"sha256:{digest.hexdigest()}"


def _platforms(probe: dict[str, str]) -> list[str]:
    """The manylinux tags the base's glibc and machine run, newest first (pip needs each one named)."""
    machine, newest = probe["machine"], int(probe["glibc"].split(".")[1])
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(newest, OLDEST_MANYLINUX - 1, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def resource(name: str) -> bytes:
    """A file of the images/ data package (Dockerfile, requirements.txt, selftest.py)."""
    return files("autoresearch.images").joinpath(name).read_bytes()


def _first_line(exc: Exception) -> str:
    """The first line of an exception's text, short enough for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _require_disk(client: docker.DockerClient, flavor: str) -> None:
    """Refuse to start a build that the disk cannot hold, before anything is downloaded or built."""
    wheelhouse_gb, build_gb = DISK_NEEDED_GB[flavor]
    places = [("the wheelhouse", _wheelhouse_dir(flavor), wheelhouse_gb)]
    root = docker_root(client)
    if root.exists():  # a local engine: its data root is on this machine's disk
        places.append(("Docker's images", root, build_gb))
    for what, path, needed_gb in places:
        existing = nearest_existing(path)
        free_gb = shutil.disk_usage(existing).free / 1e9
        if free_gb < needed_gb:
            raise UserError(
                f"not enough free disk for {what} of the {flavor} image: {free_gb:.1f} GB free at {existing}, "
                f"about {needed_gb} GB needed: free some (docker system prune, or point {WHEELHOUSE_ENV} at a "
                "disk with room), then run `make image` again; the previous image is unchanged"
            )


# --- base images ---------------------------------------------------------------------------------------


def ensure_base(client: docker.DockerClient, base: str) -> None:
    """Make sure the base image is in the engine: debootstrap ours when missing or outdated, pull any other."""
    if base != BASE_IMAGE:
        _pull_base(client, base)
        return
    wanted = _base_digest()
    try:
        if client.images.get(base).labels.get(INPUTS_LABEL) == wanted:
            return
        print(f"base: {base} predates the current package list ({', '.join(BASE_PACKAGES)}): making it again",
              flush=True)
    except docker.errors.ImageNotFound:
        pass
    _make_base(client, wanted)


def _base_digest() -> str:
    """sha256 over what the debootstrapped base is made of: suite, packages and image settings."""
    text = "\n".join([DEBIAN_SUITE, *BASE_PACKAGES, *BASE_CHANGES])
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def _pull_base(client: docker.DockerClient, base: str) -> None:
    """Pull a base image given with --base unless the engine has it, or explain how to provide it offline."""
    try:
        client.images.get(base)
        return
    except docker.errors.ImageNotFound:
        pass
    print(f"base: pulling {base} (once)", flush=True)
    try:
        client.images.pull(base)
    except docker.errors.APIError as exc:
        raise UserError(
            f"the base image {base} is not here and cannot be pulled ({_first_line(exc)}): where a registry is "
            f"reachable, `docker pull {base}` and `docker save {base} -o base.tar`; here, `docker load -i "
            "base.tar`, then build again (or drop --base to build on the debootstrapped base)"
        ) from None


def _make_base(client: docker.DockerClient, digest: str) -> None:
    """Debootstrap Debian (BASE_PACKAGES) into a scratch directory and import it as BASE_IMAGE."""
    if shutil.which("debootstrap") is None:
        raise UserError("debootstrap is missing (it makes the base image): `apt-get install debootstrap`")
    if os.geteuid() != 0:
        raise UserError(
            f"making the base image {BASE_IMAGE} needs root (debootstrap): run "
            f"`sudo autoresearch image` once, or `docker load` an image tagged {BASE_IMAGE}"
        )
    rootfs = Path(tempfile.mkdtemp(prefix="autoresearch-base-", dir="/var/tmp"))
    try:
        started = time.monotonic()
        _debootstrap(rootfs)
        debootstrapped = time.monotonic()
        _clean_rootfs(rootfs)
        _import_rootfs(client, rootfs, BASE_IMAGE, [*BASE_CHANGES, f"LABEL {INPUTS_LABEL}={digest}"])
        imported = time.monotonic()
    finally:
        _remove_rootfs(rootfs)
    print(
        f"base: {BASE_IMAGE} made (debootstrap {debootstrapped - started:.0f} s, "
        f"import {imported - debootstrapped:.0f} s)",
        flush=True,
    )


def _debootstrap(rootfs: Path) -> None:
    """Install a minimal Debian with python3 and pip into rootfs."""
    print(f"base: debootstrap {DEBIAN_SUITE} minbase with {', '.join(BASE_PACKAGES)} (a minute or two)", flush=True)
    command = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", DEBIAN_SUITE, str(rootfs)]
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


def _import_rootfs(client: docker.DockerClient, rootfs: Path, ref: str, changes: list[str]) -> None:
    """Stream a tar of rootfs into the engine as the image ref (what `docker import` does)."""
    repository, tag = ref.rsplit(":", 1)
    command = ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", "-", "."]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as tar:
        chunks = iter(lambda: tar.stdout.read(1 << 20), b"")
        client.api.import_image_from_stream(chunks, repository=repository, tag=tag, changes=changes)
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
    """The base image's Python ("3.11"), torch ("" when it has none), glibc ("2.36") and machine ("x86_64")."""
    script = (
        "import json, platform, sys, importlib.metadata as m\n"
        "try: torch = m.version('torch')\n"
        "except m.PackageNotFoundError: torch = ''\n"
        "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'torch': torch,\n"
        "                  'glibc': platform.libc_ver()[1], 'machine': platform.machine()}))"
    )
    try:
        output = client.containers.run(base, ["python3", "-c", script], network_mode="none", remove=True)
    except docker.errors.DockerException as exc:
        raise UserError(f"the base image {base} cannot run python3: {_first_line(exc)}") from None
    probe = json.loads(output.decode().splitlines()[-1])
    if not probe["glibc"]:
        raise UserError(f"the base image {base} has no glibc (musl?): the task's wheels need a glibc system")
    return probe


# --- wheelhouse ----------------------------------------------------------------------------------------


def _wheelhouse_dir(flavor: str) -> Path:
    """$AUTORESEARCH_WHEELHOUSE/<flavor>, else images/wheelhouse/<flavor> in a source checkout, else the cache."""
    if os.environ.get(WHEELHOUSE_ENV):
        return Path(os.environ[WHEELHOUSE_ENV]).expanduser() / flavor
    images_dir = Path(str(files("autoresearch.images")))
    if (images_dir.parent / "pyproject.toml").is_file():
        return images_dir / "wheelhouse" / flavor
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "autoresearch" / "wheelhouse" / flavor


def _fill_wheelhouse(flavor: str, torch_requirement: list[str], probe: dict[str, str]) -> list[Path]:
    """The flavor's wheels for the base, downloaded unless the wheelhouse holds them intact."""
    wheelhouse = _wheelhouse_dir(flavor)
    key = _wheelhouse_key(torch_requirement, probe)
    stamp = wheelhouse / STAMP_FILE
    if stamp.is_file() and stamp.read_text() == key:
        damaged = _damaged_wheels(wheelhouse)
        if not damaged:
            wheels = sorted(wheelhouse.glob("*.whl"))
            print(f"wheelhouse: {len(wheels)} wheels kept in {wheelhouse}", flush=True)
            return wheels
        print(f"wheelhouse: {', '.join(damaged[:3])} not as downloaded (missing, added or changed): downloading again",
              flush=True)
    started = time.monotonic()
    print(f"wheelhouse: downloading wheels for Python {probe['python']} on {probe['machine']} into {wheelhouse}",
          flush=True)
    _download_wheels(wheelhouse, flavor, torch_requirement, probe)
    wheels = sorted(wheelhouse.glob("*.whl"))
    (wheelhouse / SUMS_FILE).write_text("".join(f"{sha256_of(w)}  {w.name}\n" for w in wheels))
    stamp.write_text(key)
    size_mb = sum(wheel.stat().st_size for wheel in wheels) / 1e6
    elapsed = time.monotonic() - started
    print(f"wheelhouse: {len(wheels)} wheels, {size_mb:.0f} MB, in {elapsed:.0f} s", flush=True)
    return wheels


def _wheelhouse_key(torch_requirement: list[str], probe: dict[str, str]) -> str:
    """sha256 over what the wheelhouse is downloaded for: requirements, torch, the base's Python and platforms."""
    inputs = [resource("requirements.txt").decode(), *torch_requirement, probe["python"], *_platforms(probe)]
    return hashlib.sha256("\n".join(inputs).encode()).hexdigest()


def _damaged_wheels(wheelhouse: Path) -> list[str]:
    """Names of the wheels that are missing, added or changed since the download (per SHA256SUMS)."""
    sums = wheelhouse / SUMS_FILE
    if not sums.is_file():
        return [SUMS_FILE]
    recorded = dict(reversed(line.split("  ", 1)) for line in sums.read_text().splitlines() if "  " in line)
    present = {wheel.name for wheel in wheelhouse.glob("*.whl")}
    damaged = sorted(present ^ set(recorded))
    damaged += sorted(name for name in present & set(recorded) if sha256_of(wheelhouse / name) != recorded[name])
    return damaged


def _download_wheels(wheelhouse: Path, flavor: str, torch_requirement: list[str], probe: dict[str, str]) -> None:
    """Empty wheelhouse (so no stale wheel gets installed), then download the flavor's wheels into it.

    torch comes first and alone, so that a platform it has no wheel for gets its own error; the CPU build
    comes from the PyTorch index (PyPI's Linux torch is the CUDA build). Everything else then resolves with
    that wheel as a local candidate, so the PyTorch index is asked once.
    """
    if wheelhouse.exists():
        shutil.rmtree(wheelhouse)
    wheelhouse.mkdir(parents=True)
    if torch_requirement:
        index = ["--extra-index-url", TORCH_CPU_INDEX] if flavor == "cpu" else []
        try:
            _pip_download(wheelhouse, probe, ["--no-deps", *index, *torch_requirement])
        except NoFittingWheel:
            raise UserError(
                f"no {torch_requirement[0]} wheel fits the base (Python {probe['python']}, {probe['machine']}, "
                f"glibc {probe['glibc']}): build the {flavor} flavor on a supported machine (x86_64 or aarch64), "
                "or pass --base with a PyTorch image made for this one; the previous image is unchanged"
            ) from None
    local = ["--find-links", str(wheelhouse)]
    with as_file(files("autoresearch.images").joinpath("requirements.txt")) as requirements:
        _pip_download(wheelhouse, probe, [*local, "-r", str(requirements), *torch_requirement])


def _pip_download(dest: Path, probe: dict[str, str], args: list[str]) -> None:
    """Run `pip download` of the base's cpXY manylinux wheels into dest."""
    python_version = probe["python"]
    abi = "cp" + python_version.replace(".", "")
    platforms = [flag for platform in _platforms(probe) for flag in ("--platform", platform)]
    # -vv: only at that level does pip say that it could not fetch an index page (UNREACHABLE_SIGNS).
    command = [sys.executable, "-m", "pip", "download", "-vv", "--progress-bar", "off", "--disable-pip-version-check",
               "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
               "--abi", abi, *platforms, "--dest", str(dest), *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        reason = errors[-1][:300] if errors else f"exit {done.returncode}"
        if "No space left on device" in done.stderr:
            raise UserError(f"the disk under the wheelhouse {dest} is full: free some, or point {WHEELHOUSE_ENV} "
                            "at a disk with room, then run `make image` again; the previous image is unchanged")
        if any(sign in done.stdout + done.stderr for sign in UNREACHABLE_SIGNS):  # pip logs these to stdout
            raise UserError(f"pip download of the image's wheels failed: the package index is not reachable from "
                            f"here ({reason}); connect to PyPI and run `make image` again (the previous image is "
                            "unchanged)")
        if "No matching distribution" in done.stderr:
            raise NoFittingWheel(f"pip download of the image's wheels failed: {reason}")
        raise UserError(f"pip download of the image's wheels failed: {reason}")


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
        follow_build(stream, tag)
    size_gb = client.images.get(tag).attrs["Size"] / 1e9
    print(f"built {tag}: {size_gb:.2f} GB in {time.monotonic() - started:.0f} s", flush=True)


@contextmanager
def _build_context(wheels: list[Path]) -> Iterator[IO[bytes]]:
    """A tar, in a temporary file, of the Dockerfile and of wheelhouse/ with the wheels."""
    dockerfile = resource("Dockerfile")
    with tempfile.TemporaryFile() as context:
        with tarfile.open(fileobj=context, mode="w") as tar:
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            tar.addfile(info, io.BytesIO(dockerfile))
            for wheel in wheels:
                tar.add(wheel, arcname=f"wheelhouse/{wheel.name}")
        context.seek(0)
        yield context


def follow_build(stream: Iterator[dict], tag: str) -> None:
    """Print the build's steps; on an error print its last lines of output and raise UserError."""
    tail: list[str] = []
    try:
        for chunk in stream:
            if "error" in chunk:
                print("\n".join(tail[-15:]), file=sys.stderr)
                raise UserError(_build_failure(tag, chunk["error"]))
            text = chunk.get("stream", "").rstrip()
            tail = [*tail[-30:], *text.splitlines()]
            if text.startswith("Step "):
                print(f"  {text}", flush=True)
    except docker.errors.APIError as exc:
        raise UserError(_build_failure(tag, _first_line(exc))) from None


def _build_failure(tag: str, error: str) -> str:
    """The one line for a failed build, with the fix for the failures a user can act on."""
    if "no space left on device" in error.lower():
        return (f"building {tag} filled the disk under Docker's data root: free some (docker system prune), "
                "then run `make image` again; the previous image is unchanged")
    if "pip" in error or "returned a non-zero code" in error:
        return (f"building {tag} failed installing the wheelhouse ({error.strip()[:200]}): delete the wheelhouse "
                f"(or set {WHEELHOUSE_ENV}) to download it again; the previous image is unchanged")
    return f"building {tag} failed: {error.strip()[:300]}; the previous image is unchanged"


# --- self-test and tag ---------------------------------------------------------------------------------


def _self_test_or_discard(client: docker.DockerClient, candidate: str, flavor: str) -> None:
    """Run images/selftest.py in a container of candidate; on failure remove candidate and raise UserError."""
    started = time.monotonic()
    print(f"self-test: in {candidate}, no network (the task's APIs, the compile toolchain, the task on CPU)",
          flush=True)
    result, failure, exit_code = None, None, None
    with as_file(files("autoresearch.images").joinpath("selftest.py")) as script:
        container = client.containers.run(
            candidate, ["python3", "/selftest/selftest.py"], detach=True, network_mode="none", read_only=True,
            tmpfs={"/tmp": "rw,exec,nosuid,nodev,size=4g"}, cap_drop=["ALL"], security_opt=["no-new-privileges"],
            environment={"AUTORESEARCH_MIN_TORCH": TASK_MIN_TORCH, "AUTORESEARCH_FLAVOR": flavor},
            mounts=[docker.types.Mount("/task", str(default_task_dir()), type="bind", read_only=True),
                    docker.types.Mount("/selftest/selftest.py", str(script), type="bind", read_only=True)],
            labels={"autoresearch.selftest": "1"},
        )
        timed_out = threading.Event()
        deadline = threading.Timer(SELFTEST_TIMEOUT_S, lambda: (timed_out.set(), container.kill()))
        deadline.start()
        try:
            for raw in container.logs(stream=True, follow=True):
                for line in raw.decode(errors="replace").splitlines():
                    if line.startswith("RESULT "):
                        result = json.loads(line[len("RESULT "):])
                    elif line.startswith("FAIL"):
                        failure = line
                    else:
                        print(f"  {line}", flush=True)
            exit_code = container.wait(timeout=60)["StatusCode"]
        finally:
            deadline.cancel()
            container.remove(force=True)
    if timed_out.is_set():
        failure = f"FAIL timeout: the self-test ran past {SELFTEST_TIMEOUT_S} s"
    if exit_code != 0 or result is None:
        client.images.remove(candidate, force=True)
        reason = failure or f"exit {exit_code} with no result"
        raise UserError(f"the new image failed its self-test: {reason.removeprefix('FAIL ')}; "
                        "the previous image is unchanged")
    print(f"self-test: passed in {time.monotonic() - started:.0f} s", flush=True)


def _promote(client: docker.DockerClient, candidate: str, tag: str) -> None:
    """Give the tested candidate the flavor's tag and drop the candidate tag."""
    repository, name = tag.rsplit(":", 1)
    client.images.get(candidate).tag(repository, name)
    client.images.remove(candidate, noprune=True)
    size_gb = client.images.get(tag).attrs["Size"] / 1e9
    print(f"image: {tag} ({size_gb:.2f} GB) passed its self-test and is ready", flush=True)


def container_gpu_name(client: docker.DockerClient, tag: str, device_ids: list[str] | None = None) -> str:
    """The name of the GPU a container of tag sees; GpuHandoverError when Docker cannot hand it over."""
    request = (docker.types.DeviceRequest(device_ids=device_ids, capabilities=[["gpu"]]) if device_ids
               else docker.types.DeviceRequest(count=1, capabilities=[["gpu"]]))
    try:
        out = client.containers.run(tag, ["python3", "-c", "import torch; print(torch.cuda.get_device_name(0))"],
                                    remove=True, network_mode="none", device_requests=[request])
    except docker.errors.APIError as exc:
        raise GpuHandoverError(f"Docker cannot hand a container the GPU: {exc.explanation}", GPU_TOOLKIT_FIX) from None
    except docker.errors.ContainerError as exc:
        raise GpuHandoverError(f"a container got no usable GPU: {str(exc)[-200:]}",
                               "check that the driver supports the image's CUDA (nvidia-smi inside a container)"
                               ) from None
    return out.decode().strip()


def _check_gpu_handover(client: docker.DockerClient, tag: str) -> None:
    """Where nvidia-smi lists a GPU, make sure a container of the new cuda image gets one."""
    if detect_flavor() != "cuda":
        print("gpu: none here, so the hand-over of a GPU to a container is not checked (autoresearch doctor will)",
              flush=True)
        return
    try:
        print(f"gpu: a container of {tag} sees {container_gpu_name(client, tag)}", flush=True)
    except GpuHandoverError as exc:
        raise UserError(f"{tag} is built and passed its self-test, but {exc}") from None

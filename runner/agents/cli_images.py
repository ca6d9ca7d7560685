"""The agent images: Debian (the experiment image's debootstrapped base) plus one coding-agent CLI, pinned.

Each CLI comes from the npm registry as the platform package that carries its native binary (`npm pack`, which
checks the registry's sha512 integrity); the binaries are taken out of the tarball on the host and copied into
an image built with no network. The image's inputs digest (base, package, integrity, the entry files) is its
label, so `autoresearch image --agent NAME` rebuilds only when one of them changed.
"""

import base64
import hashlib
import io
import json
import os
import platform
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import docker
import docker.errors

from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox.engine import connect
from autoresearch.runner.sandbox.images import (
    BASE_IMAGE,
    INPUTS_LABEL,
    ensure_base,
    follow_build,
    require_tag,
    resource,
)

ENTRY_FILES = ("agent.Dockerfile", "agent_enter.sh", "agent_relay.py")
NPM_TIMEOUT_S = 600
CACHE_ENV = "AUTORESEARCH_NPM_CACHE"  # where the npm tarballs are kept (default: ~/.cache/autoresearch/npm)
MACHINES = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class CliPackage:
    """One CLI's npm platform package: where its binaries sit in the tarball, and their names in the image."""

    agent: str
    package: str  # the npm name, {arch} standing for x64 or arm64
    version: str  # the npm version, {arch} likewise
    binaries: tuple[tuple[str, str], ...]  # (path in the tarball, name in /usr/local/bin)

    def spec(self, arch: str) -> str:
        return f"{self.package.format(arch=arch)}@{self.version.format(arch=arch)}"

    @property
    def cli_version(self) -> str:
        return self.version.split("-")[0]


_MUSL = {"x64": "x86_64-unknown-linux-musl", "arm64": "aarch64-unknown-linux-musl"}
CLI_PACKAGES = {
    "claude-code": CliPackage("claude-code", "@anthropic-ai/claude-code-linux-{arch}", "2.1.332",
                              (("package/claude", "claude"),)),
    "codex": CliPackage("codex", "@openai/codex", "0.171.0-linux-{arch}",
                        (("package/vendor/{musl}/bin/codex", "codex"),
                         ("package/vendor/{musl}/bin/codex-code-mode-host", "codex-code-mode-host"),
                         ("package/vendor/{musl}/codex-path/rg", "rg"))),
}


def image_tag(agent: str) -> str:
    """The agent image's tag: autoresearch-agent-NAME:CLI_VERSION."""
    return f"autoresearch-agent-{agent}:{CLI_PACKAGES[agent].cli_version}"


def host_arch() -> str:
    machine = platform.machine().lower()
    if machine not in MACHINES:
        raise UserError(f"no coding-agent CLI is published for this machine ({machine}): use the claude or openai "
                        "agent instead")
    return MACHINES[machine]


def require_agent_image(agent: str, tag: str | None = None) -> str:
    """The tag of the agent's image (tag: another one of its), or a UserError saying how to build it."""
    return require_tag(tag or image_tag(agent), f"the {agent} agent image", f"autoresearch image --agent {agent}")


def build_agent_image(agent: str, force: bool = False) -> str:
    """Build the agent's image unless it is up to date; return its tag."""
    package, arch = CLI_PACKAGES[agent], host_arch()
    tag = image_tag(agent)
    tarball, integrity = npm_pack(package.spec(arch))
    client = connect(timeout=1800)
    try:
        ensure_base(client, BASE_IMAGE)
        digest = _inputs_digest(client.images.get(BASE_IMAGE).id, package, arch, integrity)
        try:
            if not force and client.images.get(tag).labels.get(INPUTS_LABEL) == digest:
                print(f"{tag} is up to date (inputs {digest[:19]})", flush=True)
                return tag
        except docker.errors.ImageNotFound:
            pass
        print(f"build: {tag} from {BASE_IMAGE} and {package.spec(arch)}, no network", flush=True)
        with _context(tarball, package, arch) as context:
            stream = client.api.build(fileobj=context, custom_context=True, tag=tag, dockerfile="agent.Dockerfile",
                                      buildargs={"BASE": BASE_IMAGE}, network_mode="none", rm=True, forcerm=True,
                                      nocache=force, decode=True,
                                      labels={INPUTS_LABEL: digest, "autoresearch.agent": agent,
                                              "autoresearch.cli": package.spec(arch)})
            follow_build(stream, tag)
        print(f"image: {tag} ({client.images.get(tag).attrs['Size'] / 1e9:.2f} GB) is ready", flush=True)
    finally:
        client.close()
    return tag


def npm_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "autoresearch" / "npm")


def npm_pack(spec: str) -> tuple[Path, str]:
    """The package's tarball from the npm registry (kept in the cache; npm checks its integrity) and that sha512."""
    cache = npm_cache()
    cache.mkdir(parents=True, exist_ok=True)
    record = cache / f"{spec.replace('/', '+')}.json"
    if record.is_file():
        known = json.loads(record.read_text())
        tarball = cache / known["filename"]
        if tarball.is_file() and _sha512(tarball) == known["integrity"]:
            return tarball, known["integrity"]
    try:
        done = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", str(cache)], capture_output=True,
                              text=True, timeout=NPM_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise UserError("npm is not installed: install Node.js's npm (Debian: apt install npm) to build an agent "
                        "image") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"npm pack {spec} took over {NPM_TIMEOUT_S} s: check the npm registry is reachable") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"npm pack {spec} failed ({last[:200]}): check the npm registry is reachable")
    packed = json.loads(done.stdout)[0]
    record.write_text(json.dumps({"filename": packed["filename"], "integrity": packed["integrity"]}))
    return cache / packed["filename"], packed["integrity"]


def _sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def _inputs_digest(base_id: str, package: CliPackage, arch: str, integrity: str) -> str:
    binaries = [f"{path} {name}" for path, name in package.binaries]
    digest = hashlib.sha256("\n".join([base_id, package.spec(arch), integrity, *binaries]).encode())
    for name in ENTRY_FILES:
        digest.update(resource(name))
    return f"sha256:{digest.hexdigest()}"


@contextmanager
def _context(tarball: Path, package: CliPackage, arch: str) -> Iterator[IO[bytes]]:
    """The build context: the Dockerfile, the entry files and bin/ with the CLI's binaries out of its tarball."""
    wanted = {path.format(musl=_MUSL[arch]): name for path, name in package.binaries}
    with tempfile.TemporaryFile() as context:
        with tarfile.open(fileobj=context, mode="w") as out, tarfile.open(tarball, mode="r:gz") as npm:
            for name in ENTRY_FILES:
                data = resource(name)
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o755
                out.addfile(info, io.BytesIO(data))
            found = set()
            for member in npm:
                if member.name in wanted and member.isfile():
                    source = npm.extractfile(member)
                    info = tarfile.TarInfo(f"bin/{wanted[member.name]}")
                    info.size, info.mode = member.size, 0o755
                    out.addfile(info, source)
                    found.add(member.name)
            missing = set(wanted) - found
            if missing:
                raise UserError(f"{tarball.name} lacks {', '.join(sorted(missing))}: the CLI's package changed shape")
        context.seek(0)
        yield context

"""The two-node Ray cluster every test of tests/cluster shares (one per test module): a head and a second
`ray start` node on this machine, each started by `autoresearch node head | join` in a workspace of its own,
with logical GPUs and the CPU image; the data prepared once, in a cache both nodes read.

Without Ray the tests that need it skip with the reason; with AUTORESEARCH_REQUIRE_CLUSTER=1 they fail.
"""

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from autoresearch.runner.init import init_workspace
from autoresearch.runner.phases.data import prepare_data
from autoresearch.runner.task_files import default_task_dir

HAS_RAY = importlib.util.find_spec("ray") is not None
HEAD, SECOND = "head", "nodeb"  # the nodes' names (slots are "head/gpu0", "nodeb/gpu0", "nodeb/gpu1", ...)


def require_ray() -> None:
    if HAS_RAY:
        return
    reason = "Ray is not installed (pip install 'autoresearch[cluster]')"
    if os.environ.get("AUTORESEARCH_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"AUTORESEARCH_REQUIRE_CLUSTER=1 but {reason}", pytrace=False)
    pytest.skip(reason=reason)


def cli(cwd: Path, env: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoresearch.runner.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ray_memory_mb(temp_dirs: list[Path]) -> float:
    from autoresearch.runner.executors.ray_node import node_processes

    total = 0
    for temp_dir in temp_dirs:
        for proc in node_processes(temp_dir):
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
    return total / 2**20


class Cluster:
    def __init__(self, root: Path, cache: Path, second_gpus: int = 2):
        self.head_ws = init_workspace(root / "head")
        self.node_ws = init_workspace(root / "node")
        for ws in (self.head_ws, self.node_ws):
            (ws / "autoresearch.toml").write_text('[task]\nsource = "offline"\n[image]\nflavor = "cpu"\n')
        self.env = {**os.environ, "AUTORESEARCH_CACHE": str(cache)}
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.token = self.head_ws / ".autoresearch" / "cluster" / "token"
        self.node_token = self.node_ws / "token"
        self.second_gpus = second_gpus
        self.data: Path | None = None

    def record(self, ws: Path) -> dict:
        return json.loads((ws / ".autoresearch" / "cluster" / "node.json").read_text())

    def start_head(self) -> float:
        started = time.monotonic()
        done = cli(self.head_ws, self.env, "node", "head", "--port", str(self.port), "--gpus", "1", "--name", HEAD)
        assert done.returncode == 0, done.stderr
        self.node_token.write_bytes(self.token.read_bytes())
        self.node_token.chmod(0o600)
        return time.monotonic() - started

    def join(self) -> float:
        started = time.monotonic()
        done = cli(self.node_ws, self.env, "node", "join", self.address, "--token-file", str(self.node_token),
                   "--gpus", str(self.second_gpus), "--name", SECOND)
        assert done.returncode == 0, done.stderr
        return time.monotonic() - started

    def leave(self, ws: Path) -> None:
        cli(ws, self.env, "node", "leave")

    def node_pids(self) -> list[psutil.Process]:
        """The second node's Ray processes (its raylet, its workers, and what they started)."""
        from autoresearch.runner.executors.ray_node import node_processes

        return node_processes(Path(self.record(self.node_ws)["temp_dir"]))

    def raylet(self) -> psutil.Process:
        return next(proc for proc in self.node_pids() if "raylet" in proc.name())


@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory, cpu_image, docker_sandbox):
    """The module's cluster: the head with one logical GPU, the second node with the module's SECOND_NODE_GPUS
    (default 2)."""
    require_ray()
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTORESEARCH_CACHE", str(cache))
        data = prepare_data(docker_sandbox, cpu_image, default_task_dir(), "offline")  # once, for every node
        made = Cluster(tmp_path_factory.mktemp("cluster"), cache, getattr(request.module, "SECOND_NODE_GPUS", 2))
        made.data = data
        try:
            head_s = made.start_head()
            node_s = made.join()
            memory = ray_memory_mb([Path(made.record(ws)["temp_dir"]) for ws in (made.head_ws, made.node_ws)])
            print(f"\ncluster: head up in {head_s:.1f} s, second node joined in {node_s:.1f} s (CLI wall time, "
                  f"fingerprint check included); Ray processes of both nodes: {memory:.0f} MiB RSS")
            yield made
        finally:
            made.leave(made.node_ws)
            made.leave(made.head_ws)

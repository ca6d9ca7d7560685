"""A box's part in a Ray cluster (`autoresearch[cluster]`): the token, the fingerprint, `ray start` and the janitor.

Security of the control plane. Ray 2.60 has token authentication (ray/_private/authentication/: with
RAY_AUTH_MODE=token every gRPC server of the cluster, the GCS, the raylets, the client server and the
dashboard agent, refuses a call without the token, which a process reads from RAY_AUTH_TOKEN_PATH). Every
Ray process this package starts or talks to gets RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH naming the
cluster's token file (0600), never the token in its environment; the dashboard is off. Ray's servers listen
on every interface whatever address the node advertises (`--node-ip-address` only names the address others
dial), so the bind address is the one the head advertises and the token is what keeps others out: on a
shared network, firewall the ports too (README: "Joining boxes").

Ray processes start from a clean environment (ENV_KEEP): the agent's API key and any other secret of the
shell that runs `autoresearch node ...` never reaches a Ray worker, so no job can read it.

The fingerprint is what a node must share with the head for experiments to be comparable and Ray to work:
the package, Ray and Python (down to the patch) versions, the image flavor and its inputs digest, the digest
of the task's prepare.py and of the prepared data's manifest. The head publishes it in the GCS's key-value
store (readable with the token only); `node join` compares before it starts anything.

The janitor is the node's agent outside Ray: a detached process that removes, every few seconds, the
containers and hand-overs its node's slots made (NODE_LABEL) whose slot process is gone or stopped (a
killed Ray worker leaves its containers running; a paused one is lost to the head).
"""

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from autoresearch.runner.errors import UserError

NODE_ENV = "AUTORESEARCH_RAY_NODE"  # every Ray process of a node started here carries its temp dir in it
NODE_LABEL = "autoresearch.node"  # the Ray node (its --node-name) whose slot started a phase
KV_NAMESPACE = b"autoresearch"
KV_FINGERPRINT = b"fingerprint"
ENV_KEEP = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "DOCKER_HOST",
            "DOCKER_CONFIG", "AUTORESEARCH_CACHE", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
JANITOR_INTERVAL_S = 2.0
STOPPED_GRACE_S = 10.0  # a slot process stopped (SIGSTOP, a frozen cgroup) this long counts as gone
CLUSTER_DIR = "cluster"  # under the workspace's state dir (or the cache outside one): token, node state
FIX_VERSIONS = "install the same versions on both boxes (pip install 'autoresearch[cluster]' from the same source)"
FIXES = {
    "package": FIX_VERSIONS, "ray": FIX_VERSIONS,
    "python": "use the same Python on both boxes, down to the patch (Ray refuses to mix them)",
    "flavor": "set the same [image] flavor on both boxes",
    "image_inputs": "rebuild the image on this box from the same package: autoresearch image --force",
    "prepare_py": "use the head's prepare.py (the task must be the same on every box)",
    "data_manifest": "remove this box's prepared data (autoresearch prepare makes it again) or the head's",
}


def require_ray() -> None:
    """A UserError naming the extra when Ray is not installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise UserError("the ray executor and `autoresearch node` need Ray: pip install 'autoresearch[cluster]' "
                        "(or set [executor] name = \"local\")") from None


def ray_version() -> str:
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def package_version() -> str:
    try:
        return importlib.metadata.version("autoresearch")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def cluster_dir(state_dir: Path) -> Path:
    path = state_dir / CLUSTER_DIR
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def ensure_token(path: Path) -> Path:
    """The cluster token at path, made once (64 hex characters, mode 0600)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return read_token_path(path)


def read_token_path(path: Path) -> Path:
    """path, checked to hold a token that only its owner can read."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"no cluster token at {path}: copy the head's token file here (scp HEAD:{path} {path}) "
                        "and pass it with --token-file")
    if path.stat().st_mode & 0o077:
        raise UserError(f"the cluster token {path} can be read by others: chmod 600 {path}")
    if len(path.read_text().strip()) < 32:
        raise UserError(f"{path} holds no cluster token (64 hex characters): copy the head's token file again")
    return path


def auth_env(token_path: Path) -> dict[str, str]:
    """The variables that make a Ray process use token authentication with the token in token_path."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path), "RAY_USAGE_STATS_ENABLED": "0"}


def ray_env(token_path: Path) -> dict[str, str]:
    """A clean environment for `ray start`: what Ray and the sandbox need, and the token's path, nothing else."""
    env = {key: os.environ[key] for key in ENV_KEEP if key in os.environ}
    env.setdefault("PATH", os.defpath)
    return {**env, **auth_env(token_path)}


def use_token(token_path: Path) -> None:
    """Make this process a token-authenticated Ray client (before it imports or connects Ray)."""
    os.environ.update(auth_env(token_path))
    os.environ.pop("RAY_AUTH_TOKEN", None)
    if "ray._raylet" in sys.modules:  # Ray read its config when it was imported: make it read it again
        sys.modules["ray._raylet"].Config.initialize("")


def split_address(address: str, default_port: int = 6379) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host:
        return address, default_port
    if not port.isdigit():
        raise UserError(f"the head's address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379)")
    return host, int(port)


def require_reachable(address: str, timeout_s: float = 3.0) -> None:
    """A one-line UserError when nothing answers at the head's address."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        raise UserError(f"the head {host}:{port} does not answer ({exc.strerror or exc}): start it there with "
                        "`autoresearch node head --bind IP`, check the address and that the port is open "
                        f"(or forward it: ssh -L {port}:localhost:{port} HEAD)") from None


# --- the fingerprint ---------------------------------------------------------------------------------------

def local_fingerprint(flavor: str, task_dir: Path, data: Path | None = None) -> dict[str, str | None]:
    """What this box must share with the others; data: the prepared data folder (None: not prepared here)."""
    manifest = (data / "manifest.json") if data is not None else None
    return {
        "package": package_version(),
        "ray": ray_version(),
        "python": platform.python_version(),
        "flavor": flavor,
        "image_inputs": image_inputs(flavor),
        "prepare_py": _digest((task_dir / "prepare.py").read_bytes()),
        "data_manifest": _digest(manifest.read_bytes()) if manifest is not None and manifest.exists() else None,
    }


def image_inputs(flavor: str) -> str | None:
    """The inputs digest the flavor's experiment image carries here (None: no image, or no engine)."""
    try:
        from autoresearch.runner.sandbox.engine import connect
        from autoresearch.runner.sandbox.images import INPUTS_LABEL, image_tag

        client = connect()
    except Exception:
        return None
    try:
        return client.images.get(image_tag(flavor)).labels.get(INPUTS_LABEL)
    except Exception:
        return None
    finally:
        client.close()


def mismatch(head: dict, mine: dict) -> str | None:
    """One line naming what differs between the head's fingerprint and this box's, and the fix; None: they match.

    A value either side lacks (data not prepared yet) is not compared, except the image: a node needs it."""
    for key, fix in FIXES.items():
        theirs, ours = head.get(key), mine.get(key)
        if key == "image_inputs" and ours is None and theirs is not None:
            return (f"this box has no {mine.get('flavor')} experiment image: build it with `autoresearch image "
                    f"--flavor {mine.get('flavor')}`")
        if theirs is None or ours is None or theirs == ours:
            continue
        return f"this box's {key.replace('_', ' ')} is {_short(ours)} but the head's is {_short(theirs)}: {fix}"
    return None


def publish_fingerprint(address: str, fingerprint: dict) -> None:
    _gcs(address).internal_kv_put(KV_FINGERPRINT, json.dumps(fingerprint).encode(), True, KV_NAMESPACE, timeout=10)


def read_fingerprint(address: str) -> dict:
    """The head's published fingerprint (this process uses the token: use_token first)."""
    from ray.exceptions import AuthenticationError, RpcError

    try:
        raw = _gcs(address).internal_kv_get(KV_FINGERPRINT, KV_NAMESPACE, timeout=10)
    except AuthenticationError:
        raise UserError(f"the head {address} refused this box's token: copy the head's token file here "
                        "(.autoresearch/cluster/token in its workspace) and pass it with --token-file") from None
    except RpcError as exc:
        raise UserError(f"the head {address} answers but not as a Ray head ({str(exc).splitlines()[0][:160]}): "
                        "check the port (the head prints it)") from None
    if not raw:
        raise UserError(f"the head {address} published no fingerprint: start it with `autoresearch node head`")
    return json.loads(raw)


def _gcs(address: str):
    from ray._raylet import GcsClient

    return GcsClient(address=address)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:16] + "..."


# --- starting and stopping this box's Ray node -------------------------------------------------------------

def ray_binary() -> str:
    found = shutil.which("ray", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if found is None:
        raise UserError("the `ray` command is not installed beside this Python: pip install 'autoresearch[cluster]'")
    return found


def start_node(*, token_path: Path, node_name: str, ip: str, temp_dir: Path, gpus: int, head_port: int | None = None,
               address: str | None = None, timeout_s: float = 120) -> float:
    """`ray start` a head (head_port) or a worker joining address, token on, dashboard off; its seconds."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    command = [ray_binary(), "start", f"--node-ip-address={ip}", f"--node-name={node_name}", f"--num-gpus={gpus}",
               f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    if head_port is not None:
        command += ["--head", f"--port={head_port}", "--include-dashboard=false"]
    else:
        command += [f"--address={address}"]
    started = time.monotonic()
    try:
        done = subprocess.run(command, env={**ray_env(token_path), NODE_ENV: str(temp_dir)}, capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise UserError(f"`ray start` did not finish in {timeout_s:.0f} s: see the logs in {temp_dir}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        last = (errors or lines or [""])[-1]
        raise UserError(f"`ray start` failed: {last.strip()[:240]} (logs: {temp_dir})")
    return time.monotonic() - started


def node_processes(temp_dir: Path) -> list:
    """This node's Ray processes (their environment or command line names its temp dir) and their descendants."""
    import psutil

    marker = str(temp_dir)
    mine = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid not in mine and (any(marker in arg for arg in proc.info["cmdline"] or [])
                                         or proc.environ().get(NODE_ENV) == marker):
                roots.append(proc)
    found = {proc.pid: proc for proc in roots}
    for proc in roots:
        with contextlib.suppress(psutil.Error):
            found.update({child.pid: child for child in proc.children(recursive=True)})
    return list(found.values())


def stop_node(temp_dir: Path, grace_s: float = 10.0) -> int:
    """Stop this node's Ray processes (SIGTERM, then SIGKILL after grace_s); how many there were.

    Not `ray stop`: that stops every Ray process of the machine, other nodes and other users' included."""
    import psutil

    procs = node_processes(temp_dir)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return len(procs)


def gpu_count() -> int:
    from autoresearch.runner.sandbox.gpus import visible_gpus

    return len(visible_gpus())


# --- the janitor -------------------------------------------------------------------------------------------

def start_janitor(node_name: str, sandbox: str, pid_file: Path, log: Path) -> int:
    """Start this node's janitor, detached (its own session), unless one runs; its pid."""
    running = _pid_in(pid_file)
    if running is not None:
        return running
    env = {key: os.environ[key] for key in ENV_KEEP if key in os.environ}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "autoresearch.runner.executors.ray_node", "janitor",
                                 node_name, sandbox], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=env, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def stop_janitor(pid_file: Path) -> None:
    pid = _pid_in(pid_file)
    if pid is not None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    pid_file.unlink(missing_ok=True)


def _pid_in(pid_file: Path) -> int | None:
    import psutil

    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return None
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return None
    return pid if "janitor" in cmdline else None


class SlotLiveness:
    """alive(pid) for the janitor: the pid runs, and has not been stopped for STOPPED_GRACE_S or more."""

    def __init__(self, grace_s: float = STOPPED_GRACE_S, clock: Callable[[], float] = time.monotonic):
        self.grace_s, self.clock = grace_s, clock
        self.stopped_since: dict[int, float] = {}

    def __call__(self, pid: int) -> bool:
        import psutil

        try:
            status = psutil.Process(pid).status()
        except psutil.Error:
            return False
        if status == psutil.STATUS_ZOMBIE:
            return False
        if status != psutil.STATUS_STOPPED:
            self.stopped_since.pop(pid, None)
            return True
        since = self.stopped_since.setdefault(pid, self.clock())
        return self.clock() - since < self.grace_s


def janitor(node_name: str, sandbox_name: str, interval_s: float = JANITOR_INTERVAL_S) -> None:
    """Remove what this node's slots left behind when their slot process is gone, every interval_s, until killed."""
    from autoresearch.runner.sandbox.registry import open_sandbox

    sandbox = open_sandbox(sandbox_name, insisted=True)
    alive = SlotLiveness()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        try:
            removed = sandbox.remove_orphans({NODE_LABEL: node_name}, alive)
        except Exception as exc:  # the engine restarting: try again next round
            print(f"janitor: {type(exc).__name__}: {exc}", flush=True)
        else:
            if removed:
                print(f"janitor: removed {', '.join(removed)}", flush=True)
        time.sleep(interval_s)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "janitor":
        janitor(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m autoresearch.runner.executors.ray_node janitor NODE_NAME SANDBOX")

"""`autoresearch node head | join | leave`: this box's part in a Ray cluster (`autoresearch[cluster]`).

`head` starts the Ray head (token authentication on, the token made once into .autoresearch/cluster/token,
mode 0600; dashboard off; advertised on --bind) and publishes the fingerprint a joining box must match;
`join HEAD` compares this box's fingerprint with the head's, refuses a mismatch or an unreachable head with
one line and the fix, and starts a Ray worker node with this box's GPUs; `leave` stops this box's node and
removes what its slots left. runner/executors/ray_node.py does the work.
"""

import argparse
import json
import socket
import sys
import time
from pathlib import Path

from autoresearch.runner.errors import UserError

NODE_FILE = "node.json"  # this box's node: its role, name, Ray temp dir, the head's address
HEAD_FILE = "head.json"  # the head this workspace started: where the executor finds it


def register(sub: argparse._SubParsersAction) -> None:
    node = sub.add_parser("node", help="this box in a Ray cluster: start the head, join one, leave "
                                       "(needs autoresearch[cluster])")
    verbs = node.add_subparsers(dest="node_command", required=True, metavar="VERB")
    head = verbs.add_parser("head", help="start the Ray head here: token on, dashboard off, on --bind")
    head.add_argument("--bind", help="the address other boxes reach this one at (default: [cluster] bind, "
                                     "127.0.0.1); a private network's or an SSH tunnel's, never a public one")
    head.add_argument("--port", type=int, help="the head's port (default: [cluster] port, 6379)")
    _node_flags(head)
    head.set_defaults(func=cmd_head)
    join = verbs.add_parser("join", help="check this box against the head, then start a Ray worker node here")
    join.add_argument("head", metavar="HEAD", help="the head's HOST:PORT, as `node head` printed it")
    join.add_argument("--token-file", type=Path, help="the head's token file, copied here (default: [cluster] "
                                                      "token_file, else .autoresearch/cluster/token)")
    join.add_argument("--ip", help="the address the head reaches this box at (default: the one the route to the "
                                   "head leaves from)")
    _node_flags(join)
    join.set_defaults(func=cmd_join)
    leave = verbs.add_parser("leave", help="stop this box's Ray node and remove what its slots left behind")
    leave.set_defaults(func=cmd_leave)


def _node_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", type=int, help="the GPUs this node offers (default: every GPU NVML sees; "
                                                 "logical ones on CPU, for tests)")
    parser.add_argument("--name", help="this node's name in slot names and the TUI (default: the host name)")


def cmd_head(args: argparse.Namespace) -> int:
    from autoresearch.runner.executors import ray_node

    ray_node.require_ray()
    ws, settings = _context()
    cluster = settings.config.cluster
    bind = args.bind or cluster.bind
    port = args.port or cluster.port
    if bind in ("0.0.0.0", "::", ""):
        raise UserError(f"--bind {bind!r} names no one interface: give the address of the private network or the "
                        "SSH tunnel the nodes reach this box at (127.0.0.1 for one box)")
    state = ray_node.cluster_dir(ws.state_dir)
    _refuse_running(state)
    token = ray_node.ensure_token(Path(cluster.token_file).expanduser() if cluster.token_file else state / "token")
    name = args.name or socket.gethostname()
    temp_dir = _temp_dir(state, "head")
    gpus = args.gpus if args.gpus is not None else ray_node.gpu_count()
    seconds = ray_node.start_node(token_path=token, node_name=name, ip=bind, temp_dir=temp_dir, gpus=gpus,
                                  head_port=port)
    address = f"{bind}:{port}"
    ray_node.use_token(token)
    fingerprint = ray_node.local_fingerprint(settings.flavor, ws.task_dir, _prepared_data(ws, settings))
    try:
        ray_node.publish_fingerprint(address, fingerprint)
    except Exception as exc:
        ray_node.stop_node(temp_dir)
        raise UserError(f"the head started but did not take its fingerprint ({str(exc).splitlines()[0][:160]}): "
                        f"see the logs in {temp_dir}") from None
    record = {"role": "head", "name": name, "address": address, "temp_dir": str(temp_dir), "token": str(token),
              "sandbox": settings.sandbox, "started": time.time()}
    _write(state / NODE_FILE, record)
    _write(state / HEAD_FILE, record)
    ray_node.start_janitor(name, settings.sandbox, state / "janitor.pid", state / "janitor.log")
    print(f"head {name} at {address} in {seconds:.1f} s with {gpus} GPU(s); token {token} (mode 0600)")
    print(f"join from another box: copy the token there, then `autoresearch node join {address} --token-file FILE`")
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    from autoresearch.runner.executors import ray_node

    ray_node.require_ray()
    ws, settings = _context()
    cluster = settings.config.cluster
    state = ray_node.cluster_dir(ws.state_dir)
    _refuse_running(state)
    token_file = args.token_file or (Path(cluster.token_file).expanduser() if cluster.token_file else state / "token")
    token = ray_node.read_token_path(token_file)
    host, port = ray_node.split_address(args.head, cluster.port)
    address = f"{host}:{port}"
    ray_node.require_reachable(address)
    ray_node.use_token(token)
    head = ray_node.read_fingerprint(address)
    mine = ray_node.local_fingerprint(head.get("flavor") or settings.flavor, ws.task_dir,
                                      _prepared_data(ws, settings))
    problem = ray_node.mismatch(head, mine)
    if problem is not None:
        raise UserError(f"refusing to join {address}: {problem}")
    name = args.name or socket.gethostname()
    temp_dir = _temp_dir(state, "node")
    gpus = args.gpus if args.gpus is not None else ray_node.gpu_count()
    ip = args.ip or _route_address(host, port)
    seconds = ray_node.start_node(token_path=token, node_name=name, ip=ip, temp_dir=temp_dir, gpus=gpus,
                                  address=address)
    _write(state / NODE_FILE, {"role": "node", "name": name, "address": address, "temp_dir": str(temp_dir),
                               "token": str(token), "sandbox": settings.sandbox, "started": time.time()})
    ray_node.start_janitor(name, settings.sandbox, state / "janitor.pid", state / "janitor.log")
    print(f"node {name} ({ip}) joined {address} in {seconds:.1f} s with {gpus} GPU(s)")
    return 0


def cmd_leave(args: argparse.Namespace) -> int:
    from autoresearch.runner.executors import ray_node

    ws, _ = _context()
    state = ray_node.cluster_dir(ws.state_dir)
    record = _read(state / NODE_FILE)
    if record is None:
        raise UserError("this box runs no node of this workspace: nothing to leave")
    stopped = ray_node.stop_node(Path(record["temp_dir"]))
    removed = _final_cleanup(record)
    ray_node.stop_janitor(state / "janitor.pid")
    (state / NODE_FILE).unlink(missing_ok=True)
    if record.get("role") == "head":
        (state / HEAD_FILE).unlink(missing_ok=True)
    print(f"{record['role']} {record['name']} left: {stopped} Ray process(es) stopped, "
          f"{len(removed)} leftover(s) removed")
    return 0


def _context():
    from autoresearch.runner.settings import resolve_settings
    from autoresearch.runner.workspace import find_workspace

    ws = find_workspace()
    return ws, resolve_settings(ws)


def _prepared_data(ws, settings) -> Path | None:
    """The workspace's prepared data folder for its source, when there is one (auto: whichever is prepared)."""
    from autoresearch.runner.phases.data import data_dir, read_manifest

    sources = ("web", "offline") if settings.source == "auto" else (settings.source,)
    for source in sources:
        folder = data_dir(ws.task_dir, source)
        if read_manifest(folder) is not None:
            return folder
    return None


def _final_cleanup(record: dict) -> list[str]:
    from autoresearch.runner.executors.ray_node import NODE_LABEL, SlotLiveness
    from autoresearch.runner.sandbox.registry import open_sandbox

    try:
        sandbox = open_sandbox(record.get("sandbox", "docker"), insisted=True)
    except UserError as exc:
        print(f"autoresearch: leftovers not removed ({exc})", file=sys.stderr)
        return []
    try:
        return sandbox.remove_orphans({NODE_LABEL: record["name"]}, SlotLiveness())
    finally:
        sandbox.close()


def _refuse_running(state: Path) -> None:
    from autoresearch.runner.executors.ray_node import node_processes

    record = _read(state / NODE_FILE)
    if record is not None and node_processes(Path(record["temp_dir"])):
        raise UserError(f"this box already runs the {record['role']} {record['name']} of {record['address']}: "
                        "`autoresearch node leave` first")


def _temp_dir(state: Path, role: str) -> Path:
    """Ray's folder for this node: short (Ray's socket paths must fit 107 bytes), one per workspace and role."""
    import hashlib
    import tempfile

    digest = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"ar-ray-{role}-{digest}"


def _route_address(host: str, port: int) -> str:
    """The local address the route to host leaves from (what the head reaches this box at)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, port))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1))


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

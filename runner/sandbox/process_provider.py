"""Running phases as plain processes under resource limits: for machines where Docker is absent.

Many rented GPU machines are themselves containers without a Docker engine. There this provider runs
each phase as a process of the runner's own user, in a fresh private folder (the phase root), and
applies what an unprivileged process can apply. It is much weaker than a container, which is why
`open_sandbox` refuses it unless it is named, and why `isolated` is False and `NOTICE` says so.

What a phase gets (compared with the docker provider's container):

- Its mounts, laid out under the phase root (root/task/prepare.py, root/data/<file>, root/handover,
  root/verdict ...), and every command argument and environment value naming a mount target (or a
  path under one, or under /task, /data, /tmp ...) rewritten to the root-prefixed path; a leading
  `python3` becomes the checked interpreter; the working directory is root/task.
  * Read-only files and folders are COPIED into the root (regular files, folders and links as links,
    never followed; anything else becomes an empty FIFO so that the scorer still refuses it): a write,
    even by a process that chmods its copy, never reaches the host's file.
  * Writable folders (the verdict folder, the hand-over being trained into, prepare's output) are
    symlinks in the root to the host folder: the phase writes the host folder itself, as with a bind
    mount, and nothing is copied (a prepared data set is not doubled). prepare.py opens the verdict
    and the hand-over's file with O_NOFOLLOW / lstat on the last component only, so a linked folder
    is fine. No mount may lie under a writable folder mount (it would be materialised on the host).
  * Writable files (the candidate's own train.py) are copied in and copied back over the host file
    when the phase ends (a regular file only, never through a link). A link would not do: Python puts
    the directory of a script's *resolved* path first on sys.path, so a linked train.py could not
    `import prepare` from root/task.
- The environment: only the spec's, a minimal PATH (the interpreter's folder first), HOME and TMPDIR
  inside the root, LANG, PYTHONNOUSERSITE=1, PYTHONDONTWRITEBYTECODE=1 and CUDA_VISIBLE_DEVICES (the
  assigned GPU, or empty for a CPU phase). The runner's environment (API keys) is never passed on.
- Limits: a new session (start_new_session), RLIMIT_CORE 0, RLIMIT_NOFILE, RLIMIT_FSIZE (the largest
  file: the tmpfs size), CPU affinity to ceil(cpus) cores. Memory cannot be capped with RLIMIT_AS (it
  breaks CUDA and torch's allocator): a watcher sums the resident memory of the session's processes
  every WATCH_INTERVAL_S and kills the session past Resources.memory (reported as oom_killed, as the
  kernel's OOM kill is in a container). The same watcher counts threads (pids_limit: killed_by
  "pids_cap"), the hand-over's size and entries (size_mb, HANDOVER_MAX_FILES: "disk_cap", checked
  once more after the phase ends so that a last write cannot slip past) and the root's own size
  (tmpfs size plus the copies: "disk_cap"). The deadline is a kill with reason DEADLINE.
- The Watch callback gets the phase's first process and a kill(reason) that SIGKILLs the whole
  session once and records the reason; when the first process exits, whatever it left in its session
  is killed too (a container's processes end with its init).

What is weaker than Docker, and cannot be helped without privileges:

- No filesystem isolation: the phase runs as the runner's user (root if the runner is root) and can
  read and write whatever that user can: the workspace, ~/.ssh, the runner's state, other
  experiments' hand-overs. The layout above keeps honest code to its mounts; it confines nothing.
- No network isolation unless the kernel lets an unprivileged process make its own network namespace:
  with spec.network False each phase tries unshare(CLONE_NEWNET) (with CAP_SYS_ADMIN), else CLONE_NEWUSER |
  CLONE_NEWNET (otherwise), and brings its loopback up. Where that is refused (most containers' seccomp
  profiles refuse it) THE PHASE CAN REACH THE NETWORK; `network_cut` says which it is on this machine
  and `notice()` says it in words.
- Paths are rewritten where they are whole arguments or environment values, not inside program text:
  code that writes a literal "/handover" (rather than the AUTORESEARCH_HANDOVER the task gives it, or
  prepare.HANDOVER_DIR) reaches the machine's own /handover, which a container would have hidden.
- No pid, IPC or user namespace; a process that calls setsid() leaves the session and escapes the
  kills; resident memory is polled, not enforced by the kernel (a fast allocation can overshoot for one
  interval, and memory shared between forked processes is counted twice); the hand-over's cap is
  polled, not a tmpfs that refuses the write.

`notice()` (NOTICE with the network's state) is what the runner's warning says when a run starts on this
provider; the TUI and the store name the provider (runner/record/views.py: NOT ISOLATED).
"""

import contextlib
import ctypes
import fcntl
import json
import math
import os
import re
import resource
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import psutil

from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox.base import (
    DEADLINE,
    LABEL,
    Mount,
    PhaseResult,
    PhaseSpec,
    SandboxUnavailable,
    Watch,
    ended_phase,
    parse_cpuset,
)
from autoresearch.runner.sandbox.files import copy_file, remove_tree
from autoresearch.runner.sandbox.flavors import resolve_flavor
from autoresearch.runner.sandbox.leftovers import (
    end_session,
    kill_session,
    orphaned,
    read_record,
    session_members,
    start_time,
    write_record,
)
from autoresearch.runner.sandbox.logs import CappedLog, copy_lines
from autoresearch.runner.sandbox.monitor import Monitor

NOTICE = ("process sandbox: NO ISOLATION - phases run as plain processes of this user, with its files{network}; "
          "only resource limits and the deadline apply")
IMAGE_PREFIX = "process:"
PHASE_PREFIX = "autoresearch-phase-"
HANDOVER_PREFIX = "autoresearch-handover-"
HANDOVER_MAX_FILES = 16  # entries in a hand-over (the docker provider's tmpfs has 16 inodes)
WATCH_INTERVAL_S = 0.2  # the watcher's period: memory, threads, hand-over
ROOT_CHECK_EVERY = 5  # the root's size is walked every this many watcher periods
EXIT_POLL_S = 0.05
MAX_OPEN_FILES = 4096
_STUCK_STREAMS: list = []  # output pipes still held by a process that left its session (see _follow)
MAX_COPY_ENTRIES = 10_000  # a read-only folder mount with more is refused
PROBE_TIMEOUT_S = 300
PROBED_MODULES = ("torch", "numpy", "tiktoken")  # what task/prepare.py imports at its top
MEMORY_CAP = "memory"  # internal: the watcher's memory kill (reported as oom_killed, as a kernel OOM kill is)
PIDS_CAP = "pids_cap"
DISK_CAP = "disk_cap"
RUNNER_FAILED = "runner"  # killed_by when the runner itself failed while a phase ran
SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
RESERVED = ("/task", "/tmp")  # rewritten like mount targets: the working directory and the phase's /tmp

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IFREQ = "16sH22x"  # struct ifreq on 64-bit Linux: the name, then the flags in a 24-byte union


def parse_size(text: str | int) -> int:
    """Bytes in a Docker size string ("8g", "512m", "64mb", "1024"); ValueError when malformed."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", str(text).lower())
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 512m or 8g)")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2)])


def state_dir() -> Path:
    """Where this provider keeps its hand-overs and its records of running phases."""
    cache = Path(os.environ.get("AUTORESEARCH_CACHE", "~/.cache/autoresearch")).expanduser()
    return cache / "process-sandbox"


# ---------------------------------------------------------------------------------------------------
# The interpreter


PROBE = """
import importlib, json, sys
missing, versions = [], {}
for name in sys.argv[2:]:
    try:
        versions[name] = getattr(importlib.import_module(name), "__version__", "?")
    except Exception as exc:
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
cuda = None
if not missing and sys.argv[1] == "cuda":
    import torch
    cuda = bool(torch.cuda.is_available())
print(json.dumps({"missing": missing, "versions": versions, "cuda": cuda}))
"""


def probe_interpreter(interpreter: str, flavor: str) -> dict:
    """What interpreter can do, asked in a clean subprocess: {"missing": [...], "versions": {...}, "cuda": ...};
    {"error": "..."} when it does not run at all."""
    try:
        done = subprocess.run([interpreter, "-I", "-c", PROBE, flavor, *PROBED_MODULES], capture_output=True,
                              text=True, timeout=PROBE_TIMEOUT_S, env=base_environment(interpreter, Path("/tmp")),
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit code {done.returncode}: {last[:200]}"}


def base_environment(interpreter: str, root: Path) -> dict[str, str]:
    """The environment every phase starts from: nothing of the runner's own."""
    path = [os.path.dirname(interpreter), "/usr/local/bin", "/usr/bin", "/bin"]
    return {
        "PATH": ":".join(dict.fromkeys(p for p in path if p)),
        "HOME": str(root / "home"),
        "TMPDIR": str(root / "tmp"),
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


# ---------------------------------------------------------------------------------------------------
# Cutting the network (best effort, in the child between fork and exec)


def _libc_unshare() -> Callable[[int], int] | None:
    if hasattr(os, "unshare"):  # Python 3.12+

        def call(flags: int) -> int:
            try:
                os.unshare(flags)
            except OSError:
                return -1
            return 0

        return call
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.unshare
    except (OSError, AttributeError):
        return None


_UNSHARE = _libc_unshare()


def _cut_network(uid: int, gid: int) -> bool:
    """Move the calling process into a network namespace of its own (loopback only, brought up)."""
    if _UNSHARE is None:
        return False
    if _UNSHARE(CLONE_NEWNET) != 0:
        if _UNSHARE(CLONE_NEWUSER | CLONE_NEWNET) != 0:
            return False
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            try:
                fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
                try:
                    os.write(fd, text.encode())
                finally:
                    os.close(fd)
            except OSError:
                pass  # the namespace holds anyway; only the identity inside it is less tidy
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack(IFREQ, fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack(IFREQ, b"lo", 0)))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags | IFF_UP))
    return True


@dataclass(frozen=True)
class Limits:
    """What the child sets on itself before exec (computed in the parent: only syscalls after fork)."""

    max_file_bytes: int
    open_files: int
    cpus: tuple[int, ...] | None
    cut_network: bool
    report_fd: int | None  # where the child writes b"1" (network cut) or b"0"
    uid: int
    gid: int

    def apply(self) -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.max_file_bytes, self.max_file_bytes))
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)
        if self.cut_network:
            cut = False
            with contextlib.suppress(Exception):
                cut = _cut_network(self.uid, self.gid)
            if self.report_fd is not None:
                os.write(self.report_fd, b"1" if cut else b"0")


def limits_for(spec: PhaseSpec, report_fd: int | None) -> Limits:
    """The rlimits, CPU set and network cut of spec."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    open_files = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(MAX_OPEN_FILES, hard)
    cpus = None
    allowed = sorted(os.sched_getaffinity(0))
    if spec.resources.cpuset:
        allowed = [core for core in allowed if core in set(parse_cpuset(spec.resources.cpuset))] or allowed
        cpus = tuple(allowed)
    if spec.resources.cpus:
        cpus = tuple(allowed[:max(1, math.ceil(spec.resources.cpus))])
    return Limits(parse_size(spec.resources.tmpfs_size), open_files, cpus, not spec.network, report_fd,
                  os.getuid(), os.getgid())


def network_cut_works() -> bool:
    """Whether a child of this process can make a network namespace of its own (probed once, by a child)."""
    read_fd, write_fd = os.pipe()
    limits = Limits(2**30, MAX_OPEN_FILES, None, True, write_fd, os.getuid(), os.getgid())
    try:
        subprocess.run([sys.executable, "-S", "-c", ""], preexec_fn=limits.apply, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={}, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as report:
        return report.read(1) == b"1"


# ---------------------------------------------------------------------------------------------------
# Sessions: the unit that is watched and killed


def _exited(pid: int) -> bool:
    """Whether child pid has ended, without reaping it (its pid, and so its session id, stay reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None
    except ChildProcessError:
        return True


# ---------------------------------------------------------------------------------------------------
# Files: copies and sizes that never follow links (runner/sandbox/files.py: one file, removal)


def copy_entry(source: Path, dest: Path, budget: list[int]) -> int:
    """Copy source to dest as it is: regular files (read with O_NOFOLLOW), folders, links as links (never
    followed); anything else becomes an empty FIFO, still not a regular file. Returns the bytes copied."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"{source} holds more than {MAX_COPY_ENTRIES} entries")
    mode = os.lstat(source).st_mode
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(source), dest)
        return 0
    if stat.S_ISDIR(mode):
        dest.mkdir()
        return sum(copy_entry(source / name, dest / name, budget) for name in sorted(os.listdir(source)))
    if not stat.S_ISREG(mode):
        os.mkfifo(dest, 0o400)
        return 0
    return copy_file(source, dest)


def tree_size(path: Path, max_entries: int | None = None) -> tuple[int, int]:
    """(bytes, entries) under path, never following links; counting stops past max_entries."""
    total, entries = 0, 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as listing:
                for entry in listing:
                    entries += 1
                    if max_entries is not None and entries > max_entries:
                        return total, entries
                    with contextlib.suppress(OSError):
                        info = entry.stat(follow_symlinks=False)
                        total += info.st_size if stat.S_ISREG(info.st_mode) else 0
                        if stat.S_ISDIR(info.st_mode):
                            stack.append(Path(entry.path))
        except OSError:
            continue
    return total, entries


# ---------------------------------------------------------------------------------------------------
# The hand-over


@dataclass
class ProcessHandover:
    """A private folder (0700) under the provider's state folder, its labels and caps in a JSON beside it.

    No tmpfs caps it: while a phase that may write it runs, the provider's watcher kills that phase with
    "disk_cap" when it holds more than size_mb or HANDOVER_MAX_FILES entries, and checks once more at exit.
    """

    path: Path
    record: Path

    @property
    def name(self) -> str:
        return self.path.name

    def mount(self, target: str = "/handover", read_only: bool = True) -> Mount:
        return Mount(str(self.path), target, read_only=read_only, volume=True)

    def release(self) -> None:
        """Remove the folder (and the model in it), then its record; safe to call twice."""
        remove_tree(self.path)
        with contextlib.suppress(FileNotFoundError):
            self.record.unlink()


# ---------------------------------------------------------------------------------------------------
# One phase


@dataclass
class Layout:
    """A spec's mounts materialised under a phase root."""

    root: Path
    prefixes: list[str]  # absolute paths rewritten to root-prefixed ones (longest first)
    copied_bytes: int  # bytes copied into the root (read-only and writable file mounts)
    copy_back: list[tuple[Path, Path]]  # (in the root, on the host): writable files
    handovers: list[tuple[Path, int]]  # writable hand-over folders and their caps in bytes

    def rewrite(self, value: str) -> str:
        """value with a leading mount target (or a path under one) prefixed by the root."""
        if "=" in value and not value.startswith("/"):  # --out=/data
            key, _, rest = value.partition("=")
            return f"{key}={self.rewrite(rest)}" if rest.startswith("/") else value
        for prefix in self.prefixes:
            if value == prefix or value.startswith(prefix + "/"):
                return str(self.root) + value
        return value

    def rewrite_env(self, value: str) -> str:
        """An environment value: each ':'-separated path rewritten (PYTHONPATH=/task:/x)."""
        return ":".join(self.rewrite(part) for part in value.split(":"))


def materialise(root: Path, mounts: list[Mount], handover_cap: Callable[[Path], int]) -> Layout:
    """Lay mounts out under root: read-only ones copied, writable folders linked, writable files copied
    (and copied back by the caller)."""
    targets = []
    for mount in mounts:
        target = PurePosixPath(mount.target)
        if not target.is_absolute() or ".." in target.parts or len(target.parts) < 2 or str(target) != mount.target:
            raise ValueError(f"mount target {mount.target!r} is not a normalised absolute path below /")
        targets.append(target)
    linked: list[PurePosixPath] = []
    copied, copy_back, handovers = 0, [], []
    for mount, target in sorted(zip(mounts, targets, strict=True), key=lambda pair: len(pair[1].parts)):
        if any(target == folder or folder in target.parents for folder in linked):
            raise ValueError(f"mount {mount.target} lies under a writable folder mount: not supported by the "
                             f"process sandbox (it would land on the host)")
        dest = root.joinpath(*target.parts[1:])
        dest.parent.mkdir(parents=True, exist_ok=True)
        source = Path(mount.source)
        if not mount.volume:
            source = source.resolve()  # a bind mount shows what a linked source points to; inside, links stay links
        if mount.volume:
            cap = handover_cap(source)
            if not mount.read_only:
                handovers.append((source, cap))
        if mount.read_only:
            if not os.path.isdir(source) and not os.path.isfile(source):
                raise ValueError(f"mount source {source} is missing")
            copied += copy_entry(source, dest, [MAX_COPY_ENTRIES])
        elif source.is_dir():
            os.symlink(source.resolve(), dest)
            linked.append(target)
        else:
            copied += copy_file(source, dest, 0o644)
            copy_back.append((dest, source))
    prefixes = {str(t) for t in targets} | {"/" + t.parts[1] for t in targets} | set(RESERVED)
    return Layout(root, sorted(prefixes, key=len, reverse=True), copied, copy_back, handovers)


def copy_back(layout: Layout, max_bytes: int) -> None:
    """Write each writable file's copy back over its host file: a regular file of at most max_bytes only."""
    for inside, host in layout.copy_back:
        try:
            info = os.lstat(inside)
        except OSError:
            continue  # the phase removed it: the host keeps its file, as a bind mount's target would
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            continue
        fd = os.open(inside, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as src:
            out = os.open(host, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
            with os.fdopen(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 2**20)


class Phase:
    """One running phase: its process, its kills and its watcher."""

    def __init__(self, process: subprocess.Popen, spec: PhaseSpec, layout: Layout):
        self.process, self.spec, self.layout = process, spec, layout
        self.sid = process.pid  # start_new_session: the first process leads its own session and group
        self.killed_by: str | None = None
        self.oom_killed = False
        self._killed = False
        self._reaped = False  # once the first process is reaped its pid (the session's id) may be reused
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.memory_cap = parse_size(spec.resources.memory)
        self.root_cap = parse_size(spec.resources.tmpfs_size) + layout.copied_bytes
        self._watcher = threading.Thread(target=self._watch, name="process-sandbox-watch", daemon=True)

    def kill(self, reason: str) -> None:
        """Kill the whole session, once, recording why (the Watch's kill)."""
        with self._lock:
            if self._killed or self._reaped:
                return
            self._killed = True
            if reason == MEMORY_CAP:
                self.oom_killed = True
            else:
                self.killed_by = reason
        kill_session(self.sid)

    def reaping(self) -> None:
        """No kill from now on: the first process is about to be reaped."""
        with self._lock:
            self._reaped = True

    def start_watching(self) -> None:
        self._watcher.start()

    def stop_watching(self) -> None:
        self._done.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=5)

    def _watch(self) -> None:
        tick = 0
        while not self._done.wait(WATCH_INTERVAL_S):
            self.check(tick % ROOT_CHECK_EVERY == 0)
            tick += 1

    def check(self, with_root: bool = True) -> None:
        """One look at the phase's memory, threads and writable places; kill it when one is past its cap."""
        rss, threads = 0, 0
        for pid in session_members(self.sid):
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    threads += proc.num_threads()
        if rss > self.memory_cap:
            self.kill(MEMORY_CAP)
        elif threads > self.spec.resources.pids_limit:
            self.kill(PIDS_CAP)
        elif self.over_disk_cap(with_root):
            self.kill(DISK_CAP)

    def over_disk_cap(self, with_root: bool = True) -> bool:
        for folder, cap in self.layout.handovers:
            size, entries = tree_size(folder, HANDOVER_MAX_FILES)
            if size > cap or entries > HANDOVER_MAX_FILES:
                return True
        return with_root and tree_size(self.layout.root)[0] > self.root_cap


# ---------------------------------------------------------------------------------------------------
# The provider


class ProcessSandbox:
    """Phases as plain processes under resource limits (see the module's docstring for what that lacks)."""

    name = "process"
    isolated = False

    def __init__(self, interpreter: str | None = None, state: Path | None = None, temp: Path | None = None):
        """interpreter: the Python phases run with (this one by default); state: the provider's folder
        (hand-overs, records of running phases); temp: where phase roots are made (the system's default)."""
        self.interpreter = interpreter or sys.executable
        self.state = state or state_dir()
        self.temp = temp
        self._probed: dict[tuple[str, str], dict] = {}
        self._network_cut: bool | None = None

    @classmethod
    def open(cls) -> "ProcessSandbox":
        sandbox = cls()
        if not os.access(sandbox.interpreter, os.X_OK):
            raise SandboxUnavailable(f"the process sandbox's interpreter {sandbox.interpreter} cannot be run")
        return sandbox

    # -- what is announced ----------------------------------------------------------------------

    @property
    def network_cut(self) -> bool:
        """Whether phases without network really get none here (a namespace of their own)."""
        if self._network_cut is None:
            self._network_cut = network_cut_works()
        return self._network_cut

    def notice(self) -> str:
        """The one line screens and records show when this provider ran a run's phases."""
        network = (", but no network (a namespace of their own)" if self.network_cut
                   else " and its network (this machine does not let a process cut it)")
        return NOTICE.format(network=network)

    # -- the interface ---------------------------------------------------------------------------

    def image(self, flavor: str) -> str:
        """The interpreter phases of flavor run with, checked once: it imports the task's modules (and, for
        cuda, sees a GPU)."""
        flavor = resolve_flavor(flavor)
        key = (self.interpreter, flavor)
        if key not in self._probed:
            self._probed[key] = probe_interpreter(self.interpreter, flavor)
        found = self._probed[key]
        install = f"install them into it: {self.interpreter} -m pip install 'autoresearch[task]'"
        if found.get("error"):
            raise UserError(f"the process sandbox's interpreter {self.interpreter} does not run "
                            f"({found['error']}): {install}")
        if found.get("missing"):
            raise UserError(f"the process sandbox runs phases with {self.interpreter}, which cannot import "
                            f"{'; '.join(found['missing'])}: {install}")
        if flavor == "cuda" and not found.get("cuda"):
            raise UserError(f"torch in {self.interpreter} sees no CUDA GPU (torch.cuda.is_available() is False): "
                            f"install a CUDA build of torch there (see pytorch.org), check nvidia-smi, or use "
                            f"--flavor cpu")
        return IMAGE_PREFIX + self.interpreter

    def image_id(self, image: str) -> str:
        """The interpreter's real path and the versions of the task's modules it imports."""
        interpreter = image.removeprefix(IMAGE_PREFIX)
        found = next((probe for (used, _), probe in self._probed.items() if used == interpreter), None)
        if found is None:
            found = self._probed[(interpreter, "cpu")] = probe_interpreter(interpreter, "cpu")
        return json.dumps([os.path.realpath(interpreter), found.get("versions", {})], sort_keys=True)

    def run(self, spec: PhaseSpec, log_path: Path, on_line: Callable[[str], None] | None = None,
            watch: Watch | None = None, max_log_bytes: int = 20 * 2**20) -> PhaseResult:
        """Run spec as a process in a fresh phase root, to its end or its deadline."""
        created = time.monotonic()
        interpreter = spec.image[len(IMAGE_PREFIX):] if spec.image.startswith(IMAGE_PREFIX) else self.interpreter
        if self.temp is not None:
            self.temp.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=PHASE_PREFIX, dir=self.temp))  # 0700
        record = self._phases() / f"{root.name}.json"
        labels = {LABEL: "1", **spec.labels}
        write_record(record, {"labels": labels, "root": str(root), "runner_pid": os.getpid()})
        try:
            layout = materialise(root, spec.mounts, self._handover_cap)
            for folder in ("task", "tmp", "home"):
                (root / folder).mkdir(exist_ok=True)
            return self._run(spec, layout, interpreter, log_path, on_line, watch, max_log_bytes, created, record,
                             labels)
        finally:
            remove_tree(root)
            with contextlib.suppress(FileNotFoundError):
                record.unlink()

    def open_handover(self, image: str, size_mb: int, labels: dict[str, str]) -> ProcessHandover:
        """A fresh private hand-over folder of at most size_mb (enforced by the watcher of the phase writing it)."""
        folder = self._handovers()
        name = f"{HANDOVER_PREFIX}{uuid.uuid4().hex[:16]}"
        record = folder / f"{name}.json"
        write_record(record, {"labels": {LABEL: "1", **labels}, "size_mb": size_mb, "max_files": HANDOVER_MAX_FILES,
                            "runner_pid": os.getpid()})
        path = folder / name
        path.mkdir(mode=0o700)
        path.chmod(0o700)
        return ProcessHandover(path, record)

    def remove_orphans(self, labels: dict[str, str], alive: Callable[[int], bool]) -> list[str]:
        """Kill the phases and remove the hand-overs carrying labels whose runner (RUNNER_PID_LABEL) is gone."""

        removed = []
        for record in sorted(self._phases().glob(f"{PHASE_PREFIX}*.json")):
            found = read_record(record)
            if found is None or not orphaned(found, labels, alive):
                continue
            self._end_orphan_phase(found)
            with contextlib.suppress(FileNotFoundError):
                record.unlink()
            removed.append(record.stem)
        for record in sorted(self._handovers().glob(f"{HANDOVER_PREFIX}*.json")):
            found = read_record(record)
            if found is None or not orphaned(found, labels, alive):
                continue
            ProcessHandover(record.with_suffix(""), record).release()
            removed.append(record.stem)
        return removed

    def reachable(self) -> bool:
        return True

    def close(self) -> None:
        pass

    # -- inside --------------------------------------------------------------------------------

    def _phases(self) -> Path:
        return self._private(self._private(self.state) / "phases")

    def _handovers(self) -> Path:
        return self._private(self._private(self.state) / "handovers")

    @staticmethod
    def _private(folder: Path) -> Path:
        if not folder.is_dir():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.chmod(0o700)
        return folder

    def _handover_cap(self, source: Path) -> int:
        """The size cap of a hand-over this provider made (a volume mount's source); ValueError otherwise."""
        found = read_record(source.with_name(source.name + ".json"))
        if (found is None or not source.name.startswith(HANDOVER_PREFIX) or source.is_symlink()
                or not source.is_dir()):
            raise ValueError(f"{source} is not a hand-over of the process sandbox (open_handover makes them)")
        return int(found.get("size_mb", 0)) * 2**20

    def _run(self, spec, layout, interpreter, log_path, on_line, watch, max_log_bytes, created, record,
             labels) -> PhaseResult:
        command = [layout.rewrite(arg) for arg in spec.command]
        if command and command[0] in ("python3", "python"):
            command[0] = interpreter
        environment = base_environment(interpreter, layout.root)
        environment.update({key: layout.rewrite_env(value) for key, value in spec.environment.items()})
        environment["CUDA_VISIBLE_DEVICES"] = spec.gpu_uuid or ""

        report_read, report_write = os.pipe() if not spec.network else (None, None)
        limits = limits_for(spec, report_write)
        log = CappedLog(log_path, max_log_bytes)
        try:
            try:
                process = subprocess.Popen(
                    command, cwd=layout.root / "task", env=environment, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=limits.apply, close_fds=True, bufsize=0)
            except (OSError, subprocess.SubprocessError) as exc:
                raise SandboxUnavailable(f"the process sandbox cannot start {command[0]}: {exc}") from None
            finally:
                if report_write is not None:
                    os.close(report_write)
            started = time.monotonic()
            if report_read is not None:
                with os.fdopen(report_read, "rb") as report:
                    self._network_cut = report.read(1) == b"1"
                report_read = None
            write_record(record, {"labels": labels, "root": str(layout.root), "runner_pid": os.getpid(),
                                "sid": process.pid, "created": start_time(process.pid)})
            return self._follow(spec, layout, process, log, on_line, watch, created, started)
        finally:
            if report_read is not None:
                os.close(report_read)
            log.close()

    def _follow(self, spec, layout, process, log, on_line, watch, created, started) -> PhaseResult:
        phase = Phase(process, spec, layout)
        stdout = process.stdout.fileno()
        chunks = iter(lambda: os.read(stdout, 65536), b"")
        reader = threading.Thread(target=copy_lines, args=(chunks, log, on_line), name="process-sandbox-log",
                                  daemon=True)
        reader.start()
        monitor: Monitor | None = None
        try:
            if watch is not None:
                monitor = watch(process.pid, phase.kill)
            phase.start_watching()
            deadline = started + spec.deadline_s
            while not _exited(process.pid):
                if time.monotonic() >= deadline:
                    phase.kill(DEADLINE)
                time.sleep(EXIT_POLL_S)
            ended = time.monotonic()
        finally:
            phase.stop_watching()
            if not _exited(process.pid):
                phase.kill(RUNNER_FAILED)  # the runner failed while following it: the phase does not outlive that
                while not _exited(process.pid):
                    time.sleep(EXIT_POLL_S)
            usage = monitor.stop() if monitor is not None else None
            kill_session(phase.sid)  # what it left behind ends with it, as a container's processes do
            if phase.over_disk_cap(with_root=False):  # a last write into the hand-over after the last look
                phase.kill(DISK_CAP)
            phase.reaping()
            process.wait()
            reader.join(timeout=10)  # the pipe ends with the session; only a process that left it holds it longer
            if reader.is_alive():
                _STUCK_STREAMS.append(process.stdout)  # never closed under the blocked reader (its fd could be reused)
            else:
                process.stdout.close()
        copy_back(layout, parse_size(spec.resources.tmpfs_size))
        code = process.returncode
        return ended_phase(log, exit_code=128 - code if code < 0 else code, oom_killed=phase.oom_killed,
                           killed_by=phase.killed_by, start_seconds=started - created, run_seconds=ended - started,
                           usage=usage)

    def _end_orphan_phase(self, found: dict) -> None:
        """Kill a recorded phase's session (when it is still that session) and remove its root."""
        end_session(found.get("sid"), found.get("created"))
        root = Path(str(found.get("root", "")))
        if root.name.startswith(PHASE_PREFIX) and root.is_dir() and not root.is_symlink():
            remove_tree(root)

"""The fake sandbox provider: scripted phases, so tests of the loop, the trial and the experiment run in
seconds without Docker. Tests only: `open_sandbox("fake")` refuses unless $AUTORESEARCH_FAKE_SANDBOX is set.

Nothing of the candidate runs. Each phase is nevertheless a real child process (a few lines of Python
started by the fake) that prints the scripted lines at the scripted times, holds the scripted memory,
writes the scripted files and exits with the scripted code. So the Watch gets a real PID that the
Monitor measures, kill(reason) and the deadline really end it early (and then nothing more is written),
and the runner's own code reads real files: the hand-over, verdict.json, the prepared data.

What a train phase does is read from the candidate's source (the last file the command names, e.g. the
/task/train.py mount, also behind the compile seed's launcher), from comment lines

    # fake-sandbox: {"seconds": 2, "bpb": 0.97, "score": "violation"}

(several are merged in order), falling back to the defaults file, then to the built-in values:

    seconds        1.0    how long the train phase runs
    lines          (*)    what it prints: strings, spread evenly over the seconds (the i-th of n at
                          seconds*i/(n+1)), or [at_seconds, string] pairs; (*) by default four progress
                          lines in train.py's format and the summary block parse_summary reads (a traceback
                          instead of the summary when exit_code is not 0, nothing after the progress on oom)
    exit_code      0      the train phase's exit code
    handover       true   write the model (model.graph: this scripting, as JSON) into the /handover mount
    bpb            1.0    what scoring finds (and the summary's val_bpb estimate)
    bpb_by_seed    {}     the bpb for a seed the runner set (AUTORESEARCH_SEED, as a string key), over bpb
    score          "ok"   what scoring concludes: "ok" | "violation" | "error" (a verdict, exit code 0 or 3,
                          as task/prepare.py writes it) | "crash" (exit 1 without a verdict) | "engine_lost"
                          (SandboxUnavailable half-way through scoring)
    score_seconds  0.1    how long the score phase runs
    oom            false  the train phase ends OOM-killed after its seconds (exit code 137, oom_killed)
    engine_lost    false  true: the train phase raises SandboxUnavailable half-way, as when the Docker
                          engine dies, and the engine stays down engine_down_s; "once": only the first run
                          of this exact source with this state_dir (a retry then succeeds)
    memory_mb      0      resident memory the phase holds (the Monitor's memory cap really sees it)
    compile_cache  {}     files (name: text) the phase leaves in its compile cache, which reach the host only
                          where that cache is a writable mount (the seeding baseline's: compile_seed.CACHE_DIR)

The score phase (prepare.py evaluate) takes these from the hand-over it is given (what training wrote; a
hand-over without model.graph gives an "error" verdict, like the real scorer), the nonce from
AUTORESEARCH_NONCE and the split from its command. The prepare phase (prepare.py data) writes a tiny valid
data folder: manifest.json, tokenizer.json and one shard per split.

The defaults file (JSON, named by $AUTORESEARCH_FAKE_SANDBOX; empty means {}) is read again for every
phase, so a test can change it between experiments. It may hold any key above, and these of the provider:

    engine_down    false  the engine does not answer: open() and run() raise SandboxUnavailable,
                          reachable() is False (rewrite the file to bring it back)
    engine_down_s  1.0    how long reachable() stays False after a scripted engine loss (or call recover())
    isolated       true   the provider's `isolated` (false to exercise the path of a non-isolating provider)
    state_dir             where hand-overs and running phases are recorded, for remove_orphans, like a Docker
                          engine's state (default: <defaults file>.state beside the file; without a file, one
                          folder per user in the temp directory)

isolated is True by default because nothing of the candidate runs at all: the fake stands in for the
isolating default provider, so the loop takes its ordinary path.

In a test of the loop or the trial: write a defaults file (even "{}") in tmp_path, set
$AUTORESEARCH_FAKE_SANDBOX to it, choose the provider "fake", and give each candidate train.py its
directive line. The hand-overs, running phases and data the fake makes are real files and processes, so
a runner killed with SIGKILL leaves orphans that the next runner's remove_orphans finds and ends.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

from autoresearch.runner.errors import UserError
from autoresearch.runner.phases.compile_seed import CACHE_DIR
from autoresearch.runner.phases.experiment import NONCE_ENV, SCORER_VERDICT_EXIT, VERDICT_FILE
from autoresearch.runner.sandbox import FAKE_SCRIPT_ENV
from autoresearch.runner.sandbox.base import (
    DEADLINE,
    Mount,
    PhaseResult,
    PhaseSpec,
    SandboxUnavailable,
    Watch,
    ended_phase,
)
from autoresearch.runner.sandbox.leftovers import end_session, orphaned, read_record, start_time, write_record
from autoresearch.runner.sandbox.logs import CappedLog, copy_lines

DIRECTIVE = re.compile(r"^\s*#\s*fake-sandbox:\s*(\{.*\})\s*$", re.MULTILINE)
MODEL_FILE = "model.graph"  # task/prepare.py's name for the hand-over's one file
SCORES = ("ok", "violation", "error", "crash", "engine_lost")
BUILT_IN = {"seconds": 1.0, "lines": None, "exit_code": 0, "handover": True, "bpb": 1.0, "score": "ok",
            "score_seconds": 0.1, "oom": False, "engine_lost": False, "memory_mb": 0, "compile_cache": {},
            "bpb_by_seed": {}}
PROVIDER_KEYS = {"engine_down": False, "engine_down_s": 1.0, "isolated": True, "state_dir": None}
PREPARE_SECONDS = 0.1

# The phase's process: prints the lines at their times, holds the memory, writes the files, exits.
CHILD = r"""
import json, os, sys, time
plan = json.loads(sys.stdin.read())  # not argv: a long script would pass its size limit
began = time.monotonic()
held = b"\1" * int(plan["memory_mb"] * 2**20)
def until(moment):
    delay = began + moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)
for at, text in plan["lines"]:
    until(at)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
until(plan["seconds"])
if plan["oom"]:
    os.kill(os.getpid(), 9)
for path, content in plan["files"]:
    with open(path, "xb") as f:
        f.write(content.encode("latin-1"))
sys.exit(plan["exit_code"])
"""


@dataclass
class Plan:
    """What one phase's process will do, and when the fake engine dies under it (None: it does not)."""

    lines: list[tuple[float, str]]
    seconds: float
    exit_code: int = 0
    files: list[tuple[Path, bytes]] = field(default_factory=list)
    memory_mb: float = 0
    oom: bool = False
    engine_lost_at: float | None = None

    def argument(self) -> str:
        return json.dumps({"lines": self.lines, "seconds": self.seconds, "exit_code": self.exit_code,
                           "files": [(str(p), c.decode("latin-1")) for p, c in self.files],
                           "memory_mb": self.memory_mb, "oom": self.oom})


@dataclass
class FakeHandover:
    """A plain temporary folder (no size cap is enforced) recorded with its labels for remove_orphans."""

    path: Path
    record: Path

    def mount(self, target: str = "/handover", read_only: bool = True) -> Mount:
        return Mount(self.path, target, read_only=read_only)

    def release(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.record.unlink(missing_ok=True)


def load_defaults(path: Path | None) -> dict:
    """The defaults file's scripting ({} without one); unknown keys are a test's typo, so an error."""
    if path is None:
        return {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"${FAKE_SCRIPT_ENV} names {path}, which cannot be read: {exc}") from None
    try:
        defaults = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    return check_keys(defaults, {**BUILT_IN, **PROVIDER_KEYS}, str(path))


def directives(source: str) -> dict:
    """The merged `# fake-sandbox: {...}` lines of a candidate's source."""
    merged: dict = {}
    for match in DIRECTIVE.finditer(source):
        merged.update(json.loads(match.group(1)))
    return check_keys(merged, BUILT_IN, "the # fake-sandbox: directive")


def check_keys(script: dict, allowed: dict, where: str) -> dict:
    if not isinstance(script, dict):
        raise ValueError(f"{where}: expected a JSON object, got {script!r}")
    unknown = set(script) - set(allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(allowed)})")
    if script.get("score", "ok") not in SCORES:
        raise ValueError(f"{where}: score must be one of {SCORES}, not {script['score']!r}")
    return script


def default_lines(script: dict) -> list:
    """Four progress lines in train.py's format, then its summary block (or how it failed)."""
    seconds, steps = float(script["seconds"]), 4
    lines = [f"progress step={i} elapsed={seconds * i / (steps + 1):.2f} loss={4.0 - 0.25 * i:.6f} "
             f"tok_per_s=1000 mfu=0.00" for i in range(1, steps + 1)]
    if script["oom"]:
        return lines
    if script["exit_code"] != 0:
        return [*lines, *([seconds, text] for text in (
            "Traceback (most recent call last):", f"RuntimeError: scripted failure (exit code {script['exit_code']})"))]
    summary = ["---", f"val_bpb:          {float(script['bpb']):.6f}",
               f"training_seconds: {seconds * steps / (steps + 1):.1f}", f"total_seconds:    {seconds:.1f}",
               "export_seconds:   0.0", f"num_steps:        {steps}"]
    return [*lines, *([seconds, text] for text in summary)]


def timed(lines: list, seconds: float) -> list[tuple[float, str]]:
    """Strings spread evenly over seconds; [at, text] pairs kept as they are; in the order printed."""
    plain = [line for line in lines if isinstance(line, str)]
    spread = iter(seconds * i / (len(plain) + 1) for i in range(1, len(plain) + 1))
    out = [(float(line[0]), str(line[1])) if not isinstance(line, str) else (next(spread), line) for line in lines]
    return sorted(out, key=lambda entry: entry[0])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tiny_data() -> list[tuple[str, bytes]]:
    """A small but valid prepared-data folder (files in writing order: the manifest last, as prepare.py does)."""
    tokenizer = json.dumps({"fake": True, "pattern": "", "ranks": []}).encode()
    files, splits = [("tokenizer.json", tokenizer)], {}
    for n, split in enumerate(("train", "val", "test")):
        tokens = b"".join(((n * 1000 + t) % 4096).to_bytes(2, "little") for t in range(512))
        files.append((f"{split}_000.bin", tokens))
        splits[split] = [{"file": f"{split}_000.bin", "tokens": 512, "sha256": _sha256(tokens)}]
    manifest = {"source": {"name": "offline", "vocab_size": 4096, "seq_len": 256, "eval_tokens": 65536,
                           "val_fraction": 0.05, "test_fraction": 0.05},
                "bos_id": 0, "tokenizer": {"file": "tokenizer.json", "sha256": _sha256(tokenizer)},
                "splits": splits, "prepare_seconds": PREPARE_SECONDS}
    return [*files, ("manifest.json", json.dumps(manifest, indent=1).encode())]


def host_path(mounts: list[Mount], target: str) -> Path | None:
    """Where a path inside the phase lies on the host, through the phase's mounts; None if unmounted."""
    inside = PurePosixPath(target)
    for mount in sorted(mounts, key=lambda m: len(m.target), reverse=True):
        base = PurePosixPath(mount.target)
        if inside == base or base in inside.parents:
            return Path(mount.source).joinpath(*inside.relative_to(base).parts)
    return None


def writable(mounts: list[Mount], target: str) -> Path | None:
    """The host folder of a writable mount at exactly target."""
    return next((Path(m.source) for m in mounts if m.target == target and not m.read_only), None)


def option(command: list[str], name: str) -> str | None:
    """The value after --name in a command."""
    return command[command.index(name) + 1] if name in command[:-1] else None


class FakeSandbox:
    """Scripted phases in real child processes (see the module docstring)."""

    name = "fake"

    def __init__(self, defaults_path: Path | None = None, state_dir: Path | None = None):
        self.defaults_path = defaults_path
        defaults = self.defaults()
        self.isolated = bool(defaults.get("isolated", True))
        beside = defaults_path.with_name(defaults_path.name + ".state") if defaults_path else None
        shared = Path(tempfile.gettempdir()) / f"autoresearch-fake-sandbox-{os.getuid()}"
        self.state_dir = Path(state_dir or defaults.get("state_dir") or beside or shared)
        self._down_until = 0.0

    @classmethod
    def open(cls) -> "FakeSandbox":
        """The fake with the defaults file named by $AUTORESEARCH_FAKE_SANDBOX (none: built-ins only)."""
        named = os.environ.get(FAKE_SCRIPT_ENV)
        sandbox = cls(Path(named) if named else None)
        if sandbox.defaults().get("engine_down"):
            raise SandboxUnavailable("the fake engine is down (engine_down in the fake sandbox's defaults)")
        return sandbox

    def defaults(self) -> dict:
        return load_defaults(self.defaults_path)

    # ---- the Sandbox protocol

    def image(self, flavor: str) -> str:
        return f"fake:{flavor}"

    def image_id(self, image: str) -> str:
        return f"{image}:{_sha256(image.encode())[:12]}"

    def notice(self) -> str:
        return "fake sandbox: scripted phases (tests only)" + ("" if self.isolated else ", playing a provider "
                                                                "that does not isolate")

    def reachable(self) -> bool:
        return time.monotonic() >= self._down_until and not self.defaults().get("engine_down")

    def recover(self) -> None:
        """Bring the fake engine back now after a scripted loss."""
        self._down_until = 0.0

    def close(self) -> None:
        pass

    def open_handover(self, image: str, size_mb: int, labels: dict[str, str]) -> FakeHandover:
        self._require_engine()
        name = f"fake-handover-{uuid.uuid4().hex[:16]}"
        path = self.state_dir / "handovers" / name
        path.mkdir(parents=True)
        record = self.state_dir / "handovers" / f"{name}.json"
        write_record(record, {"labels": labels, "path": str(path), "size_mb": size_mb})
        return FakeHandover(path, record)

    def remove_orphans(self, labels: dict[str, str], alive: Callable[[int], bool]) -> list[str]:
        removed = []
        for record in sorted(self.state_dir.glob("*/*.json")):
            entry = read_record(record)
            if entry is None or not orphaned(entry, labels, alive):
                continue
            if "pid" in entry:
                end_session(entry["pid"], entry["create_time"])
            if "path" in entry:
                shutil.rmtree(entry["path"], ignore_errors=True)
            record.unlink(missing_ok=True)
            removed.append(record.stem)
        return removed

    def run(self, spec: PhaseSpec, log_path: Path, on_line: Callable[[str], None] | None = None,
            watch: Watch | None = None, max_log_bytes: int = 20 * 2**20) -> PhaseResult:
        self._require_engine()
        created = time.monotonic()
        plan = self._plan(spec)
        child = subprocess.Popen([sys.executable, "-I", "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        with contextlib.suppress(BrokenPipeError), child.stdin:
            child.stdin.write(plan.argument().encode())
        started = time.monotonic()
        record = self._track(spec.labels, child.pid)
        log = CappedLog(log_path, max_log_bytes)
        killed_by: list[str] = []
        lock = threading.Lock()

        def kill(reason: str) -> None:
            with lock:
                if not killed_by:
                    killed_by.append(reason)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.pid, signal.SIGKILL)

        chunks = iter(partial(child.stdout.read1, 65536), b"")
        reader = threading.Thread(target=copy_lines, args=(chunks, log, on_line), daemon=True)
        reader.start()
        monitor = None
        try:
            monitor = watch(child.pid, kill) if watch is not None else None
            lost = self._wait(child, spec.deadline_s, plan.engine_lost_at, started, kill)
            ended = time.monotonic()
            usage = monitor.stop() if monitor is not None else None
            reader.join(timeout=10)
            if lost:
                self._down_until = time.monotonic() + float(self.defaults().get("engine_down_s", 1.0))
                raise SandboxUnavailable(f"the fake engine went away during the {spec.phase or 'phase'} "
                                         "(scripted engine_lost)")
            code = child.returncode
            reason = killed_by[0] if killed_by else None
            return ended_phase(log, exit_code=128 - code if code < 0 else code,
                               oom_killed=plan.oom and reason is None and code == -signal.SIGKILL, killed_by=reason,
                               start_seconds=started - created, run_seconds=ended - started, usage=usage)
        finally:
            if child.poll() is None:  # an exception on the way: leave nothing running
                kill("runner")
                child.wait()
            if monitor is not None:
                monitor.stop()
            reader.join(timeout=10)
            log.close()
            child.stdout.close()
            record.unlink(missing_ok=True)

    # ---- how

    def _require_engine(self) -> None:
        if not self.reachable():
            raise SandboxUnavailable("the fake engine is down (scripted engine loss or engine_down)")

    def _wait(self, child: subprocess.Popen, deadline_s: float, lost_at: float | None, started: float,
              kill: Callable[[str], None]) -> bool:
        """Wait for the child, killing it at its deadline; True when the scripted engine loss came first (the
        engine is gone then, whether or not the phase had already ended)."""
        if lost_at is not None and lost_at < deadline_s:
            try:
                child.wait(timeout=max(0.0, started + lost_at - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill("engine_lost")
                child.wait()
            return True
        try:
            child.wait(timeout=max(0.0, started + deadline_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill(DEADLINE)
            child.wait()
        return False

    def _track(self, labels: dict[str, str], pid: int) -> Path:
        """Record a running phase, so that remove_orphans can end it once its runner is gone."""
        record = self.state_dir / "phases" / f"fake-phase-{uuid.uuid4().hex[:16]}.json"
        write_record(record, {"labels": labels, "pid": pid, "create_time": start_time(pid)})
        return record

    def _plan(self, spec: PhaseSpec) -> Plan:
        command = spec.command
        script = next((arg for arg in reversed(command[1:]) if arg.endswith(".py")), None)
        if script is not None and PurePosixPath(script).name == "prepare.py" and "evaluate" in command:
            return self._score_plan(spec)
        if spec.phase == "prepare" or (script is not None and PurePosixPath(script).name == "prepare.py"
                                       and "data" in command):
            return self._prepare_plan(spec)
        return self._train_plan(spec, script)

    def _train_plan(self, spec: PhaseSpec, script: str | None) -> Plan:
        source_path = host_path(spec.mounts, script) if script else None
        source = source_path.read_text(errors="replace") if source_path and source_path.is_file() else ""
        scripted = {**BUILT_IN, **{k: v for k, v in self.defaults().items() if k in BUILT_IN}, **directives(source)}
        seed = spec.environment.get("AUTORESEARCH_SEED")
        if seed in scripted["bpb_by_seed"]:
            scripted["bpb"] = scripted["bpb_by_seed"][seed]
        seconds = float(scripted["seconds"])
        lines = scripted["lines"] if scripted["lines"] is not None else default_lines(scripted)
        files = []
        handover = writable(spec.mounts, spec.environment.get("AUTORESEARCH_HANDOVER", "/handover"))
        if scripted["handover"] and handover is not None:
            model = {"fake_model": True, **{k: scripted[k] for k in ("bpb", "score", "score_seconds")}}
            files.append((handover / MODEL_FILE, json.dumps(model).encode()))
        cache = writable(spec.mounts, CACHE_DIR)
        if cache is not None:
            files += [(cache / name, str(text).encode()) for name, text in scripted["compile_cache"].items()]
        lost_at = None
        digest = _sha256(source.encode())
        lost_once = self.state_dir / "lost" / digest  # on disk: the loop reopens the provider after a loss
        if scripted["engine_lost"] is True or (scripted["engine_lost"] == "once" and not lost_once.exists()):
            lost_once.parent.mkdir(parents=True, exist_ok=True)
            lost_once.touch()
            lost_at = seconds / 2
        return Plan(timed(lines, seconds), seconds, int(scripted["exit_code"]), files, scripted["memory_mb"],
                    bool(scripted["oom"]), lost_at)

    def _score_plan(self, spec: PhaseSpec) -> Plan:
        """What task/prepare.py evaluate would do with the hand-over it is given."""
        split = option(spec.command, "--split") or "val"
        nonce = spec.environment.get(NONCE_ENV, "")
        handover = host_path(spec.mounts, option(spec.command, "--handover") or "/handover")
        verdict_dir = host_path(spec.mounts, option(spec.command, "--verdict") or "/verdict")
        scripted = {**BUILT_IN, **{k: v for k, v in self.defaults().items() if k in BUILT_IN}}
        model_path = handover / MODEL_FILE if handover is not None else None
        try:
            model = json.loads(model_path.read_bytes()) if model_path is not None else None
        except OSError:
            model = None  # no model: the real scorer's ModelError, an "error" verdict
        except ValueError:
            model = "malformed"
        seconds = float(model.get("score_seconds", scripted["score_seconds"]) if isinstance(model, dict)
                        else scripted["score_seconds"])
        if isinstance(model, dict):
            scripted.update({k: model[k] for k in ("bpb", "score") if k in model})
            result = {"status": scripted["score"], "reason": f"scripted {scripted['score']}"}
        elif model is None:
            result = {"status": "error", "reason": f"no {MODEL_FILE} in the hand-over"}
        else:
            result = {"status": "error", "reason": f"the hand-over's {MODEL_FILE} is not a fake model"}
        if result["status"] == "engine_lost":
            return Plan([], seconds, engine_lost_at=seconds / 2)
        if result["status"] == "crash":
            return Plan([(seconds, "Traceback (most recent call last):"),
                         (seconds, "RuntimeError: scripted scoring crash")], seconds, exit_code=1)
        if result["status"] == "ok":
            bpb = scripted["bpb"]
            result = {"status": "ok", "bpb": float(bpb) if isinstance(bpb, int | float) else bpb}
        result = {**result, "split": split, "nonce": nonce}
        files = [(verdict_dir / VERDICT_FILE, json.dumps(result).encode())] if verdict_dir is not None else []
        return Plan([(seconds, json.dumps(result))], seconds, SCORER_VERDICT_EXIT[result["status"]], files)

    def _prepare_plan(self, spec: PhaseSpec) -> Plan:
        out = host_path(spec.mounts, option(spec.command, "--out") or "/data")
        if out is None:
            raise ValueError("the fake prepare phase needs a writable /data mount (or --out)")
        files = [(out / name, data) for name, data in tiny_data()]
        return Plan([(PREPARE_SECONDS, json.dumps({"status": "ok", "data": "/data", "fake": True}))],
                    PREPARE_SECONDS, 0, files)

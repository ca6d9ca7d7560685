"""A workspace whose experiments run on the fake sandbox provider, for the fast tier's loop tests.

`FakeWorkspace.make(tmp_path, monkeypatch)` makes a real workspace (`autoresearch init`: task files,
git, config) set to the fake provider, the CPU flavor, a one-second budget and the replay agent, with
the fake's defaults file named by $AUTORESEARCH_FAKE_SANDBOX and the data cache in tmp_path.

What each train.py does under the fake is scripted by its `# fake-sandbox: {...}` line (see
runner/sandbox/fake_provider.py): the baseline's line is committed into the workspace's train.py
(`baseline=`), each candidate is the bundled train.py with its own line on top (`edit`), proposed in
order by the replay agent from the JSONL file that `replay(...)` writes. A key a line leaves out comes
from the defaults file (`defaults=`, `set_defaults`), which the fake reads again for every phase.

The loop runs in this process (`loop`: fast; its module constants can be patched; a watchdog stops
it if a case hangs) or as `python3 -m autoresearch.runner.cli run` in a subprocess (`cli`, `start`)
where a case needs a process to kill or the real exit code. Tests assert on the record afterwards:
the store's rows, the git refs and the run row.
"""

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pygit2
import pytest

from autoresearch.runner.agents import ProposalContext
from autoresearch.runner.errors import UserError
from autoresearch.runner.init import init_workspace
from autoresearch.runner.loop import Loop, RunOptions
from autoresearch.runner.record import gitrepo, store
from autoresearch.runner.sandbox import FAKE_SCRIPT_ENV
from autoresearch.runner.sandbox.base import EXPERIMENT_LABEL, PHASE_LABEL
from autoresearch.runner.task_files import default_task_dir
from autoresearch.runner.workspace import find_workspace

BUDGET_S = 1.0  # [budget] seconds (the fake's phases take what their line says, whatever the budget)
THRESHOLD = 0.01  # [keep] threshold: a candidate must beat the best val_bpb by more than this
FAST_S = 0.2  # how long a candidate trains unless its line says otherwise
BASELINE = {"seconds": FAST_S, "bpb": 1.0}  # the baseline's line unless a test says otherwise
TRAIN_PY = (default_task_dir() / "train.py").read_text()
LOOP_TIMEOUT_S = 60.0  # the watchdog: an in-process loop still running then is stopped and the test fails


def directive(**script) -> str:
    """The fake's scripting line for a train.py."""
    return f"# fake-sandbox: {json.dumps(script)}\n"


def edit(description: str, prefix: str = "", **script) -> dict:
    """A replay edit: the bundled train.py with the line `script` on top (FAST_S seconds unless it says;
    seconds=None leaves the seconds to the defaults file), after prefix (e.g. an import the policy blocks)."""
    script = {k: v for k, v in {"seconds": FAST_S, **script}.items() if v is not None}
    return {"description": description, "train_py": prefix + directive(**script) + TRAIN_PY}


def config_toml(*, budget_s: float, threshold: float, replay: Path, policy: str, noise_seeds: int = 1,
                prefetch: int = 0, slots: int | None = None, wave: int = 0, confirm_multiplier: float = 4.0) -> str:
    return f"""\
[image]
flavor = "cpu"

[policy]
file = "{policy}"

[budget]
seconds = {budget_s}

[sandbox]
provider = "fake"

[agent]
name = "replay"
replay_file = "{replay}"

[keep]
threshold = {threshold}
noise_multiplier = 2.0
noise_seeds = {noise_seeds}
confirm_multiplier = {confirm_multiplier}

[caps]
max_usd = false

[executor]
prefetch = {prefetch}
wave = {wave}
""" + (f"slots = {slots}\n" if slots else "")


@dataclass
class FakeWorkspace:
    root: Path
    defaults: Path  # the fake's defaults file ($AUTORESEARCH_FAKE_SANDBOX)
    replay_file: Path
    said: list[str] = field(default_factory=list)  # what in-process loops printed
    contexts: list[ProposalContext] = field(default_factory=list)  # what the agent was given, each proposal

    @classmethod
    def make(cls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, baseline: dict | None = None,
             defaults: dict | None = None, budget_s: float = BUDGET_S, threshold: float = THRESHOLD,
             deadline_allowance_s: float = 30, **executor) -> "FakeWorkspace":
        """A fresh workspace on the fake. baseline: the committed train.py's line (default BASELINE);
        defaults: the fake's defaults file; deadline_allowance_s: the hard deadline is budget + this; executor:
        config_toml's noise_seeds, prefetch, slots, wave, confirm_multiplier (default: one slot, proposals made
        when it frees, no noise seeds: the loop of one experiment at a time)."""
        monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
        defaults_path = tmp_path / "fake-sandbox.json"
        defaults_path.write_text(json.dumps(defaults or {}))
        monkeypatch.setenv(FAKE_SCRIPT_ENV, str(defaults_path))
        root = init_workspace(tmp_path / "ws")
        commit_train_py(root, directive(**(BASELINE if baseline is None else baseline)) + TRAIN_PY)
        policy = root / "fast-policy.toml"  # the default policy; a short hard deadline where a case needs one
        policy.write_text(f'extends = "default"\n\n[limits]\ndeadline_allowance_cpu_s = {deadline_allowance_s}\n')
        replay = tmp_path / "edits.jsonl"
        replay.write_text(json.dumps(edit("never proposed")) + "\n")
        (root / "autoresearch.toml").write_text(config_toml(budget_s=budget_s, threshold=threshold, replay=replay,
                                                            policy=policy.name, **executor))
        return cls(root, defaults_path, replay)

    # ---- scripting

    def replay(self, *edits: dict) -> None:
        """The replay agent's edits, proposed in this order (then the replay is exhausted)."""
        self.replay_file.write_text("".join(json.dumps(e) + "\n" for e in edits))

    def set_defaults(self, **scripting) -> None:
        """Rewrite the fake's defaults file (read again for every phase), atomically: a phase starting now reads
        the old file or the new one."""
        tmp = self.defaults.with_suffix(".tmp")
        tmp.write_text(json.dumps(scripting))
        tmp.replace(self.defaults)

    # ---- running

    def loop(self, tag: str = "t", timeout: float = LOOP_TIMEOUT_S, **options) -> int:
        """`autoresearch run` in this process: its exit code; what it says goes to self.said, what the agent
        is given to self.contexts. Past timeout the watchdog stops the run (stop and skip) and the test fails."""
        loop = Loop(find_workspace(self.root), RunOptions(tag, **options), say=self.said.append)
        propose = loop.agent.propose

        def recording(context: ProposalContext):
            self.contexts.append(context)
            return propose(context)

        loop.agent.propose = recording
        fired = threading.Event()

        def rescue() -> None:
            fired.set()
            self.command("stop", tag)
            self.command("skip", tag)

        watchdog = threading.Timer(timeout, rescue)
        watchdog.start()
        try:
            code = loop.run()
        except BaseException:
            if fired.is_set():
                pytest.fail(f"the loop was still running after {timeout:g} s: the watchdog stopped it")
            raise
        finally:
            watchdog.cancel()
        if fired.is_set():
            pytest.fail(f"the loop was still running after {timeout:g} s: the watchdog stopped it")
        return code

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`autoresearch ARGS` in a subprocess in the workspace."""
        return subprocess.run([sys.executable, "-m", "autoresearch.runner.cli", *args], cwd=self.root, text=True,
                              capture_output=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        """`autoresearch run ARGS` started in a subprocess (stdout and stderr together)."""
        return subprocess.Popen([sys.executable, "-m", "autoresearch.runner.cli", "run", *args], cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def command(self, kind: str, tag: str = "t") -> None:
        """Queue a steering command for the run, as `autoresearch KIND` does (without waiting for its ack)."""
        conn = store.open_store(self.store_path)
        try:
            run = store.run_by_tag(conn, tag)
            if run is not None:
                store.add_command(conn, run.id, kind)
        finally:
            conn.close()

    @contextlib.contextmanager
    def meanwhile(self, action: Callable[[], None], tag: str = "t") -> Iterator[None]:
        """Run action in a thread while the block runs the loop; its failure stops the loop and fails the test."""
        errors: list[BaseException] = []

        def guarded() -> None:
            try:
                action()
            except BaseException as exc:  # pytest.fail raises an OutcomeException, not an Exception
                errors.append(exc)
                self.command("stop", tag)
                self.command("skip", tag)

        thread = threading.Thread(target=guarded, daemon=True)
        thread.start()
        try:
            yield
        finally:
            thread.join(timeout=LOOP_TIMEOUT_S)
            if errors:  # raised over a failure of the block, which stays attached as its context
                raise errors[0]

    # ---- reading the record

    @property
    def store_path(self) -> Path:
        return self.root / ".autoresearch" / "store.db"

    def read(self, fn: Callable):
        """fn(conn) on a read-only connection to the store; None while the runner has not made the store yet."""
        try:
            conn = store.open_store(self.store_path, readonly=True)
        except UserError as exc:
            if self.store_path.exists() and "is being created" not in str(exc):
                raise
            return None  # not there yet, or made but not yet migrated (a reader is refused until it is)
        try:
            return fn(conn)
        finally:
            conn.close()

    def experiments(self) -> list[store.Experiment]:
        return self.read(store.list_experiments) or []

    def run_row(self, tag: str = "t") -> store.Run | None:
        return self.read(lambda conn: store.run_by_tag(conn, tag))

    def training(self, description: str) -> store.Experiment | None:
        """The running experiment of that description while the fake runs its train phase, else None."""
        phases = {r["labels"].get(EXPERIMENT_LABEL) for r in self.fake_records()
                  if "pid" in r and r["labels"].get(PHASE_LABEL) == "train"}
        return next((e for e in self.experiments()
                     if e.description == description and e.status == "running" and str(e.id) in phases), None)

    def statuses(self) -> list[tuple[str, str]]:
        return [(e.description, e.status) for e in self.experiments()]

    def repo(self) -> pygit2.Repository:
        return gitrepo.open_repo(self.root)

    def fake_records(self) -> list[dict]:
        """What the fake engine holds: its recorded hand-overs and running phases (remove_orphans' input)."""
        state = self.defaults.with_name(self.defaults.name + ".state")
        records = []
        for path in sorted(state.glob("*/*.json")):
            with contextlib.suppress(FileNotFoundError):  # a phase that ended since the glob
                records.append(json.loads(path.read_text()))
        return records


def commit_train_py(root: Path, text: str) -> None:
    """Commit a new train.py on the workspace's current branch (the baseline every run starts from)."""
    (root / "train.py").write_text(text)
    repo = gitrepo.open_repo(root)
    repo.index.read()
    repo.index.add("train.py")
    repo.index.write()
    author = gitrepo.signature()
    repo.create_commit("HEAD", author, author, "the baseline, scripted for the fake sandbox", repo.index.write_tree(),
                       [repo.head.target])


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> object:
    """predicate's first truthy value, polled; fails the test after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")

"""The store: one SQLite file per workspace (`.autoresearch/store.db`) holding every measurement.

One writer, many readers. The runner is the only writer; the TUI and the CLI open the store read-only
(`mode=ro`) and, because the journal is a WAL, never block it: a reader keeps its snapshot while the
writer commits, and sees the new rows at its next read transaction.

Decisions, written down:
- Timestamps are unix seconds (REAL, `time.time()`), UTC by definition, everywhere; the monitor's
  samples already use them and durations are a subtraction.
- Every write function is one short `BEGIN IMMEDIATE ... COMMIT` transaction. The runner may be
  SIGKILLed at any moment: a write is then either wholly there or not at all. `synchronous=NORMAL`
  in WAL mode loses no committed transaction when a process dies (only, at worst, the last ones at
  a power cut).
- The schema is versioned with `PRAGMA user_version`: version N means MIGRATIONS[:N] were applied.
  A writable open applies the missing ones in a single transaction; migrations only ever append.
- Tables are STRICT (SQLite >= 3.37), so a value of the wrong type is an error, not a silent cast.
- Column names equal the row dataclasses' field names. Columns ending in `_json` hold JSON text and
  appear decoded (dicts) in the dataclasses; writes encode them. Update functions accept only known
  column names, so no caller-supplied name is ever formatted into SQL.
- Numbers that train.py prints are untrusted: a NaN becomes NULL (SQLite's own rule), and a step that
  does not fit in 64 bits is not stored.
- Text that a candidate or the agent can influence is data (runner/record/untrusted.py): the columns of
  UNTRUSTED_TEXT and every string of UNTRUSTED_JSON are escaped and bounded by `encode` on the way in
  and, for rows an older version wrote, by `decode` on the way out; those of UNTRUSTED_LINES (the agent's
  notes) likewise, their newlines kept. Every writer goes through them.
"""

import dataclasses
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoresearch.runner.check.findings import Finding
from autoresearch.runner.errors import UserError
from autoresearch.runner.phases.metrics import ProgressPoint
from autoresearch.runner.record.status import RunState, Status
from autoresearch.runner.record.untrusted import DESCRIPTION_CHARS, EXCERPT_CHARS, as_data, json_as_data
from autoresearch.runner.sandbox.monitor import Sample

MIN_SQLITE = (3, 37, 0)  # STRICT tables
WRITER_BUSY_TIMEOUT_MS = 10_000
READER_BUSY_TIMEOUT_MS = 500
INT64 = range(-(2**63), 2**63)
# Columns holding text a candidate or the agent wrote, each with its bound; and JSON columns of such text.
UNTRUSTED_TEXT = {"description": DESCRIPTION_CHARS, "exit_reason": EXCERPT_CHARS, "note": EXCERPT_CHARS,
                  "message": EXCERPT_CHARS}
UNTRUSTED_JSON = frozenset({"evidence_json"})
NOTES_CHARS = 4000  # the agent's notes kept between proposals (its update_notes tool, a CLI's notes.md), at most
UNTRUSTED_LINES = {"text": NOTES_CHARS}  # columns of untrusted text whose newlines are kept, each with its bound

_V1 = """
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    tag           TEXT NOT NULL,
    started_at    REAL NOT NULL,
    ended_at      REAL,
    state         TEXT NOT NULL CHECK (state IN ('running', 'paused', 'stopped', 'finished', 'crashed')),
    heartbeat_at  REAL,
    config_toml   TEXT NOT NULL,
    policy_toml   TEXT NOT NULL,
    agent         TEXT NOT NULL,
    pid           INTEGER,
    host          TEXT
) STRICT;
CREATE INDEX runs_tag ON runs (tag);

CREATE TABLE experiments (
    id                 INTEGER PRIMARY KEY,
    run_id             INTEGER REFERENCES runs (id),  -- NULL: a `try` outside any run
    seq                INTEGER NOT NULL,              -- 1, 2, ... in the run: refs/autoresearch/<tag>/<seq>
    commit_sha         TEXT,                          -- NULL: never committed (blocked)
    parent_sha         TEXT,
    description        TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN (
        'pending', 'running', 'keep', 'discard', 'crash', 'timeout', 'oom', 'killed', 'blocked', 'violation',
        'ok')),
    exit_reason        TEXT,
    val_bpb            REAL,                          -- trusted: the scoring container's
    test_bpb           REAL,                          -- trusted, on the held-out split
    reported_json      TEXT,                          -- train.py's own summary: advisory only
    training_seconds   REAL,
    total_seconds      REAL,
    gpu_busy_seconds   REAL,                          -- measured by the host
    peak_vram_mb       REAL,                          -- as train.py reported it
    host_peak_vram_mb  REAL,                          -- as the host measured it (NVML or RSS)
    started_at         REAL NOT NULL,
    ended_at           REAL,
    log_path           TEXT,
    log_bytes          INTEGER,                       -- bytes the container printed
    log_dropped_bytes  INTEGER,                       -- of which the capped log kept none
    train_py_sha256    TEXT,
    timings_json       TEXT,
    UNIQUE (run_id, seq)
) STRICT;
CREATE INDEX experiments_status ON experiments (status);

CREATE TABLE metric_points (
    experiment_id  INTEGER NOT NULL REFERENCES experiments (id),
    step           INTEGER NOT NULL,
    elapsed        REAL,
    loss           REAL,
    tok_per_s      REAL,
    mfu            REAL,
    recorded_at    REAL NOT NULL,
    PRIMARY KEY (experiment_id, step)
) STRICT, WITHOUT ROWID;

CREATE TABLE gpu_samples (
    id             INTEGER PRIMARY KEY,
    experiment_id  INTEGER REFERENCES experiments (id),  -- NULL: sampled between experiments
    recorded_at    REAL NOT NULL,
    device         TEXT NOT NULL,                        -- "gpu0", ... or "cpu"
    kind           TEXT NOT NULL CHECK (kind IN ('nvml', 'psutil')),
    util_percent   REAL,
    mem_used_mb    REAL,
    mem_total_mb   REAL,
    power_w        REAL,
    temp_c         REAL,
    proc_mem_mb    REAL
) STRICT;
CREATE INDEX gpu_samples_experiment ON gpu_samples (experiment_id, recorded_at);
CREATE INDEX gpu_samples_recorded_at ON gpu_samples (recorded_at);

CREATE TABLE findings (
    id             INTEGER PRIMARY KEY,
    experiment_id  INTEGER NOT NULL REFERENCES experiments (id),
    rule_id        TEXT NOT NULL,
    severity       TEXT NOT NULL,
    action         TEXT NOT NULL,
    message        TEXT NOT NULL,
    evidence_json  TEXT NOT NULL,
    recorded_at    REAL NOT NULL
) STRICT;
CREATE INDEX findings_experiment ON findings (experiment_id);
"""

_V2 = """
CREATE TABLE agent_turns (
    id                  INTEGER PRIMARY KEY,
    experiment_id       INTEGER REFERENCES experiments (id),  -- NULL: a turn that proposed nothing
    run_id              INTEGER REFERENCES runs (id),
    model               TEXT NOT NULL,
    input_tokens        INTEGER,
    output_tokens       INTEGER,
    cache_read_tokens   INTEGER,
    cache_write_tokens  INTEGER,
    cost_usd            REAL,
    latency_s           REAL,
    request_json        TEXT,
    response_json       TEXT,
    error               TEXT,
    recorded_at         REAL NOT NULL
) STRICT;
CREATE INDEX agent_turns_run ON agent_turns (run_id);
CREATE INDEX agent_turns_experiment ON agent_turns (experiment_id);
"""

_V3 = """
ALTER TABLE runs ADD COLUMN note TEXT;  -- why the run ended (or that it was interrupted)
CREATE TABLE commands (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    kind        TEXT NOT NULL CHECK (kind IN ('stop', 'pause', 'resume', 'skip')),
    created_at  REAL NOT NULL,
    acked_at    REAL,
    note        TEXT
) STRICT;
CREATE INDEX commands_pending ON commands (run_id, acked_at);

CREATE TABLE noise (
    id           INTEGER PRIMARY KEY,
    commit_sha   TEXT,
    runs         INTEGER NOT NULL,
    mean_bpb     REAL NOT NULL,
    std_bpb      REAL NOT NULL,
    values_json  TEXT NOT NULL,
    recorded_at  REAL NOT NULL
) STRICT;
"""

_V4 = """
ALTER TABLE runs ADD COLUMN time_budget_s REAL;  -- the policy's training seconds per experiment
ALTER TABLE runs ADD COLUMN sandbox TEXT;  -- the sandbox provider phases ran in (docker, process); NULL: older runs
ALTER TABLE experiments ADD COLUMN sandbox TEXT;  -- the same per experiment (a `try` has no run); NULL: older rows
"""

_V5 = """
ALTER TABLE runs ADD COLUMN source TEXT;  -- the data source the run used (offline, web); NULL: older runs
"""

_V6 = """
ALTER TABLE runs ADD COLUMN compile_seed_json TEXT;  -- the run's compile seed: digest, files, bytes, image, sealer
"""

_V7 = """
ALTER TABLE runs ADD COLUMN executor TEXT;  -- local or ray; NULL: older runs (one local slot)
ALTER TABLE runs ADD COLUMN device TEXT;  -- the device model every slot of the run shares (a GPU's name, or cpu)
ALTER TABLE runs ADD COLUMN slots_json TEXT;  -- the slots it last ran on: name, node, gpu_uuid, cpuset, device
ALTER TABLE experiments ADD COLUMN slot TEXT;  -- the slot it ran on (gpu0, cpu1, node-b/gpu0); NULL: older rows
ALTER TABLE experiments ADD COLUMN node TEXT;  -- the node of that slot (local, or a Ray node's name)
ALTER TABLE experiments ADD COLUMN role TEXT;  -- NULL: the baseline or a candidate; noise: a seed of the baseline
                                               -- measuring the run's noise; confirm: a second seed of a close keep
ALTER TABLE experiments ADD COLUMN seed INTEGER;  -- train.py's seed when the runner set one
ALTER TABLE experiments ADD COLUMN judge_json TEXT;  -- how the keep rule judged it (best then, threshold, noise,
                                                    -- a stale parent, a near miss, its confirmation)
ALTER TABLE noise ADD COLUMN run_id INTEGER REFERENCES runs (id);  -- the run that measured it; NULL: `noise`
CREATE TABLE nodes (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs (id),
    name          TEXT NOT NULL,
    address       TEXT,
    gpus          INTEGER NOT NULL,
    device        TEXT,
    state         TEXT NOT NULL CHECK (state IN ('starting', 'ready', 'refused', 'lost', 'gone')),
    note          TEXT,                          -- why it is refused or lost (a node's own words are data)
    util_percent  REAL,
    seen_at       REAL NOT NULL,
    UNIQUE (run_id, name)
) STRICT;
"""

_V8 = """
CREATE TABLE agent_notes (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL REFERENCES runs (id),
    experiment_id  INTEGER NOT NULL REFERENCES experiments (id),  -- what the proposal that wrote it became
    text           TEXT NOT NULL,  -- the agent's whole notes then (agent-written: data, NOTES_CHARS at most)
    recorded_at    REAL NOT NULL
) STRICT;
CREATE INDEX agent_notes_run ON agent_notes (run_id, experiment_id);
"""

_V9 = """
CREATE TABLE notifications (
    id         INTEGER PRIMARY KEY,
    run_id     INTEGER NOT NULL REFERENCES runs (id),
    event      TEXT NOT NULL,             -- best, end, stalled, failures, spend (runner/config.py NOTIFY_EVENTS)
    title      TEXT NOT NULL,
    service    TEXT NOT NULL,             -- which [notify] urls entry, by index and apprise's name of the service:
                                          -- never the URL (it holds secrets)
    queued_at  REAL NOT NULL,             -- when the loop sent it
    sent_at    REAL NOT NULL,             -- when the service took it, or the send was given up
    ok         INTEGER NOT NULL CHECK (ok IN (0, 1)),
    error      TEXT                       -- why not (the URL's parts masked; a service's words are data)
) STRICT;
CREATE INDEX notifications_run ON notifications (run_id);
"""

# Applied in order; never edit one that has shipped, append a new one.
MIGRATIONS: list[str] = [_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Run:
    """One row of `runs`."""

    id: int
    tag: str
    started_at: float
    ended_at: float | None
    state: str
    heartbeat_at: float | None
    config_toml: str
    policy_toml: str
    agent: str
    pid: int | None
    host: str | None
    note: str | None
    time_budget_s: float | None  # None: a run recorded before the column (views.run_budget_s reads its policy)
    sandbox: str | None  # the sandbox provider's name; None: a run recorded before the column
    source: str | None  # the data source it used (offline, web; what auto chose); None: recorded before the column
    compile_seed_json: dict | None  # the seed its baseline sealed (runner/phases/compile_seed.py); None: none
    executor: str | None  # local or ray; None: recorded before the column (one local slot)
    device: str | None  # the device model all its slots share (one GPU model per run); None: before the column
    slots_json: list | None  # the slots it last ran on, as dicts of runner/executors/base.py's Slot


@dataclass(frozen=True)
class Experiment:
    """One row of `experiments`; the `_json` fields are decoded."""

    id: int
    run_id: int | None
    seq: int
    commit_sha: str | None
    parent_sha: str | None
    description: str
    status: str
    exit_reason: str | None
    val_bpb: float | None
    test_bpb: float | None
    reported_json: dict | None
    training_seconds: float | None
    total_seconds: float | None
    gpu_busy_seconds: float | None
    peak_vram_mb: float | None
    host_peak_vram_mb: float | None
    started_at: float
    ended_at: float | None
    log_path: str | None
    log_bytes: int | None
    log_dropped_bytes: int | None
    train_py_sha256: str | None
    timings_json: dict | None
    sandbox: str | None  # the sandbox provider it ran in; None: never ran (blocked), or recorded before the column
    slot: str | None  # the executor slot it ran on; None: not in a run's slot (try, blocked) or an older row
    node: str | None  # that slot's node: local, or a Ray node's name
    role: str | None  # None: the baseline or a candidate; "noise": a baseline seed; "confirm": a close keep's 2nd seed
    seed: int | None  # train.py's seed when the runner set one (None: train.py's own)
    judge_json: dict | None  # how the keep rule judged it (runner/judge.py's Judgement)


@dataclass(frozen=True)
class MetricPoint:
    """One row of `metric_points`: a progress line of train.py (advisory numbers)."""

    experiment_id: int
    step: int
    elapsed: float | None
    loss: float | None
    tok_per_s: float | None
    mfu: float | None
    recorded_at: float


@dataclass(frozen=True)
class GpuSample:
    """One row of `gpu_samples`."""

    id: int
    experiment_id: int | None
    recorded_at: float
    device: str
    kind: str
    util_percent: float | None
    mem_used_mb: float | None
    mem_total_mb: float | None
    power_w: float | None
    temp_c: float | None
    proc_mem_mb: float | None


@dataclass(frozen=True)
class StoredFinding:
    """A finding as recorded: the policy's Finding plus where and when."""

    id: int
    experiment_id: int
    recorded_at: float
    finding: Finding


@dataclass(frozen=True)
class Command:
    """One row of `commands`: a request to the runner (from the CLI or the TUI) and its acknowledgement."""

    id: int
    run_id: int
    kind: str
    created_at: float
    acked_at: float | None
    note: str | None


@dataclass(frozen=True)
class Noise:
    """One row of `noise`: the spread of the trusted val_bpb over repeated runs of one train.py."""

    id: int
    commit_sha: str | None
    runs: int
    mean_bpb: float
    std_bpb: float
    values_json: list
    recorded_at: float
    run_id: int | None  # the run that measured its own noise; None: `autoresearch noise`


@dataclass(frozen=True)
class Node:
    """One row of `nodes`: a node of a run's executor as the runner last saw it."""

    id: int
    run_id: int
    name: str
    address: str | None
    gpus: int
    device: str | None
    state: str  # runner/executors/base.py NODE_STATES: starting, ready, refused, lost, gone
    note: str | None  # why it is refused or lost
    util_percent: float | None
    seen_at: float


@dataclass(frozen=True)
class AgentNotes:
    """One row of `agent_notes`: the notes the agent kept, as one proposal of a run replaced them."""

    id: int
    run_id: int
    experiment_id: int  # the experiment that proposal became
    text: str  # as data: escaped (newlines kept) and at most NOTES_CHARS
    recorded_at: float


@dataclass(frozen=True)
class Notification:
    """One row of `notifications`: one notice sent (or not) to one [notify] service (runner/notify.py)."""

    id: int
    run_id: int
    event: str
    title: str
    service: str  # e.g. "urls[1] (JSON)": never the URL
    queued_at: float
    sent_at: float
    ok: int  # 1: the service took it
    error: str | None


def _columns(row_type: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(row_type))


RUN_COLUMNS = _columns(Run)
EXPERIMENT_COLUMNS = _columns(Experiment)
METRIC_COLUMNS = _columns(MetricPoint)
GPU_COLUMNS = _columns(GpuSample)
COMMAND_COLUMNS = _columns(Command)
NOISE_COLUMNS = _columns(Noise)
NODE_COLUMNS = _columns(Node)
NOTES_COLUMNS = _columns(AgentNotes)
NOTIFICATION_COLUMNS = _columns(Notification)
FINDING_COLUMNS = ("id", "experiment_id", "recorded_at", "rule_id", "severity", "action", "message",
                   "evidence_json")


# --- opening and migrating ---------------------------------------------------------------------------


def open_store(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """Open the store at path: the writer migrates it forward, a reader only checks its version."""
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise UserError(f"autoresearch needs SQLite >= 3.37; this Python has {sqlite3.sqlite_version}")
    conn = _open_reader(path) if readonly else _open_writer(path)
    conn.row_factory = sqlite3.Row
    return conn


def _open_writer(path: Path) -> sqlite3.Connection:
    """The runner's connection: WAL, synchronous=NORMAL, foreign keys on, schema migrated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {WRITER_BUSY_TIMEOUT_MS}")
        check_not_newer(path, schema_version(conn, path))
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection (TUI, CLI) that never takes a write lock."""
    if not path.is_file():
        raise UserError(f"no store at {path}: nothing has run in this workspace yet")
    uri = f"{path.resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {READER_BUSY_TIMEOUT_MS}")
        version = schema_version(conn, path)
        check_not_newer(path, version)
        if version == 0:  # a runner is creating it this moment (the file exists, its tables not yet)
            raise UserError(f"the store at {path} is being created: nothing has been recorded yet")
        if version < SCHEMA_VERSION:
            raise UserError(
                f"store {path} has schema version {version}, older than this autoresearch "
                f"({SCHEMA_VERSION}): run `autoresearch migrate` to upgrade it"
            )
    except BaseException:
        conn.close()
        raise
    return conn


def schema_version(conn: sqlite3.Connection, path: Path) -> int:
    """The store's `user_version`; a file that is not SQLite is a UserError."""
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorname == "SQLITE_NOTADB":
            raise UserError(f"{path} is not an autoresearch store (not an SQLite database)") from None
        raise


def check_not_newer(path: Path, version: int) -> None:
    """Refuse a store written by a newer autoresearch: its schema may mean things this code ignores."""
    if version > SCHEMA_VERSION:
        raise UserError(
            f"store {path} has schema version {version}, newer than this autoresearch "
            f"({SCHEMA_VERSION}): upgrade autoresearch"
        )


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the missing migrations, all in one transaction (the version is re-read under the lock)."""
    with transaction(conn):
        version = schema_version(conn, path)
        check_not_newer(path, version)
        for number in range(version + 1, SCHEMA_VERSION + 1):
            for statement in sql_statements(MIGRATIONS[number - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")


def sql_statements(script: str) -> Iterator[str]:
    """The complete statements of an SQL script, one by one (executescript would commit first)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement: {pending.strip()[:80]}")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One short write transaction: committed whole, or rolled back whole."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite has already rolled back after some errors (e.g. disk full)
            conn.execute("ROLLBACK")
        raise


# --- encoding ----------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def encode(column: str, value: Any) -> Any:
    """The SQLite value for column: `_json` columns are JSON-encoded (None stays NULL), untrusted text is data."""
    if column.endswith("_json") and value is not None:
        text = json.dumps(value, default=_json_default, sort_keys=True)
        return json.dumps(json_as_data(json.loads(text)), sort_keys=True) if column in UNTRUSTED_JSON else text
    return text_as_data(column, value)


def decode(column: str, value: Any) -> Any:
    """The Python value of a stored one: `_json` columns are parsed, untrusted text is data."""
    if column.endswith("_json") and value is not None:
        parsed = json.loads(value)
        return json_as_data(parsed) if column in UNTRUSTED_JSON else parsed
    return text_as_data(column, value)


def text_as_data(column: str, value: Any) -> Any:
    """value escaped and cut to its bound when column is one of UNTRUSTED_TEXT (or UNTRUSTED_LINES, its newlines
    kept); any other value as it is."""
    if column in UNTRUSTED_TEXT and isinstance(value, str):
        return as_data(value, UNTRUSTED_TEXT[column])
    if column in UNTRUSTED_LINES and isinstance(value, str):
        return as_data(value, UNTRUSTED_LINES[column], keep_newlines=True)
    return value


def _row(row_type: type, row: sqlite3.Row) -> Any:
    return row_type(**{key: decode(key, value) for key, value in zip(row.keys(), row, strict=True)})


def checked_fields(table: str, columns: tuple[str, ...], fields: dict[str, Any]) -> dict[str, Any]:
    """fields, encoded, after checking each name is a writable column of table (never `id`)."""
    unknown = sorted(set(fields) - (set(columns) - {"id"}))
    if unknown:
        raise ValueError(f"not a writable column of {table}: {', '.join(map(repr, unknown))}")
    return {name: encode(name, value) for name, value in fields.items()}


def _insert(conn: sqlite3.Connection, table: str, values: dict[str, Any]) -> int:
    names = ", ".join(values)
    marks = ", ".join("?" * len(values))
    return conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(values.values())).lastrowid


def _update(conn: sqlite3.Connection, table: str, row_id: int, values: dict[str, Any]) -> None:
    if not values:
        return
    assignments = ", ".join(f"{name} = ?" for name in values)
    with transaction(conn):
        cursor = conn.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", (*values.values(), row_id))
        if cursor.rowcount != 1:
            raise LookupError(f"no row {row_id} in {table}")


# --- runs --------------------------------------------------------------------------------------------


def create_run(conn: sqlite3.Connection, *, tag: str, agent: str, config_toml: str = "",
               policy_toml: str = "", pid: int | None = None, host: str | None = None,
               time_budget_s: float | None = None, sandbox: str | None = None, source: str | None = None) -> int:
    """Record a new run in state running, owned by this process unless pid/host say otherwise.

    time_budget_s: the policy's training seconds per experiment; sandbox: the provider's name; source: the data.
    """
    now = time.time()
    values = {
        "tag": tag, "agent": agent, "config_toml": config_toml, "policy_toml": policy_toml,
        "state": RunState.RUNNING.value, "started_at": now, "heartbeat_at": now,
        "time_budget_s": time_budget_s, "sandbox": sandbox, "source": source,
        "pid": os.getpid() if pid is None else pid, "host": socket.gethostname() if host is None else host,
    }
    with transaction(conn):
        return _insert(conn, "runs", values)


def update_run(conn: sqlite3.Connection, run_id: int, **fields: Any) -> None:
    """Set columns of one run, e.g. state='finished', ended_at=time.time()."""
    _update(conn, "runs", run_id, checked_fields("runs", RUN_COLUMNS, fields))


def heartbeat(conn: sqlite3.Connection, run_id: int) -> None:
    """Say the run's runner is alive now (readers judge staleness from heartbeat_at)."""
    update_run(conn, run_id, heartbeat_at=time.time())


def get_run(conn: sqlite3.Connection, run_id: int) -> Run | None:
    """One run, or None."""
    row = conn.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else _row(Run, row)


def list_runs(conn: sqlite3.Connection) -> list[Run]:
    """Every run, oldest first."""
    rows = conn.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY id").fetchall()
    return [_row(Run, row) for row in rows]


# --- experiments -------------------------------------------------------------------------------------


def create_experiment(conn: sqlite3.Connection, *, run_id: int | None, description: str,
                      status: str = Status.RUNNING, seq: int | None = None, **fields: Any) -> int:
    """Record an experiment (by default running, before its container starts); returns its id.

    seq defaults to the next number within the run (or among run-less experiments).
    Other columns may be given as keyword arguments, e.g. commit_sha=..., train_py_sha256=...
    """
    values = checked_fields("experiments", EXPERIMENT_COLUMNS,
                            {**fields, "run_id": run_id, "description": description, "status": status})
    values.setdefault("started_at", time.time())
    with transaction(conn):
        values["seq"] = next_seq(conn, run_id) if seq is None else seq
        return _insert(conn, "experiments", values)


def next_seq(conn: sqlite3.Connection, run_id: int | None) -> int:
    """The next experiment number within a run (or among run-less experiments)."""
    row = conn.execute("SELECT MAX(seq) FROM experiments WHERE run_id IS ?", (run_id,)).fetchone()
    return (row[0] or 0) + 1


def update_experiment(conn: sqlite3.Connection, experiment_id: int, **fields: Any) -> None:
    """Set columns of one experiment, e.g. status='keep', val_bpb=0.99, ended_at=time.time()."""
    _update(conn, "experiments", experiment_id, checked_fields("experiments", EXPERIMENT_COLUMNS, fields))


def get_experiment(conn: sqlite3.Connection, experiment_id: int) -> Experiment | None:
    """One experiment, or None."""
    sql = f"SELECT {', '.join(EXPERIMENT_COLUMNS)} FROM experiments WHERE id = ?"
    row = conn.execute(sql, (experiment_id,)).fetchone()
    return None if row is None else _row(Experiment, row)


def list_experiments(conn: sqlite3.Connection, run_id: int | None = None,
                     limit: int | None = None) -> list[Experiment]:
    """Experiments oldest first, all or one run's; with limit, only the latest `limit` of them."""
    where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
    sql = f"SELECT {', '.join(EXPERIMENT_COLUMNS)} FROM experiments {where} ORDER BY id DESC LIMIT ?"
    rows = conn.execute(sql, (*params, -1 if limit is None else limit)).fetchall()
    return [_row(Experiment, row) for row in reversed(rows)]


# --- measurements ------------------------------------------------------------------------------------


def add_metric_points(conn: sqlite3.Connection, experiment_id: int, points: Iterable[ProgressPoint]) -> None:
    """Record progress points in one transaction; a step already recorded keeps its first value."""
    now = time.time()
    rows = [(experiment_id, p.step, p.elapsed, p.loss, p.tok_per_s, p.mfu, now) for p in points
            if p.step in INT64]
    if not rows:
        return
    sql = f"INSERT OR IGNORE INTO metric_points ({', '.join(METRIC_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    with transaction(conn):
        conn.executemany(sql, rows)


def metric_points(conn: sqlite3.Connection, experiment_id: int, since_step: int = 0) -> list[MetricPoint]:
    """An experiment's points with step >= since_step, in step order."""
    sql = (f"SELECT {', '.join(METRIC_COLUMNS)} FROM metric_points"
           " WHERE experiment_id = ? AND step >= ? ORDER BY step")
    return [_row(MetricPoint, row) for row in conn.execute(sql, (experiment_id, since_step))]


def add_gpu_samples(conn: sqlite3.Connection, experiment_id: int | None, samples: Iterable[Sample]) -> None:
    """Record monitor samples in one transaction (experiment_id None: between experiments)."""
    rows = [(experiment_id, s.recorded_at, s.device, s.kind, s.util_percent, s.mem_used_mb, s.mem_total_mb,
             s.power_w, s.temp_c, s.proc_mem_mb) for s in samples]
    if not rows:
        return
    names = ", ".join(GPU_COLUMNS[1:])
    with transaction(conn):
        conn.executemany(f"INSERT INTO gpu_samples ({names}) VALUES ({', '.join('?' * len(rows[0]))})", rows)


def gpu_samples(conn: sqlite3.Connection, experiment_id: int | None, since: float = 0.0) -> list[GpuSample]:
    """Samples of one experiment (None: those between experiments) recorded at or after since."""
    sql = (f"SELECT {', '.join(GPU_COLUMNS)} FROM gpu_samples"
           " WHERE experiment_id IS ? AND recorded_at >= ? ORDER BY recorded_at, id")
    return [_row(GpuSample, row) for row in conn.execute(sql, (experiment_id, since))]


# --- findings ----------------------------------------------------------------------------------------


def add_findings(conn: sqlite3.Connection, experiment_id: int, findings: Iterable[Finding]) -> None:
    """Record an experiment's policy findings, with their evidence, in one transaction."""
    now = time.time()
    rows = [(experiment_id, f.rule_id, f.severity, f.action, encode("message", f.message),
             encode("evidence_json", f.evidence), now) for f in findings]
    if not rows:
        return
    sql = ("INSERT INTO findings (experiment_id, rule_id, severity, action, message, evidence_json,"
           " recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
    with transaction(conn):
        conn.executemany(sql, rows)


def list_findings(conn: sqlite3.Connection, experiment_id: int | None = None) -> list[StoredFinding]:
    """Every finding (or one experiment's), in the order they were recorded."""
    where, params = ("WHERE experiment_id = ?", (experiment_id,)) if experiment_id is not None else ("", ())
    sql = f"SELECT {', '.join(FINDING_COLUMNS)} FROM findings {where} ORDER BY id"
    return [_stored_finding(row) for row in conn.execute(sql, params)]


def _stored_finding(row: sqlite3.Row) -> StoredFinding:
    finding = Finding(row["rule_id"], row["severity"], row["action"], decode("message", row["message"]),
                      decode("evidence_json", row["evidence_json"]))
    return StoredFinding(row["id"], row["experiment_id"], row["recorded_at"], finding)


# --- the command channel, noise, agent turns ---------------------------------------------------------


def add_command(conn: sqlite3.Connection, run_id: int, kind: str, note: str = "") -> int:
    """Ask the run's runner to stop, pause, resume or skip; it acknowledges by setting acked_at."""
    with transaction(conn):
        return _insert(conn, "commands", {"run_id": run_id, "kind": kind, "created_at": time.time(), "note": note})


def pending_commands(conn: sqlite3.Connection, run_id: int) -> list[Command]:
    """Commands of the run not yet acknowledged, oldest first."""
    rows = conn.execute(f"SELECT {', '.join(COMMAND_COLUMNS)} FROM commands WHERE run_id = ? AND acked_at IS NULL "
                        "ORDER BY id", (run_id,)).fetchall()
    return [_row(Command, row) for row in rows]


def ack_command(conn: sqlite3.Connection, command_id: int) -> None:
    _update(conn, "commands", command_id, {"acked_at": time.time()})


def get_command(conn: sqlite3.Connection, command_id: int) -> Command | None:
    row = conn.execute(f"SELECT {', '.join(COMMAND_COLUMNS)} FROM commands WHERE id = ?", (command_id,)).fetchone()
    return None if row is None else _row(Command, row)


def add_noise(conn: sqlite3.Connection, commit_sha: str | None, values: list[float], mean: float, std: float,
              run_id: int | None = None) -> int:
    with transaction(conn):
        return _insert(conn, "noise", {"commit_sha": commit_sha, "runs": len(values), "mean_bpb": mean,
                                       "std_bpb": std, "values_json": encode("values_json", values),
                                       "recorded_at": time.time(), "run_id": run_id})


def latest_noise(conn: sqlite3.Connection, run_id: int | None = None) -> Noise | None:
    """The newest noise measurement: the run's own when run_id names a run that measured one, else the newest of
    `autoresearch noise`."""
    if run_id is not None:
        row = conn.execute(f"SELECT {', '.join(NOISE_COLUMNS)} FROM noise WHERE run_id = ? ORDER BY id DESC LIMIT 1",
                           (run_id,)).fetchone()
        if row is not None:
            return _row(Noise, row)
    row = conn.execute(f"SELECT {', '.join(NOISE_COLUMNS)} FROM noise WHERE run_id IS NULL ORDER BY id DESC LIMIT 1"
                       ).fetchone()
    return None if row is None else _row(Noise, row)


def set_node(conn: sqlite3.Connection, run_id: int, name: str, *, state: str, gpus: int, address: str | None = None,
             device: str | None = None, note: str | None = None, util_percent: float | None = None) -> None:
    """Record what the run's executor knows of one node now (one row per node and run); name, address and note
    come from the node: stored as data."""
    with transaction(conn):
        conn.execute("INSERT INTO nodes (run_id, name, address, gpus, device, state, note, util_percent, seen_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, name) DO UPDATE SET address = excluded."
                     "address, gpus = excluded.gpus, device = excluded.device, state = excluded.state, "
                     "note = excluded.note, util_percent = excluded.util_percent, seen_at = excluded.seen_at",
                     (run_id, as_data(name, DESCRIPTION_CHARS), None if address is None else as_data(address, 200),
                      gpus, device, state, None if note is None else as_data(note, EXCERPT_CHARS), util_percent,
                      time.time()))


def list_nodes(conn: sqlite3.Connection, run_id: int) -> list[Node]:
    rows = conn.execute(f"SELECT {', '.join(NODE_COLUMNS)} FROM nodes WHERE run_id = ? ORDER BY name",
                        (run_id,)).fetchall()
    return [_row(Node, row) for row in rows]


def add_agent_turn(conn: sqlite3.Connection, *, run_id: int | None, experiment_id: int | None, model: str,
                   usage: dict[str, Any], latency_s: float, request: dict, response: dict, error: str | None) -> int:
    """Log one model call (like `llm`'s log): tokens, dollars, latency, what was sent and received."""
    values = {"run_id": run_id, "experiment_id": experiment_id, "model": model, "latency_s": latency_s,
              "request_json": encode("request_json", request), "response_json": encode("response_json", response),
              "error": error, "recorded_at": time.time(),
              **{k: usage.get(k) for k in ("input_tokens", "output_tokens", "cache_read_tokens",
                                           "cache_write_tokens", "cost_usd")}}
    with transaction(conn):
        return _insert(conn, "agent_turns", values)


def link_agent_turns(conn: sqlite3.Connection, turn_ids: list[int], experiment_id: int) -> None:
    """Attach turns logged before their experiment existed (the proposal comes first) to it."""
    with transaction(conn):
        conn.executemany("UPDATE agent_turns SET experiment_id = ? WHERE id = ?",
                         [(experiment_id, turn) for turn in turn_ids])


def add_agent_notes(conn: sqlite3.Connection, run_id: int, experiment_id: int, text: str) -> int:
    """Record the notes a proposal left (the whole text, agent-written: stored as data), with its experiment."""
    with transaction(conn):
        return _insert(conn, "agent_notes", {"run_id": run_id, "experiment_id": experiment_id,
                                             "text": encode("text", text), "recorded_at": time.time()})


def latest_notes(conn: sqlite3.Connection, run_id: int) -> str:
    """The run's notes as its latest proposal left them ("" when the agent kept none)."""
    row = conn.execute("SELECT text FROM agent_notes WHERE run_id = ? ORDER BY id DESC LIMIT 1", (run_id,)).fetchone()
    return "" if row is None else decode("text", row["text"])


def notes_at(conn: sqlite3.Connection, experiment_id: int) -> AgentNotes | None:
    """The notes the agent kept when it proposed the experiment: those its proposal left, else the newest an
    earlier proposal of its run left; None when there were none yet."""
    row = conn.execute(
        f"SELECT {', '.join(NOTES_COLUMNS)} FROM agent_notes WHERE experiment_id <= ? AND run_id = "
        "(SELECT run_id FROM experiments WHERE id = ?) ORDER BY experiment_id DESC, id DESC LIMIT 1",
        (experiment_id, experiment_id)).fetchone()
    return None if row is None else _row(AgentNotes, row)


def spent_usd(conn: sqlite3.Connection, run_id: int) -> float:
    """Dollars the run's agent calls cost so far."""
    return conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM agent_turns WHERE run_id = ?", (run_id,)).fetchone()[0]


def run_by_tag(conn: sqlite3.Connection, tag: str) -> Run | None:
    row = conn.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE tag = ? ORDER BY id DESC LIMIT 1",
                       (tag,)).fetchone()
    return None if row is None else _row(Run, row)


def add_notification(conn: sqlite3.Connection, run_id: int, *, event: str, title: str, service: str,
                     queued_at: float, sent_at: float, ok: bool, error: str | None = None) -> int:
    """Record one notice sent (or not) to one service; the error may quote the service: stored as data."""
    with transaction(conn):
        return _insert(conn, "notifications", {
            "run_id": run_id, "event": event, "title": as_data(title, DESCRIPTION_CHARS), "service": service,
            "queued_at": queued_at, "sent_at": sent_at, "ok": int(ok),
            "error": None if error is None else as_data(error, EXCERPT_CHARS)})


def list_notifications(conn: sqlite3.Connection, run_id: int) -> list[Notification]:
    """The run's notices, oldest first."""
    rows = conn.execute(f"SELECT {', '.join(NOTIFICATION_COLUMNS)} FROM notifications WHERE run_id = ? ORDER BY id",
                        (run_id,)).fetchall()
    return [_row(Notification, row) for row in rows]

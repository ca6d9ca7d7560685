"""The store on real SQLite files: migrations, one writer and many readers, crash safety, and audit."""

import contextlib
import dataclasses
import json
import math
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autoresearch.runner.audit import audit
from autoresearch.runner.check.findings import Finding
from autoresearch.runner.cli import disk_full, main
from autoresearch.runner.errors import UserError
from autoresearch.runner.phases.experiment import Timings
from autoresearch.runner.phases.metrics import ProgressPoint
from autoresearch.runner.record import store
from autoresearch.runner.record.status import RunState, Status
from autoresearch.runner.record.untrusted import EXCERPT_CHARS, as_data
from autoresearch.runner.sandbox.monitor import Sample


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / ".autoresearch" / "store.db"


@pytest.fixture
def writer(path: Path):
    conn = store.open_store(path)
    yield conn
    conn.close()


def version_1_store(path: Path) -> None:
    """A store as the first schema version wrote it, with one experiment in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in store.sql_statements(store.MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO experiments (seq, description, status, started_at) VALUES (1, 'old', 'keep', 1.0)")
    conn.close()


def set_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# --- opening and migrating ---------------------------------------------------------------------------


def test_empty_store_is_created_at_the_latest_version_with_the_writer_settings(writer, path):
    assert writer.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert writer.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert writer.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert writer.execute("PRAGMA busy_timeout").fetchone()[0] == store.WRITER_BUSY_TIMEOUT_MS
    assert {"runs", "experiments", "metric_points", "gpu_samples", "findings", "agent_turns"} <= table_names(writer)
    assert path.is_file()


def test_version_1_store_migrates_forward_keeping_its_rows(path):
    version_1_store(path)
    conn = store.open_store(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert "agent_turns" in table_names(conn)
    assert [e.description for e in store.list_experiments(conn)] == ["old"]
    conn.close()


def store_at_version(path: Path, version: int) -> sqlite3.Connection:
    """A store as that schema version left it (its first migrations only), open for writing by hand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    for script in store.MIGRATIONS[:version]:
        for statement in store.sql_statements(script):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def test_a_version_3_store_gains_the_run_budget_and_sandbox_columns(path):
    conn = store_at_version(path, 3)
    conn.execute("INSERT INTO runs (tag, started_at, state, config_toml, policy_toml, agent)"
                 " VALUES ('old', 1.0, 'finished', '', '[limits]\ntime_budget_s = 300\n', 'sweep')")
    conn.close()
    with pytest.raises(UserError, match="autoresearch migrate"):
        store.open_store(path, readonly=True)
    conn = store.open_store(path)
    old = store.run_by_tag(conn, "old")
    assert (old.state, old.time_budget_s, old.sandbox) == ("finished", None, None)
    new = store.get_run(conn, store.create_run(conn, tag="new", agent="sweep", time_budget_s=60.0, sandbox="process"))
    assert (new.time_budget_s, new.sandbox) == (60.0, "process")
    conn.close()
    reader = store.open_store(path, readonly=True)
    assert [r.tag for r in store.list_runs(reader)] == ["old", "new"]
    reader.close()


def test_a_version_7_store_gains_the_agent_notes_keeping_its_rows(path):
    conn = store_at_version(path, 7)
    conn.execute("INSERT INTO runs (tag, started_at, state, config_toml, policy_toml, agent)"
                 " VALUES ('old', 1.0, 'finished', '', '', 'claude')")
    conn.execute("INSERT INTO experiments (run_id, seq, description, status, started_at)"
                 " VALUES (1, 1, 'baseline', 'keep', 1.0)")
    conn.close()
    with pytest.raises(UserError, match="autoresearch migrate"):
        store.open_store(path, readonly=True)
    conn = store.open_store(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION == 9
    assert store.latest_notes(conn, 1) == "" and store.notes_at(conn, 1) is None
    store.add_agent_notes(conn, 1, 1, "kept after the migration")
    assert store.latest_notes(conn, 1) == "kept after the migration"
    assert [e.description for e in store.list_experiments(conn)] == ["baseline"]
    conn.close()


def test_a_version_8_store_gains_the_notifications_and_a_services_words_are_stored_as_data(path):
    conn = store_at_version(path, 8)
    conn.execute("INSERT INTO runs (tag, started_at, state, config_toml, policy_toml, agent)"
                 " VALUES ('old', 1.0, 'finished', '', '', 'claude')")
    conn.close()
    conn = store.open_store(path)
    assert store.list_notifications(conn, 1) == []
    store.add_notification(conn, 1, event="best", title="autoresearch old: new best", service="urls[0] (JSON)",
                           queued_at=1.0, sent_at=1.5, ok=True)
    store.add_notification(conn, 1, event="end", title="autoresearch old: run finished", service="urls[0] (JSON)",
                           queued_at=2.0, sent_at=2.5, ok=False, error="HTTP 500: \x1b[31mboom\n" + "x" * 5000)
    sent, failed = store.list_notifications(conn, 1)
    assert (sent.event, sent.ok, sent.error, sent.sent_at - sent.queued_at) == ("best", 1, None, 0.5)
    assert (failed.event, failed.ok) == ("end", 0)
    assert "\x1b" not in failed.error and "\n" not in failed.error and len(failed.error) <= EXCERPT_CHARS
    conn.close()


def test_reopening_a_current_store_changes_nothing(path):
    store.open_store(path).close()
    conn = store.open_store(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    conn.close()


def test_a_failing_migration_leaves_the_store_at_its_old_version(path, monkeypatch):
    version_1_store(path)
    broken = "CREATE TABLE half_done (x INTEGER) STRICT;\nCREATE TABLE oops (x NOTATYPE) STRICT;\n"
    monkeypatch.setattr(store, "MIGRATIONS", [store.MIGRATIONS[0], broken])
    monkeypatch.setattr(store, "SCHEMA_VERSION", 2)
    with pytest.raises(sqlite3.Error):
        store.open_store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "half_done" not in table_names(conn)
    conn.close()


@pytest.mark.parametrize("readonly", [False, True])
def test_a_store_newer_than_the_code_is_refused(path, readonly):
    store.open_store(path).close()
    set_version(path, store.SCHEMA_VERSION + 1)
    with pytest.raises(UserError, match=rf"schema version {store.SCHEMA_VERSION + 1}, newer than this "
                                        rf"autoresearch \({store.SCHEMA_VERSION}\): upgrade autoresearch"):
        store.open_store(path, readonly=readonly)


def test_a_reader_asks_for_a_migration_of_an_older_store(path):
    version_1_store(path)
    with pytest.raises(UserError, match=r"older than this autoresearch .* run `autoresearch migrate`"):
        store.open_store(path, readonly=True)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1  # untouched


def test_a_reader_of_a_missing_store_says_so_and_creates_nothing(path):
    with pytest.raises(UserError, match="no store at"):
        store.open_store(path, readonly=True)
    assert not path.exists()


def test_a_file_that_is_not_sqlite_is_a_user_error(path):
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a database" * 500)
    with pytest.raises(UserError, match="not an autoresearch store"):
        store.open_store(path)


def test_sql_statements_splits_a_script_and_refuses_an_unfinished_one():
    assert list(store.sql_statements("CREATE TABLE a (x);\nCREATE TABLE b (y);\n")) == [
        "CREATE TABLE a (x);\n", "CREATE TABLE b (y);\n"]
    with pytest.raises(ValueError, match="incomplete"):
        list(store.sql_statements("CREATE TABLE a (x)"))


def test_row_dataclasses_match_the_schema(writer):
    def columns(table: str) -> tuple[str, ...]:
        return tuple(row["name"] for row in writer.execute(f"PRAGMA table_info({table})"))

    assert columns("runs") == store.RUN_COLUMNS
    assert columns("experiments") == store.EXPERIMENT_COLUMNS
    assert columns("metric_points") == store.METRIC_COLUMNS
    assert columns("gpu_samples") == store.GPU_COLUMNS
    assert columns("agent_notes") == store.NOTES_COLUMNS
    assert set(columns("findings")) == set(store.FINDING_COLUMNS)


# --- one writer, many readers ------------------------------------------------------------------------


def test_a_reader_cannot_write(writer, path):
    reader = store.open_store(path, readonly=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("INSERT INTO runs (tag, started_at, state, config_toml, policy_toml, agent)"
                       " VALUES ('x', 0, 'running', '', '', 'sweep')")
    reader.close()


def test_a_reader_holding_a_read_transaction_does_not_block_the_writer(writer, path):
    reader = store.open_store(path, readonly=True)
    assert reader.execute("PRAGMA busy_timeout").fetchone()[0] == store.READER_BUSY_TIMEOUT_MS
    reader.execute("BEGIN")
    assert store.list_experiments(reader) == []  # the reader now holds a snapshot

    writer.execute("PRAGMA busy_timeout = 0")  # any wait for a lock would fail at once
    experiment = store.create_experiment(writer, run_id=None, description="while read")
    store.add_metric_points(writer, experiment, [ProgressPoint(1, 0.5, 4.0, 100.0, 10.0)])
    store.update_experiment(writer, experiment, status="ok")

    assert store.list_experiments(reader) == []  # its snapshot is stable
    reader.execute("COMMIT")
    assert [e.status for e in store.list_experiments(reader)] == ["ok"]
    reader.close()


def test_an_open_reader_sees_each_commit_of_the_writer(writer, path):
    reader = store.open_store(path, readonly=True)
    run = store.create_run(writer, tag="t", agent="sweep")
    experiment = store.create_experiment(writer, run_id=run, description="first")
    assert Path(f"{path}-wal").stat().st_size > 0  # the rows are in the WAL, not yet checkpointed
    assert store.get_experiment(reader, experiment).description == "first"
    for step in range(3):
        store.add_metric_points(writer, experiment, [ProgressPoint(step, step, 5.0 - step, 1.0, 1.0)])
        assert [p.step for p in store.metric_points(reader, experiment)] == list(range(step + 1))
    reader.close()


def test_many_readers_at_once(writer, path):
    store.create_experiment(writer, run_id=None, description="x")
    readers = [store.open_store(path, readonly=True) for _ in range(8)]
    for reader in readers:
        reader.execute("BEGIN")
        assert len(store.list_experiments(reader)) == 1
    store.create_experiment(writer, run_id=None, description="y")
    for reader in readers:
        reader.execute("COMMIT")
        assert len(store.list_experiments(reader)) == 2
        reader.close()


BATCH = 2000

LOOP_CHILD = textwrap.dedent(f"""
    import sys
    from pathlib import Path
    from autoresearch.runner.record import store
    from autoresearch.runner.phases.metrics import ProgressPoint

    conn = store.open_store(Path(sys.argv[1]))
    run = store.create_run(conn, tag="killed", agent="sweep")
    while True:
        experiment = store.create_experiment(conn, run_id=run, description="x" * 200)
        print(f"created {{experiment}}", flush=True)
        store.add_metric_points(conn, experiment, [ProgressPoint(s, s, 1.0, 2.0, 3.0) for s in range({BATCH})])
        print(f"points {{experiment}}", flush=True)
        store.update_experiment(conn, experiment, status="keep", val_bpb=1.0, ended_at=1.0)
        print(f"closed {{experiment}}", flush=True)
""")


@pytest.mark.parametrize("delay_s", [0.0, 0.003, 0.011, 0.029])
def test_a_writer_killed_mid_way_leaves_every_committed_row_and_nothing_half_written(path, delay_s):
    child = subprocess.Popen([sys.executable, "-c", LOOP_CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    lines = [child.stdout.readline() for _ in range(30)]
    time.sleep(delay_s)  # let the kill land anywhere in a write
    child.send_signal(signal.SIGKILL)
    child.wait()
    lines += child.stdout.readlines()  # everything it said before dying was committed
    child.stdout.close()
    acknowledged: dict[str, set[int]] = {"created": set(), "points": set(), "closed": set()}
    complete = [line for line in lines if line.endswith("\n")]  # the kill can cut the last line short
    for what, experiment in (line.split() for line in complete):
        acknowledged[what].add(int(experiment))

    reader = store.open_store(path, readonly=True)
    assert reader.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert reader.execute("PRAGMA foreign_key_check").fetchall() == []
    experiments = {e.id: e for e in store.list_experiments(reader)}
    assert acknowledged["created"] <= experiments.keys()
    for experiment in experiments.values():
        points = store.metric_points(reader, experiment.id)
        assert len(points) in (0, BATCH)  # a batch is all there or not at all
        if experiment.id in acknowledged["points"]:
            assert len(points) == BATCH
        if experiment.id in acknowledged["closed"]:
            assert (experiment.status, experiment.val_bpb) == ("keep", 1.0)
        else:
            assert (experiment.status, experiment.val_bpb) in {("running", None), ("keep", 1.0)}
    reader.close()

    writer = store.open_store(path)  # the next runner carries on
    store.create_experiment(writer, run_id=None, description="after the crash")
    writer.close()


INSIDE_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from autoresearch.runner.record import store

    conn = store.open_store(Path(sys.argv[1]))
    store.create_experiment(conn, run_id=None, description="committed")
    conn.execute("PRAGMA cache_size = 4")  # spill the open transaction's pages into the WAL
    with store.transaction(conn):
        for i in range(5000):
            conn.execute("INSERT INTO experiments (seq, description, status, started_at)"
                         " VALUES (?, ?, 'running', 0)", (i + 2, "uncommitted" * 20))
        print("inside", flush=True)
        time.sleep(60)
""")


def test_a_writer_killed_inside_a_transaction_leaves_none_of_it(path):
    child = subprocess.Popen([sys.executable, "-c", INSIDE_CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "inside\n"
    wal_before_kill = Path(f"{path}-wal").stat().st_size
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert wal_before_kill > 500_000  # the uncommitted pages really were on disk

    reader = store.open_store(path, readonly=True)
    assert reader.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [e.description for e in store.list_experiments(reader)] == ["committed"]
    reader.close()


# --- writing and reading rows ------------------------------------------------------------------------


def test_runs_are_created_updated_and_heartbeated(writer):
    run = store.create_run(writer, tag="mar5", agent="claude", config_toml="a = 1\n", pid=42, host="box")
    created = store.get_run(writer, run)
    assert (created.tag, created.state, created.pid, created.host) == ("mar5", "running", 42, "box")
    store.heartbeat(writer, run)
    assert store.get_run(writer, run).heartbeat_at >= created.heartbeat_at
    store.update_run(writer, run, state="finished", ended_at=created.started_at + 60)
    assert store.get_run(writer, run).state == "finished"
    assert [r.id for r in store.list_runs(writer)] == [run]
    assert store.get_run(writer, run + 1) is None


def test_an_experiment_is_created_running_and_closed_with_json_columns_decoded(writer):
    experiment = store.create_experiment(writer, run_id=None, description="lr 3e-4", commit_sha="abc123",
                                         train_py_sha256="f" * 64)
    row = store.get_experiment(writer, experiment)
    assert (row.status, row.seq, row.commit_sha, row.ended_at) == ("running", 1, "abc123", None)
    store.update_experiment(writer, experiment, status="keep", val_bpb=0.9979, ended_at=row.started_at + 300,
                            reported_json={"val_bpb": 0.5, "mfu": float("nan")},
                            timings_json=Timings(training=300.0))
    row = store.get_experiment(writer, experiment)
    assert (row.status, row.val_bpb) == ("keep", 0.9979)
    assert row.reported_json["val_bpb"] == 0.5 and math.isnan(row.reported_json["mfu"])
    assert row.timings_json == dataclasses.asdict(Timings(training=300.0))
    assert store.get_experiment(writer, experiment + 1) is None


def test_update_accepts_only_known_column_names(writer):
    experiment = store.create_experiment(writer, run_id=None, description="x")
    for bad in ({"status = 'keep'; --": 1}, {"bogus": 1}, {"id": 7}, {"val_bpb": 1.0, "nope": 2}):
        with pytest.raises(ValueError, match="not a writable column of experiments"):
            store.update_experiment(writer, experiment, **bad)
    with pytest.raises(ValueError, match="not a writable column of runs"):
        store.update_run(writer, 1, **{"state) VALUES ('x'); --": "x"})
    with pytest.raises(ValueError):
        store.create_experiment(writer, run_id=None, description="y", **{"1=1; DROP TABLE runs; --": 1})
    row = store.get_experiment(writer, experiment)
    assert (row.id, row.status, row.val_bpb) == (experiment, "running", None)


def test_updating_a_missing_row_is_an_error(writer):
    with pytest.raises(LookupError):
        store.update_experiment(writer, 12345, status="keep")


def test_the_schema_refuses_unknown_statuses_and_dangling_references(writer):
    with pytest.raises(sqlite3.IntegrityError):
        store.create_experiment(writer, run_id=None, description="x", status="great")
    with pytest.raises(sqlite3.IntegrityError):
        store.create_experiment(writer, run_id=99, description="x")
    with pytest.raises(sqlite3.IntegrityError):
        store.create_experiment(writer, run_id=None, description="x", val_bpb="low")  # STRICT: no casts
    assert store.list_experiments(writer) == []
    assert writer.in_transaction is False


def check_list(sql: str, column: str) -> set[str]:
    """The words a `column IN (...)` CHECK constraint of sql allows."""
    found = re.search(rf"CHECK \({column} IN \(([^)]*)\)\)", sql)
    assert found, f"no CHECK on {column}"
    return set(re.findall(r"'([^']*)'", found.group(1)))


def test_the_status_enums_are_exactly_what_the_schema_allows(writer):
    tables = dict(writer.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    assert check_list(tables["experiments"], "status") == {s.value for s in Status}
    assert check_list(tables["runs"], "state") == {s.value for s in RunState}
    run = store.create_run(writer, tag="t", agent="sweep")
    for status in Status:  # each one is stored, as its plain string
        experiment = store.create_experiment(writer, run_id=run, description=status.value, status=status)
        assert store.get_experiment(writer, experiment).status == status.value
    for state in RunState:
        store.update_run(writer, run, state=state)
        assert type(store.get_run(writer, run).state) is str and store.get_run(writer, run).state == state


def test_seq_counts_within_each_run(writer):
    first, second = (store.create_run(writer, tag=t, agent="sweep") for t in ("a", "b"))
    for run in (first, second, first, None, None):
        store.create_experiment(writer, run_id=run, description="x")
    assert [e.seq for e in store.list_experiments(writer, run_id=first)] == [1, 2]
    assert [e.seq for e in store.list_experiments(writer, run_id=second)] == [1]
    assert [(e.run_id, e.seq) for e in store.list_experiments(writer) if e.run_id is None] == [(None, 1), (None, 2)]
    with pytest.raises(sqlite3.IntegrityError):
        store.create_experiment(writer, run_id=first, description="dup", seq=2)


def test_list_experiments_limit_keeps_the_latest_in_order(writer):
    ids = [store.create_experiment(writer, run_id=None, description=str(i)) for i in range(5)]
    assert [e.id for e in store.list_experiments(writer, limit=2)] == ids[-2:]
    assert [e.id for e in store.list_experiments(writer)] == ids


def test_metric_points_are_batched_ordered_and_filtered(writer):
    experiment = store.create_experiment(writer, run_id=None, description="x")
    store.add_metric_points(writer, experiment, [ProgressPoint(s, s * 0.1, 5.0, 1e5, 40.0) for s in range(10)])
    store.add_metric_points(writer, experiment, [
        ProgressPoint(3, 99.0, 99.0, 0.0, 0.0),  # a repeated step keeps its first value
        ProgressPoint(10, 1.0, float("nan"), float("nan"), float("nan")),  # NaN is stored as NULL
        ProgressPoint(2**70, 1.0, 1.0, 1.0, 1.0),  # does not fit in SQLite: not stored
    ])
    store.add_metric_points(writer, experiment, [])
    points = store.metric_points(writer, experiment)
    assert [p.step for p in points] == list(range(11))
    assert points[3].loss == 5.0
    assert (points[10].loss, points[10].tok_per_s, points[10].mfu) == (None, None, None)
    assert [p.step for p in store.metric_points(writer, experiment, since_step=8)] == [8, 9, 10]


def test_gpu_samples_round_trip(writer):
    experiment = store.create_experiment(writer, run_id=None, description="x")
    samples = [Sample(100.0 + i, "gpu0", "nvml", 95.0, 40_000.0, 81_559.0, 38_000.0, 690.5, 71.0)
               for i in range(3)]
    store.add_gpu_samples(writer, experiment, samples)
    store.add_gpu_samples(writer, None, [Sample(200.0, "cpu", "psutil", 50.0, 1000.0, 16_000.0, 900.0)])
    stored = store.gpu_samples(writer, experiment, since=101.0)
    assert [s.recorded_at for s in stored] == [101.0, 102.0]
    assert (stored[0].device, stored[0].power_w, stored[0].proc_mem_mb) == ("gpu0", 690.5, 38_000.0)
    idle = store.gpu_samples(writer, None)
    assert (idle[0].kind, idle[0].power_w, idle[0].temp_c) == ("psutil", None, None)


def test_findings_round_trip_with_their_evidence(writer):
    blocked = store.create_experiment(writer, run_id=None, description="x", status="blocked")
    other = store.create_experiment(writer, run_id=None, description="y")
    first = Finding("static.forbidden_import", "high", "block", "imports socket", {"line": 3, "module": "socket"})
    second = Finding("static.size", "low", "flag", "big file")
    store.add_findings(writer, blocked, [first, second])
    store.add_findings(writer, other, [second])
    assert [f.finding for f in store.list_findings(writer, blocked)] == [first, second]
    assert [f.experiment_id for f in store.list_findings(writer)] == [blocked, blocked, other]


def test_agent_notes_are_kept_per_run_and_read_as_of_an_experiment(writer):
    run, other = (store.create_run(writer, tag=tag, agent="claude") for tag in ("a", "b"))
    first, second, third = (store.create_experiment(writer, run_id=run, description=d) for d in "xyz")
    elsewhere = store.create_experiment(writer, run_id=other, description="w")
    assert store.latest_notes(writer, run) == "" and store.notes_at(writer, first) is None
    store.add_agent_notes(writer, run, first, "- LR 0.02 diverges\n- try depth")
    store.add_agent_notes(writer, other, elsewhere, "the other run's")
    store.add_agent_notes(writer, run, third, "")  # the agent cleared its notes
    assert store.latest_notes(writer, run) == "" and store.latest_notes(writer, other) == "the other run's"
    at_first, at_second, at_third = (store.notes_at(writer, e) for e in (first, second, third))
    assert (at_first.run_id, at_first.experiment_id, at_first.text) == (run, first, "- LR 0.02 diverges\n- try depth")
    assert at_second == at_first  # its proposal left them unchanged
    assert at_third.text == "" and store.notes_at(writer, elsewhere).text == "the other run's"
    with pytest.raises(sqlite3.IntegrityError):
        store.add_agent_notes(writer, run, 999, "no such experiment")


def test_agent_notes_are_stored_as_data_with_their_newlines(writer):
    run = store.create_run(writer, tag="a", agent="claude")
    experiment = store.create_experiment(writer, run_id=run, description="x")
    hostile = "line one\n\x1b[2J\u202eevil [red]x[/red]\n" + "A" * 5000
    store.add_agent_notes(writer, run, experiment, hostile)
    raw = writer.execute("SELECT text FROM agent_notes").fetchone()[0]
    assert raw == as_data(hostile, store.NOTES_CHARS, keep_newlines=True) == store.latest_notes(writer, run)
    assert raw.startswith("line one\n\\x1b[2J\\u202eevil [red]x[/red]\nAAA") and len(raw) == store.NOTES_CHARS
    assert raw.endswith(" [... cut from 5040 characters]")  # escaped: 40 characters and 5000 As
    writer.execute("UPDATE agent_notes SET text = ?", (hostile,))  # as an older writer might have left it
    assert store.notes_at(writer, experiment).text == raw


# --- audit -------------------------------------------------------------------------------------------


def test_audit_with_no_findings_says_so(writer, capsys):
    assert audit(writer, as_json=False) == 0
    assert capsys.readouterr().out == "No policy findings recorded in this store.\n"
    assert audit(writer, as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == []


def audited_store(writer) -> tuple[int, int]:
    blocked = store.create_experiment(writer, run_id=None, description="x", status="blocked")
    ran = store.create_experiment(writer, run_id=None, description="y", commit_sha="0123456789abcdef")
    store.update_experiment(writer, ran, status="violation")
    store.add_findings(writer, blocked, [Finding("static.forbidden_import", "high", "block",
                                                 "imports socket \x1b[2J", {"line": 3, "excerpt": "x" * 2000,
                                                                             "context": "y" * 2000})])
    store.add_findings(writer, ran, [Finding("dynamic.metric_mismatch", "critical", "discard", "lies",
                                             {"reported": 0.5, "trusted": 1.1})])
    return blocked, ran


def test_audit_table_fits_100_columns_and_escapes_control_characters(writer, capsys):
    blocked, ran = audited_store(writer)
    assert audit(writer, as_json=False) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(map(len, lines)) <= 100
    assert "\x1b" not in out and "imports socket \\x1b[2J" in out
    assert f"{blocked:>4}  -           blocked    high      block    static.forbidden_import" in lines
    assert f"{ran:>4}  0123456789  violation  critical  discard  dynamic.metric_mismatch" in lines
    assert '      evidence: {"reported": 0.5, "trusted": 1.1}' in lines
    assert "audit --json` has all of it" in out
    assert lines[-1] == "2 findings in 2 experiments: 1 block, 1 discard"


def test_audit_json_is_one_complete_document(writer, capsys):
    blocked, ran = audited_store(writer)
    audit(writer, as_json=True)
    findings = json.loads(capsys.readouterr().out)
    assert [(f["experiment_id"], f["commit_sha"], f["status"]) for f in findings] == [
        (blocked, None, "blocked"), (ran, "0123456789abcdef", "violation")]
    assert findings[0]["evidence"]["excerpt"] == as_data("x" * 2000)  # as stored: bounded, see untrusted.py
    assert findings[0]["message"] == "imports socket \\x1b[2J"
    assert set(findings[1]) == {"id", "experiment_id", "run_id", "commit_sha", "status", "rule_id", "severity",
                                "action", "message", "evidence", "recorded_at"}


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs: a real full disk (needs root to mount; CI runs as root)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(reason=f"a real full disk needs a 1 MiB tmpfs, which only root can mount: "
                           f"{mounted.stderr.strip()}")
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True)


def test_a_full_disk_fails_the_write_and_keeps_every_committed_row(tiny_disk):
    path = tiny_disk / "store.db"
    conn = store.open_store(path)
    created = []
    with pytest.raises(sqlite3.OperationalError) as full:
        for _ in range(100_000):
            experiment = store.create_experiment(conn, run_id=None, description="x" * 2000)
            created.append(experiment)
    assert full.value.sqlite_errorname == "SQLITE_FULL"
    assert disk_full(full.value)
    conn.close()
    reader = store.open_store(path, readonly=True)
    assert reader.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [e.id for e in store.list_experiments(reader)] == created
    reader.close()


def test_the_cli_says_the_disk_is_full_in_one_line_and_loses_nothing(tiny_disk, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tiny_disk))  # the scratch workspace and its store live there
    monkeypatch.chdir(tmp_path)
    blocked = tmp_path / "train.py"
    blocked.write_text("import subprocess\nsubprocess.run(['true'])\n")  # blocked before it runs: no Docker
    assert main(["try", str(blocked)]) == 1
    with contextlib.suppress(OSError), open(tiny_disk / "ballast", "wb") as ballast:  # fill it to the last byte
        while True:
            ballast.write(b"\0" * 4096)
            ballast.flush()
    capsys.readouterr()
    for _ in range(20):  # SQLite may still fit a row in a free page: write until the disk is truly full
        code = main(["try", str(blocked)])
        err = capsys.readouterr().err
        if "everything recorded so far is intact" in err:
            break
    assert code == 1 and "full" in err and err.count("\n") == 1
    (tiny_disk / "ballast").unlink()
    reader = store.open_store(tiny_disk / "scratch" / ".autoresearch" / "store.db", readonly=True)
    assert reader.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert store.list_experiments(reader)[0].status == "blocked"
    reader.close()


def test_a_reader_of_a_store_being_created_is_told_nothing_is_recorded_yet(path):
    path.parent.mkdir(parents=True)
    sqlite3.connect(path).close()  # the file exists; the runner has not applied the schema yet
    with pytest.raises(UserError, match=r"is being created: nothing has been recorded yet"):
        store.open_store(path, readonly=True)

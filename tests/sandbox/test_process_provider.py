"""The process provider: phases as plain processes under limits, on machines without Docker (no Docker here)."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox import process_provider
from autoresearch.runner.sandbox.base import DEADLINE, PHASE_LABEL, RUNNER_PID_LABEL, Mount, PhaseSpec, Resources
from autoresearch.runner.sandbox.monitor import SKIPPED, Monitor
from autoresearch.runner.sandbox.process_provider import ProcessSandbox, parse_size
from autoresearch.runner.task_files import OFFLINE_CORPUS, default_task_dir

IMAGE = f"process:{sys.executable}"


@pytest.fixture
def sandbox(tmp_path) -> ProcessSandbox:
    return ProcessSandbox(state=tmp_path / "state", temp=tmp_path / "phases")


def python(code: str, **fields) -> PhaseSpec:
    """A phase running code with python3, no mounts unless given."""
    fields.setdefault("mounts", [])
    return PhaseSpec(image=IMAGE, command=["python3", "-c", code], **fields)


def test_exit_code_and_lines_reach_on_line_and_the_log(sandbox, tmp_path):
    lines = []
    result = sandbox.run(python("print('one'); print('two', flush=True); raise SystemExit(3)"),
                         tmp_path / "phase.log", on_line=lines.append)
    assert result.exit_code == 3 and result.killed_by is None and not result.oom_killed
    assert lines == ["one", "two"]
    assert (tmp_path / "phase.log").read_text() == "one\ntwo\n" == result.log_head
    assert result.log_bytes == 8 and result.run_seconds > 0 and result.start_seconds > 0
    assert not list((tmp_path / "phases").iterdir()), "the phase root is removed"
    assert not list((tmp_path / "state" / "phases").iterdir()), "the phase's record is removed"


def test_the_deadline_kills_with_its_reason(sandbox, tmp_path):
    began = time.monotonic()
    result = sandbox.run(PhaseSpec(image=IMAGE, command=["sleep", "30"], mounts=[], deadline_s=1),
                         tmp_path / "phase.log")
    assert time.monotonic() - began < 10
    assert result.killed_by == DEADLINE and result.timed_out and result.exit_code is None


def test_memory_past_the_limit_is_an_oom_kill_of_the_whole_tree(sandbox, tmp_path):
    grow = "x = b'1' * (300 * 2**20); import time; time.sleep(30)"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grow!r}])"
    result = sandbox.run(python(code, resources=Resources(memory="64m"), deadline_s=30), tmp_path / "phase.log")
    assert result.oom_killed and result.killed_by is None and result.exit_code == 137
    assert result.run_seconds < 20


def test_a_write_to_a_read_only_mount_never_reaches_the_host(sandbox, tmp_path):
    host = tmp_path / "prepare.py"
    host.write_text("original\n")
    code = ("import os, sys\n"
            "os.chmod(sys.argv[1], 0o644)\n"
            "open(sys.argv[1], 'w').write('changed')\n"
            "print(open('prepare.py').read())\n")  # the working directory is /task
    spec = PhaseSpec(image=IMAGE, command=["python3", "-c", code, "/task/prepare.py"],
                     mounts=[Mount(host, "/task/prepare.py")])
    result = sandbox.run(spec, tmp_path / "phase.log")
    assert result.exit_code == 0, result.log_tail
    assert result.log_tail.strip() == "changed"  # its own copy
    assert host.read_text() == "original\n"


def test_writable_mounts_reach_the_host_and_train_py_imports_its_neighbour(sandbox, tmp_path):
    (tmp_path / "prepare.py").write_text("VALUE = 42\n")
    candidate = tmp_path / "work" / "train.py"
    candidate.parent.mkdir()
    candidate.write_text("import os, prepare\n"
                         "open(os.path.join(os.environ['OUT'], 'result'), 'w').write(str(prepare.VALUE))\n"
                         "open(__file__, 'a').write('# touched\\n')\n")
    out = tmp_path / "out"
    out.mkdir()
    spec = PhaseSpec(image=IMAGE, command=["python3", "/task/train.py"],
                     mounts=[Mount(tmp_path / "prepare.py", "/task/prepare.py"),
                             Mount(candidate, "/task/train.py", read_only=False), Mount(out, "/out", read_only=False)],
                     environment={"OUT": "/out"})
    result = sandbox.run(spec, tmp_path / "phase.log")
    assert result.exit_code == 0, result.log_tail
    assert (out / "result").read_text() == "42"
    assert candidate.read_text().endswith("# touched\n")
    assert out.is_dir() and (tmp_path / "prepare.py").read_text() == "VALUE = 42\n"


def test_paths_are_rewritten_into_the_phase_root(sandbox, tmp_path):
    data = tmp_path / "shard.bin"
    data.write_bytes(b"tokens")
    code = ("import os, sys\n"
            "print(os.getcwd()); print(sys.argv[1]); print(sys.argv[2]); print(os.environ['AUTORESEARCH_DATA'])\n"
            "print(open(os.path.join(os.environ['AUTORESEARCH_DATA'], 'shard.bin')).read())\n")
    spec = PhaseSpec(image=IMAGE, command=["python3", "-c", code, "/data/shard.bin", "--out=/data"],
                     mounts=[Mount(data, "/data/shard.bin")], environment={"AUTORESEARCH_DATA": "/data"})
    lines = []
    result = sandbox.run(spec, tmp_path / "phase.log", on_line=lines.append)
    assert result.exit_code == 0, result.log_tail
    cwd, shard, option, env, content = lines
    root = Path(cwd).parent
    assert cwd.endswith("/task") and root.name.startswith(process_provider.PHASE_PREFIX)
    assert shard == f"{root}/data/shard.bin" and option == f"--out={root}/data" and env == f"{root}/data"
    assert content == "tokens"


def test_the_runner_environment_never_reaches_the_phase(sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake-secret")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    lines = []
    result = sandbox.run(python(code, environment={"GIVEN": "1"}), tmp_path / "phase.log", on_line=lines.append)
    assert result.exit_code == 0, result.log_tail
    environment = json.loads(lines[0])
    assert "ANTHROPIC_API_KEY" not in environment and "sk-ant-fake-secret" not in lines[0]
    assert environment["GIVEN"] == "1" and environment["CUDA_VISIBLE_DEVICES"] == ""
    assert environment["PYTHONNOUSERSITE"] == "1" and environment["HOME"].endswith("/home")
    assert environment["TMPDIR"].startswith(str(tmp_path / "phases"))


def test_the_watch_gets_the_phase_pid_and_its_kill_ends_the_phase(sandbox, tmp_path):
    seen = {}
    cancel = threading.Event()

    def watch(pid, kill):
        seen["pid"] = pid
        return Monitor(pid, None, kill, interval_s=0.1, cancel=cancel).start()

    lines = []

    def on_line(line):
        lines.append(line)
        cancel.set()  # the user skips it once it runs

    code = "import os, time; print(os.getpid(), flush=True); time.sleep(30)"
    result = sandbox.run(python(code, deadline_s=30), tmp_path / "phase.log", on_line=on_line, watch=watch)
    assert result.killed_by == SKIPPED and result.exit_code == 137 and not result.timed_out
    assert seen["pid"] == int(lines[0])
    assert result.usage is not None and result.run_seconds < 20


def test_a_hand_over_carries_the_model_from_training_to_scoring(sandbox, tmp_path):
    handover = sandbox.open_handover(IMAGE, 1, {PHASE_LABEL: "test"})
    assert oct(handover.path.stat().st_mode & 0o777) == "0o700"
    train = ("import os; d = os.environ['AUTORESEARCH_HANDOVER']\n"
             "open(os.path.join(d, 'model.graph'), 'wb').write(b'weights')\n")
    trained = sandbox.run(python(train, mounts=[handover.mount("/handover", read_only=False)],
                                 environment={"AUTORESEARCH_HANDOVER": "/handover"}), tmp_path / "train.log")
    assert trained.exit_code == 0 and trained.killed_by is None, trained.log_tail
    score = ("import os, stat, sys; d = sys.argv[1]; model = os.path.join(d, 'model.graph')\n"
             "print(os.listdir(d), stat.S_ISREG(os.lstat(model).st_mode))\n"
             "print(open(model, 'rb').read())\n"
             "os.chmod(model, 0o644); open(model, 'ab').write(b'tampered')\n")
    lines = []
    scored = sandbox.run(PhaseSpec(image=IMAGE, command=["python3", "-c", score, "/handover"],
                                   mounts=[handover.mount()]), tmp_path / "score.log", on_line=lines.append)
    assert scored.exit_code == 0, scored.log_tail
    assert lines == ["['model.graph'] True", "b'weights'"]
    assert (handover.path / "model.graph").read_bytes() == b"weights"
    handover.release()
    handover.release()
    assert not handover.path.exists() and not handover.record.exists()


def test_a_link_left_in_the_hand_over_stays_a_link_for_the_scorer(sandbox, tmp_path):
    handover = sandbox.open_handover(IMAGE, 1, {})
    secret = tmp_path / "secret"
    secret.write_text("host file")
    (handover.path / "model.graph").symlink_to(secret)
    code = "import os, sys; print(os.path.islink(sys.argv[1]))"
    lines = []
    sandbox.run(PhaseSpec(image=IMAGE, command=["python3", "-c", code, "/handover/model.graph"],
                          mounts=[handover.mount()]), tmp_path / "score.log", on_line=lines.append)
    assert lines == ["True"]
    handover.release()
    assert secret.read_text() == "host file"


@pytest.mark.parametrize("code", [
    "open(H + '/model.graph', 'wb').write(b'0' * 3 * 2**20); import time; time.sleep(30)",
    "[open(f'{H}/{i}', 'w').close() for i in range(40)]; import time; time.sleep(30)",
    "open(H + '/model.graph', 'wb').write(b'0' * 3 * 2**20)",  # exits before the watcher's next look
], ids=["bytes", "entries", "last-write"])
def test_a_hand_over_past_its_cap_is_a_disk_cap_kill(sandbox, tmp_path, code):
    handover = sandbox.open_handover(IMAGE, 1, {})
    spec = PhaseSpec(image=IMAGE, command=["python3", "-c", "import sys; H = sys.argv[1]; " + code, "/handover"],
                     mounts=[handover.mount(read_only=False)], deadline_s=30)
    result = sandbox.run(spec, tmp_path / "train.log")
    assert result.killed_by == "disk_cap" and result.run_seconds < 20
    handover.release()


def test_no_file_grows_past_the_tmpfs_size(sandbox, tmp_path):
    code = "import os; open(os.environ['TMPDIR'] + '/big', 'wb').write(b'0' * 3 * 2**20)"
    result = sandbox.run(python(code, resources=Resources(tmpfs_size="1m")), tmp_path / "phase.log")
    assert result.exit_code == 1 and "File too large" in result.log_tail  # RLIMIT_FSIZE (Python ignores SIGXFSZ)


def test_the_phase_root_is_capped_at_the_tmpfs_size(sandbox, tmp_path):
    code = ("import os, time\n"
            "for i in range(4): open(os.environ['TMPDIR'] + f'/part{i}', 'wb').write(b'0' * 900 * 2**10)\n"
            "time.sleep(30)\n")
    result = sandbox.run(python(code, resources=Resources(tmpfs_size="1m"), deadline_s=30), tmp_path / "phase.log")
    assert result.killed_by == "disk_cap" and result.run_seconds < 20


def test_a_mount_under_a_writable_folder_mount_is_refused(sandbox, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "file").write_text("x")
    spec = python("pass", mounts=[Mount(tmp_path / "out", "/out", read_only=False), Mount(tmp_path / "file", "/out/f")])
    with pytest.raises(ValueError, match="under a writable folder"):
        sandbox.run(spec, tmp_path / "phase.log")
    assert os.listdir(tmp_path / "out") == []
    assert not list((tmp_path / "phases").iterdir())


def test_a_phase_root_with_a_locked_folder_is_still_removed(sandbox, tmp_path):
    code = "import os; os.makedirs('locked/deeper'); os.chmod('locked', 0)"
    result = sandbox.run(python(code), tmp_path / "phase.log")
    assert result.exit_code == 0, result.log_tail
    assert not list((tmp_path / "phases").iterdir())


def test_leftover_processes_end_with_the_phase(sandbox, tmp_path):
    marker = tmp_path / "child.pid"
    code = (f"import subprocess, sys; p = subprocess.Popen(['sleep', '60']); open({str(marker)!r}, 'w')"
            f".write(str(p.pid))")
    result = sandbox.run(python(code), tmp_path / "phase.log")
    assert result.exit_code == 0, result.log_tail
    child = int(marker.read_text())
    time.sleep(0.2)
    assert not _running(child)


def test_remove_orphans_kills_phases_and_removes_hand_overs_of_dead_runners(sandbox, tmp_path):
    labels = {"test.run": "orphans", RUNNER_PID_LABEL: "999999"}
    handover = sandbox.open_handover(IMAGE, 1, labels)
    other = sandbox.open_handover(IMAGE, 1, {"test.run": "another"})
    results = []
    phase = threading.Thread(target=lambda: results.append(sandbox.run(
        PhaseSpec(image=IMAGE, command=["sleep", "60"], mounts=[], labels=labels, deadline_s=60),
        tmp_path / "phase.log")))
    phase.start()
    records = sandbox.state / "phases"
    for _ in range(100):
        running = [json.loads(p.read_text()) for p in records.glob("*.json")]
        if running and "sid" in running[0]:
            break
        time.sleep(0.05)
    assert sandbox.remove_orphans({"test.run": "orphans"}, alive=lambda pid: True) == []
    removed = sandbox.remove_orphans({"test.run": "orphans"}, alive=lambda pid: False)
    phase.join(timeout=20)
    assert not phase.is_alive() and results[0].exit_code == 137
    assert len(removed) == 2 and handover.name in removed
    assert [n for n in removed if n.startswith(process_provider.PHASE_PREFIX)]
    assert not handover.path.exists() and other.path.exists()
    other.release()


def test_parse_size_reads_docker_sizes():
    assert parse_size("8g") == 8 * 2**30 and parse_size("64m") == 64 * 2**20 and parse_size("512mb") == 512 * 2**20
    assert parse_size("1024") == 1024 and parse_size("1.5g") == int(1.5 * 2**30)
    with pytest.raises(ValueError):
        parse_size("lots")


def test_image_names_what_to_install_when_the_interpreter_lacks_a_module(sandbox, monkeypatch):
    monkeypatch.setattr(process_provider, "probe_interpreter",
                        lambda interpreter, flavor: {"missing": ["torch (ModuleNotFoundError: No module named "
                                                                 "'torch')"], "versions": {}, "cuda": None})
    with pytest.raises(UserError) as error:
        sandbox.image("cpu")
    message = str(error.value)
    assert "\n" not in message and "torch" in message and sys.executable in message
    assert "pip install 'autoresearch[task]'" in message


def test_image_for_cuda_says_when_torch_sees_no_gpu(sandbox, monkeypatch):
    monkeypatch.setattr(process_provider, "probe_interpreter",
                        lambda interpreter, flavor: {"missing": [], "versions": {}, "cuda": False})
    with pytest.raises(UserError, match="no CUDA GPU"):
        sandbox.image("cuda")


def test_image_probes_this_interpreter_once(sandbox, monkeypatch):
    calls = []
    real = process_provider.probe_interpreter
    monkeypatch.setattr(process_provider, "probe_interpreter",
                        lambda interpreter, flavor: calls.append(flavor) or real(interpreter, flavor))
    assert sandbox.image("cpu") == IMAGE == sandbox.image("cpu")
    assert calls == ["cpu"]


def test_network_is_cut_where_the_machine_allows_it_and_the_notice_says_which(sandbox, tmp_path):
    code = "import socket; print(sorted(name for _, name in socket.if_nameindex()))"
    lines = []
    sandbox.run(python(code), tmp_path / "phase.log", on_line=lines.append)
    if sandbox.network_cut:
        assert lines == ["['lo']"]
        assert "no network" in sandbox.notice()
    else:
        assert "its network" in sandbox.notice()
    assert "NO ISOLATION" in sandbox.notice() and not sandbox.isolated and sandbox.name == "process"


@pytest.mark.slow
def test_the_bundled_task_prepares_trains_and_scores_through_the_process_provider(sandbox, tmp_path):
    task = default_task_dir()
    image = sandbox.image("cpu")
    data = tmp_path / "data"
    data.mkdir()
    prepared = sandbox.run(PhaseSpec(
        image=image, command=["python3", "/task/prepare.py", "data", "--source", "offline", "--out", "/data"],
        mounts=[Mount(task / "prepare.py", "/task/prepare.py"), Mount(task / OFFLINE_CORPUS, f"/task/{OFFLINE_CORPUS}"),
                Mount(data, "/data", read_only=False)],
        labels={PHASE_LABEL: "prepare"}, deadline_s=900), tmp_path / "prepare.log")
    assert prepared.exit_code == 0, prepared.log_tail
    manifest = json.loads((data / "manifest.json").read_text())

    def data_mounts(split):
        files = ["manifest.json", manifest["tokenizer"]["file"], *(e["file"] for e in manifest["splits"][split])]
        return [Mount(data / name, f"/data/{name}") for name in files]

    work = tmp_path / "work"
    work.mkdir()
    candidate = work / "train.py"
    candidate.write_bytes((task / "train.py").read_bytes())
    handover = sandbox.open_handover(image, 64, {PHASE_LABEL: "test"})
    lines = []
    trained = sandbox.run(PhaseSpec(
        image=image, command=["python3", "/task/train.py"],
        mounts=[Mount(task / "prepare.py", "/task/prepare.py"), Mount(candidate, "/task/train.py", read_only=False),
                *data_mounts("train"), handover.mount("/handover", read_only=False)],
        environment={"AUTORESEARCH_DATA": "/data", "AUTORESEARCH_HANDOVER": "/handover",
                     "AUTORESEARCH_TIME_BUDGET": "5"},
        labels={PHASE_LABEL: "train"}, deadline_s=300), work / "train.log", on_line=lines.append)
    assert trained.exit_code == 0 and trained.killed_by is None, trained.log_tail
    assert any(line.startswith("val_bpb") for line in lines), trained.log_tail
    assert os.listdir(handover.path) == ["model.graph"]

    verdict = work / "verdict-val"
    verdict.mkdir()
    nonce = "0123456789abcdef"
    scored = sandbox.run(PhaseSpec(
        image=image, command=["python3", "-I", "/task/prepare.py", "evaluate", "--handover", "/handover", "--data",
                              "/data", "--split", "val", "--verdict", "/verdict"],
        mounts=[Mount(task / "prepare.py", "/task/prepare.py"), *data_mounts("val"), handover.mount(),
                Mount(verdict, "/verdict", read_only=False)],
        environment={"AUTORESEARCH_NONCE": nonce}, labels={PHASE_LABEL: "score-val"}, deadline_s=900),
        work / "score-val.log")
    handover.release()
    assert scored.exit_code == 0, scored.log_tail
    result = json.loads((verdict / "verdict.json").read_text())
    assert result["status"] == "ok" and result["nonce"] == nonce and result["split"] == "val"
    assert isinstance(result["bpb"], float) and result["bpb"] > 0


def _running(pid: int) -> bool:
    try:
        state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    except OSError:
        return False
    return bool(state) and not state.startswith("Z")

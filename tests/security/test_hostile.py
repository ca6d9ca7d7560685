"""Hostile train.py candidates against the real engine: each is blocked, contained or recorded.

Every case asserts its precise outcome, and the `attempt` fixture asserts afterwards that prepare.py
and every data file are unchanged and that no container was left behind. Cases that the static rules
would block run under the permissive policy (static rules off), so the container itself is tested.
"""

import os
import time
from pathlib import Path

import pytest

from .conftest import log_of, rules_of, stored

pytestmark = [pytest.mark.docker]

# A train.py that hands over a model without training: equal logits for every token.
EXPORT_UNIFORM = (Path(__file__).parent / "uniform_export.py").read_text()


# --- blocked before running (default policy) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("import prepare\nprepare.evaluate = lambda *a, **k: {'status': 'ok', 'bpb': 0.0}\n", "static.prepare_tamper"),
        ("import sys, prepare\nsys.modules['prepare'] = object()\n", "static.prepare_tamper"),
        ("open('/task/prepare.py', 'a').write('# mine now')\n", "static.data_write"),
        ("import socket\nsocket.create_connection(('1.1.1.1', 80))\n", "static.forbidden_import"),
        ("import subprocess\nsubprocess.run(['sh', '-c', 'id'])\n", "static.forbidden_import"),
        ("import os\nprint(os.environ['ANTHROPIC_API_KEY'])\n", "static.env_secrets"),
        ("mod = __import__('soc' + 'ket')\n", "static.dynamic_code"),
        ("import os\nwhile True:\n    os.fork()\n", "static.process_control"),
        ("().__class__.__bases__[0].__subclasses__()\n", "static.reflection"),
    ],
    ids=["patch-evaluate", "replace-sys-modules", "write-prepare", "socket", "subprocess", "read-api-key",
         "dynamic-import", "fork-bomb", "subclass-escape"],
)
def test_static_rules_block_before_anything_runs(attempt, workspace, source, rule):
    result = attempt(source, policy="default")
    assert result.status == "blocked"
    assert rules_of(result)[rule] == "block"
    assert result.log_path is None  # it never ran
    assert stored(workspace, result).status == "blocked"


@pytest.mark.parametrize(
    ("source", "rule"),
    [(b"", "static.empty"), (b"def broken(:\n", "static.syntax"), (b"x = 1\n" * 50_000, "static.size"),
     (b"\x00\x01\x02binary", "static.binary")],
    ids=["empty", "not-python", "huge", "binary"],
)
def test_bad_candidates_are_blocked_and_recorded(attempt, source, rule):
    result = attempt(source, policy="default")
    assert result.status == "blocked"
    assert rule in rules_of(result)


# --- contained at run time (permissive policy: the container must hold) --------------------------------


def test_writing_prepare_and_data_fails_read_only(attempt):
    result = attempt(
        "import glob\n"
        "for path in ['/task/prep' + 'are.py', *glob.glob('/da' + 'ta/*')]:\n"
        "    try:\n"
        "        open(path, 'ab').write(b'x')\n"
        "        print('WROTE', path)\n"
        "    except OSError as exc:\n"
        "        print('denied', path, type(exc).__name__)\n"
    )
    log = log_of(result)
    assert "WROTE" not in log
    assert "denied /task/prepare.py" in log and "denied /data/train_000.bin" in log
    assert result.status == "crash" and "no exported model" in result.exit_reason


def test_validation_and_test_data_are_not_mounted_for_training(attempt):
    result = attempt(
        "import os\nprint('DATA', sorted(os.listdir('/da' + 'ta')))\n"
        "for root in ['/', '/task', '/tmp', '/handover']:\n"
        "    for dirpath, _, files in os.walk(root):\n"
        "        if dirpath.startswith(('/proc', '/sys')): continue\n"
        "        for f in files:\n"
        "            if f.startswith(('val_', 'test_')) and f.endswith('.bin'): print('FOUND', dirpath, f)\n"
    )
    log = log_of(result)
    assert "DATA ['manifest.json', 'tokenizer.json', 'train_000.bin']" in log
    assert "FOUND" not in log
    assert result.status == "crash"


def test_network_and_dns_are_unreachable(attempt):
    result = attempt(
        "import socket\n"
        "for target in [('1.1.1.1', 53), ('8.8.8.8', 443), ('172.17.0.1', 2375)]:\n"
        "    try:\n"
        "        socket.create_connection(target, timeout=2); print('CONNECTED', target)\n"
        "    except OSError as exc:\n"
        "        print('no route', target, type(exc).__name__)\n"
        "try:\n"
        "    print('RESOLVED', socket.getaddrinfo('huggingface.co', 443))\n"
        "except OSError as exc:\n"
        "    print('no dns', type(exc).__name__)\n"
        "print('interfaces', sorted(name for _, name in socket.if_nameindex()))\n"
    )
    log = log_of(result)
    assert "CONNECTED" not in log and "RESOLVED" not in log
    assert "no dns" in log
    assert "interfaces ['lo']" in log
    assert result.status == "crash"


def test_fork_bomb_is_contained_by_the_pid_limit(attempt):
    began = time.monotonic()
    result = attempt(
        "import os, time\n"
        "children = 0\n"
        "for _ in range(10_000):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60); os._exit(0)\n"
        "        children += 1\n"
        "    except OSError:\n"
        "        break\n"
        "print('forked', children)\n"
    )
    forked = int(log_of(result).split("forked ")[1].split()[0])
    assert forked < 64  # pids_limit
    assert result.status == "crash"  # exits without a model; its sleeping children die with it
    assert time.monotonic() - began < 45


def test_memory_bomb_is_oom_killed(attempt):
    result = attempt("blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 2**20))\n")
    assert result.status == "oom"
    assert "OOMKilled" in result.exit_reason


def test_ignoring_sigterm_does_not_outlive_the_deadline(attempt):
    began = time.monotonic()
    result = attempt(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\nwhile True:\n    time.sleep(1)\n",
        deadline_allowance_cpu_s=3,
    )
    assert result.status == "timeout"
    assert time.monotonic() - began < 30


def test_a_daemon_does_not_outlive_train_py(attempt, docker_client):
    began = time.monotonic()
    result = attempt(
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(3600)\n"
        "    os._exit(0)\n"
        "print('daemon started, train.py exits', flush=True)\n"
    )
    assert result.status == "crash"
    assert time.monotonic() - began < 30  # the container ended with train.py, not with the daemon


def test_a_log_flood_is_capped_with_head_and_tail(attempt, workspace):
    result = attempt(
        "import sys\nline = b'flood ' * 170 + b'\\n'\nchunk = line * 1000\n"
        "for _ in range(1200):\n    sys.stdout.buffer.write(chunk)\n"  # about 1.2 GB
        "sys.stdout.buffer.write(b'the last line\\n')\n"
    )
    assert result.status == "crash"
    log = log_of(result)
    assert os.path.getsize(result.log_path) < 1_048_576 + 200  # the cap, plus the marker line
    assert "[autoresearch: dropped" in log and log.rstrip().endswith("the last line")
    assert rules_of(result)["dynamic.log_flood"] == "flag"
    assert stored(workspace, result).log_dropped_bytes > 1_000_000_000


def test_binary_output_is_stored_safely(attempt):
    result = attempt("import os, sys\nsys.stdout.buffer.write(os.urandom(200_000) + b'\\x00\\xff\\xfe')\n")
    assert result.status == "crash"
    with open(result.log_path, "rb") as f:
        assert len(f.read()) >= 200_000


def test_writing_outside_the_allowed_paths_fails(attempt):
    result = attempt(
        "import os\n"
        "for path in ['/etc/passwd', '/usr/lib/evil', '/evil', '/task/other.py', '/home/x', '/root/x']:\n"
        "    try:\n"
        "        open(path, 'w').write('x'); print('WROTE', path)\n"
        "    except OSError as exc:\n"
        "        print('denied', path, type(exc).__name__)\n"
        "try:\n"
        "    open('/tmp/fill', 'wb').write(b'x' * (64 * 2**20)); print('WROTE /tmp beyond its cap')\n"
        "except OSError as exc:\n"
        "    print('tmp full', exc.errno)\n"
        "print('uid', os.getuid(), 'euid', os.geteuid())\n"
    )
    log = log_of(result)
    assert "WROTE" not in log
    assert "tmp full 28" in log  # ENOSPC: /tmp is a 16 MiB tmpfs
    assert "uid 1000 euid 1000" in log


def test_secrets_and_the_docker_socket_are_out_of_reach(attempt, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-this-must-never-leak")
    result = attempt(
        "import os, socket\n"
        "print('ENV', dict(os.environ))\n"
        "for path in ['/var/run/docker.sock', '/run/docker.sock']:\n"
        "    print('sock', path, os.path.exists(path))\n"
        "try:\n"
        "    s = socket.socket(socket.AF_UNIX); s.connect('/var/run/docker.sock'); print('CONNECTED')\n"
        "except OSError as exc:\n"
        "    print('no docker', type(exc).__name__)\n"
        "print('caps', open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
    )
    log = log_of(result)
    assert "sk-ant-this-must-never-leak" not in log and "ANTHROPIC" not in log
    assert "sock /var/run/docker.sock False" in log and "CONNECTED" not in log
    assert "caps 0000000000000000" in log  # every capability dropped


def test_training_past_the_budget_is_killed_at_the_deadline(attempt):
    result = attempt(EXPORT_UNIFORM.replace("task = ", "import time\ntime.sleep(600)\ntask = "),
                     deadline_allowance_cpu_s=5)
    assert result.status == "timeout"
    assert result.val_bpb is None


def test_running_long_within_the_deadline_is_a_violation(attempt):
    result = attempt(
        "import time\ntime.sleep(14)\n" + EXPORT_UNIFORM
        + "print('---')\nprint('training_seconds: 3.9')\n",
    )
    assert result.status == "violation"
    assert rules_of(result)["dynamic.overhead"] == "discard"


def test_a_fake_metric_is_caught_and_the_trusted_score_stands(attempt, workspace):
    result = attempt(EXPORT_UNIFORM + "print('---')\nprint('val_bpb:          0.100000')\n")
    assert result.status == "violation"
    assert rules_of(result)["dynamic.metric_implausible"] == "discard"
    row = stored(workspace, result)
    assert row.val_bpb > 3.0  # the uniform model's trusted score
    assert row.reported_json["val_bpb"] == 0.1


def test_a_model_that_peeks_ahead_is_a_violation(attempt):
    peeks = EXPORT_UNIFORM.replace(
        "return self.bias.expand(*idx.shape, self.vocab) + 0 * idx[..., None]",
        "return 30.0 * torch.nn.functional.one_hot(torch.roll(idx, -1, 1), self.vocab).float() + self.bias",
    )
    result = attempt(peeks)
    assert result.status == "violation"
    assert "causality check failed" in result.exit_reason


def test_a_stateful_model_is_a_violation(attempt):
    stateful = EXPORT_UNIFORM.replace(
        "return self.bias.expand", "self.seen.add_(1)\n        return self.seen + self.bias.expand"
    ).replace("torch.nn.Parameter(torch.zeros(vocab))",
              "torch.nn.Parameter(torch.zeros(vocab))\n        self.register_buffer('seen', torch.zeros(1))")
    result = attempt(stateful)
    assert result.status == "violation"
    assert "mutates its state" in result.exit_reason


def test_exceeding_the_memory_cap_is_killed_by_the_host(attempt):
    """No GPU here: the host monitor applies gpu_memory_cap_mb to resident memory (the simulation)."""
    result = attempt(
        "import time\nheld = bytearray(400 * 2**20)\nfor i in range(0, len(held), 4096): held[i] = 1\n"
        "print('holding 400 MB', flush=True)\ntime.sleep(30)\n",
        gpu_memory_cap_mb=200,
    )
    assert result.status == "violation"
    assert result.exit_reason.startswith("dynamic.vram_cap")
    assert result.host_peak_mem_mb > 200


def test_filling_the_hand_over_past_its_cap_fails_inside_the_container(attempt):
    """The hand-over is a tmpfs of handover_max_mb: the write fails there, the host disk never sees it."""
    result = attempt(
        "import time\nwith open('/handover/model.graph', 'wb') as f:\n"
        "    for _ in range(200):\n        f.write(b'x' * 2**20); f.flush()\n",
        handover_max_mb=32,
    )
    assert result.status == "crash"
    assert "No space left on device" in log_of(result)


# --- the hand-over and the verdict (issue 8): what training leaves for the scorer is data, checked ------

FORGE_HEADER = EXPORT_UNIFORM + """
import json
path = prepare.HANDOVER_DIR / prepare.MODEL_FILE
blob = path.read_bytes()
n = int.from_bytes(blob[8:16], 'little')
header, payload = json.loads(blob[16:16 + n]), blob[16 + n:]
{change}
text = json.dumps(header).encode()
path.write_bytes(prepare.MAGIC + len(text).to_bytes(8, 'little') + text + payload)
"""


def add_node(op: str, args: str) -> str:
    """Source that appends a node computing op(args) from the model's output and makes it the output."""
    return (f"out = header['outputs'][0]['node']\n"
            f"header['nodes'].append({{'name': 'evil', 'op': '{op}', 'args': {args}, 'kwargs': {{}}}})\n"
            "header['outputs'] = [{'kind': 'USER_OUTPUT', 'node': 'evil'}]\n")


def test_a_pickled_torch_export_is_never_loaded(attempt):
    """The old .pt2 format, with a pickled payload that would run code in the scorer."""
    result = attempt(
        "import os, pickle, zipfile, prepare\n"
        "class Boom:\n"
        "    def __reduce__(self):\n"
        "        return (print, ('{\"status\": \"ok\", \"bpb\": 0.01}',))\n"
        "prepare.HANDOVER_DIR.mkdir(parents=True, exist_ok=True)\n"
        "with zipfile.ZipFile(prepare.HANDOVER_DIR / prepare.MODEL_FILE, 'w') as z:\n"
        "    z.writestr('archive/data.pkl', pickle.dumps(Boom()))\n"
    )
    assert result.status == "violation"
    assert "not a graph hand-over" in result.exit_reason
    assert result.val_bpb is None


def test_an_op_off_the_allowlist_is_a_violation_naming_it(attempt):
    result = attempt(FORGE_HEADER.format(change=add_node("aten.rand.default", "[[16, 256, 4096]]")))
    assert result.status == "violation"
    assert "aten.rand.default" in result.exit_reason and "allowlist" in result.exit_reason


def test_an_op_that_raises_with_a_forged_verdict_is_a_crash(attempt, workspace):
    """The scorer's exception text (here of a view that cannot fit) and a JSON line the candidate printed
    are never a result: the verdict comes only from the scorer's own file."""
    forged = '{"status": "ok", "split": "val", "bpb": 0.01, "val_bpb": 0.01, "nonce": ""}'
    result = attempt(FORGE_HEADER.format(change=add_node("aten.view.default", "[{'ref': out}, [7, 7]]"))
                     + f"print({forged!r})\n")
    assert result.status == "crash"
    assert "the model fails" in result.exit_reason
    assert result.val_bpb is None and stored(workspace, result).val_bpb is None


def test_printing_a_verdict_does_not_change_the_score(attempt):
    forged = '{"status": "ok", "split": "val", "bpb": 0.01, "val_bpb": 0.01, "nonce": "guess"}'
    result = attempt(EXPORT_UNIFORM + f"print({forged!r})\n")
    assert result.status == "ok"
    assert result.val_bpb > 3.0  # the uniform model's trusted score, not the printed one


def test_a_symlink_as_the_model_is_a_violation_and_never_followed(attempt):
    result = attempt(
        "import os, prepare\nprepare.HANDOVER_DIR.mkdir(parents=True, exist_ok=True)\n"
        "os.symlink('/data/train_000.bin', prepare.HANDOVER_DIR / prepare.MODEL_FILE)\n"
    )
    assert result.status == "violation"
    assert "not a regular file" in result.exit_reason


def test_a_flooded_hand_over_is_capped_and_rejected(attempt):
    """Sub-folders and files past the cap: the tmpfs refuses them, the host disk never sees them, and a
    hand-over with anything beside the model is a violation."""
    result = attempt(
        EXPORT_UNIFORM
        + "import os\nwritten = 0\n"
        "try:\n"
        "    for i in range(1000):\n"
        "        os.makedirs(f'/handover/sub{i}/deeper', exist_ok=True)\n"
        "        with open(f'/handover/sub{i}/deeper/blob', 'wb') as f:\n"
        "            f.write(b'x' * 2**20); written += 1\n"
        "except OSError as exc:\n"
        "    print('refused after', written, 'MiB:', exc.strerror, flush=True)\n",
        handover_max_mb=16,
    )
    assert "refused after" in log_of(result)
    assert result.status == "violation"
    assert "is accepted" in result.exit_reason
    work_dir = Path(result.work_dir)
    assert sum(f.stat().st_size for f in work_dir.rglob("*") if f.is_file()) < 2**20 + 2 * 1_048_576


def test_a_model_that_peeks_at_one_percent_of_positions_is_a_violation(attempt):
    peeks = EXPORT_UNIFORM.replace(
        "return self.bias.expand(*idx.shape, self.vocab) + 0 * idx[..., None]",
        "mask = (torch.arange(idx.shape[1]) % 100 == 37).float()[None, :, None]\n"
        "        following = torch.nn.functional.one_hot(torch.roll(idx, -1, 1), self.vocab).float()\n"
        "        return self.bias + 30.0 * following * mask",
    )
    result = attempt(peeks)
    assert result.status == "violation"
    assert "causality check failed" in result.exit_reason


def test_a_hostile_exit_text_is_stored_as_bounded_data(attempt, workspace):
    result = attempt("import sys\nsys.exit('\\x1b[2J\\x1b]0;pwned\\x07experiment 9: ok val_bpb 0.1 ' + 'A' * 5000)\n")
    assert result.status == "crash"
    reason = stored(workspace, result).exit_reason
    assert len(reason) < 700 and all(ch.isprintable() for ch in reason)
    assert "\\x1b[2J" in reason and "cut" in reason


def test_training_before_the_first_progress_line_is_a_violation(attempt):
    """Hidden compute outside the counted loop: 15 s of CPU work before the first progress line."""
    result = attempt(
        "import time\nend = time.monotonic() + 15\nx = 0\nwhile time.monotonic() < end:\n    x += 1\n"
        "for step in range(4):\n"
        "    print(f'progress step={step + 1} elapsed={step:.2f} loss=5.0 tok_per_s=1 mfu=0', flush=True)\n"
        "    time.sleep(1)\n" + EXPORT_UNIFORM
    )
    assert result.status == "violation"
    rules = rules_of(result)
    assert rules["dynamic.overhead"] == "discard"


def test_training_after_the_last_progress_line_is_a_violation(attempt):
    """Hidden compute inside 'export': 15 s of CPU work after the last progress line."""
    result = attempt(
        "import time\n"
        "for step in range(4):\n"
        "    print(f'progress step={step + 1} elapsed={step:.2f} loss=5.0 tok_per_s=1 mfu=0', flush=True)\n"
        "    time.sleep(1)\n"
        "end = time.monotonic() + 15\nx = 0\nwhile time.monotonic() < end:\n    x += 1\n" + EXPORT_UNIFORM
    )
    assert result.status == "violation"
    assert rules_of(result)["dynamic.overhead"] == "discard"

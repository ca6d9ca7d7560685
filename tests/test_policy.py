"""The policy engine: loading and validating policy files, static rules on sources, dynamic rules on runs."""

import dataclasses
import json
from pathlib import Path

import pytest

from autoresearch.runner.check.dynamic_rules import RunFacts, check_run
from autoresearch.runner.check.findings import Finding, worst_action
from autoresearch.runner.check.policy import RULE_PARAMS, bundled_policies, load_policy, policy_to_toml
from autoresearch.runner.check.static_rules import check_source
from autoresearch.runner.errors import UserError

TASK_DIR = Path(__file__).resolve().parents[1] / "task"
DEFAULT = load_policy()
STRICT = load_policy(name="strict")


# -- loading --------------------------------------------------------------------------------------------


def test_bundled_policies_load_complete():
    assert bundled_policies() == ["default", "strict"]
    for policy in (DEFAULT, STRICT):
        assert set(policy.rules) == set(RULE_PARAMS)
        assert policy.path is not None and policy.path.is_file()
    assert DEFAULT.name == "default" and DEFAULT.limits.time_budget_s == 300
    assert DEFAULT.limits.memory == "16g" and DEFAULT.limits.gpu_memory_cap_mb == 0


def test_strict_tightens_default():
    assert STRICT.name == "strict"
    assert STRICT.limits.train_py_max_bytes < DEFAULT.limits.train_py_max_bytes
    assert STRICT.limits.metric_tolerance_bpb < DEFAULT.limits.metric_tolerance_bpb
    assert STRICT.limits.time_budget_s == DEFAULT.limits.time_budget_s  # inherited
    strength = {"block": 2, "discard": 1, "flag": 0}
    for rule_id, rule in DEFAULT.rules.items():
        assert strength[STRICT.rules[rule_id].action] >= strength[rule.action], rule_id
    assert not [r for r in STRICT.rules.values() if r.action == "flag"]


@pytest.mark.parametrize("policy", [DEFAULT, STRICT], ids=["default", "strict"])
def test_policy_to_toml_round_trips(policy, tmp_path):
    snapshot = tmp_path / "snapshot.toml"
    snapshot.write_text(policy_to_toml(policy))
    loaded = load_policy(snapshot)
    assert loaded == dataclasses.replace(policy, path=snapshot)


def write_policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(text)
    return path


BAD_POLICIES = [
    ('extends = "default"\nfoo = 1\n', "foo: unknown key"),
    ('extends = "default"\n[limits]\nmemroy = "8g"\n', "[limits] memroy: unknown key (did you mean memory?)"),
    ('extends = "default"\n[rules.static.size]\nsevere = "low"\n',
     "[rules.static.size] severe: unknown key (did you mean severity?)"),
    ('extends = "default"\n[rules.static.forbiden_import]\nseverity = "low"\n',
     "[rules.static.forbiden_import]: unknown rule (did you mean static.forbidden_import?)"),
    ('extends = "default"\n[rules.other.size]\nseverity = "low"\n', "[rules] other: unknown key"),
    ('extends = "default"\n[limits]\nmemory = 12\n', '[limits] memory: expected a string like "16g", got 12'),
    ('extends = "default"\n[limits]\nmemory = "lots"\n',
     '[limits] memory: expected a string like "16g", got "lots"'),
    ('extends = "default"\n[limits]\npids_limit = true\n',
     "[limits] pids_limit: expected an integer >= 0, got true"),
    ('extends = "default"\n[limits]\npids_limit = 1.5\n',
     "[limits] pids_limit: expected an integer >= 0, got 1.5"),
    ('extends = "default"\n[limits]\ntime_budget_s = false\n',
     "[limits] time_budget_s: expected a number >= 0, got false"),
    ('extends = "default"\n[limits]\ntime_budget_s = -1\n',
     "[limits] time_budget_s: expected a number >= 0, got -1"),
    ('extends = "default"\n[rules.static.size]\nenabled = 1\n',
     "[rules.static.size] enabled: expected true or false, got 1"),
    ('extends = "default"\n[rules.static.size]\nseverity = "huge"\n',
     '[rules.static.size] severity: expected one of info, low, medium, high, critical, got "huge"'),
    ('extends = "default"\n[rules.static.size]\naction = "ignore"\n',
     '[rules.static.size] action: expected one of block, discard, flag, got "ignore"'),
    ('extends = "default"\n[rules.dynamic.tamper]\naction = "block"\n',
     '[rules.dynamic.tamper] action: expected one of discard, flag, got "block"'),
    ('extends = "default"\n[rules.static.forbidden_import]\nmodules = "socket"\n',
     '[rules.static.forbidden_import] modules: expected a list of strings, got "socket"'),
    ('extends = "default"\n[rules.static.data_paths]\npatterns = ["(val"]\n',
     '[rules.static.data_paths] patterns: expected a list of regular expressions, got ["(val"]'),
    ('extends = "default"\n[rules.dynamic.training_span]\nfactor = "1.1"\n',
     '[rules.dynamic.training_span] factor: expected a number >= 0, got "1.1"'),
    ('extends = "default"\nrules = 3\n', "[rules]: expected a table, got 3"),
    ('extends = "nope"\n', "extends: no bundled policy named 'nope' (bundled: default, strict)"),
    ("[limits]\n[rules]\n", "[limits] time_budget_s: missing"),
    ("[limits]\n", "rules: missing"),
]


@pytest.mark.parametrize(("text", "message"), BAD_POLICIES)
def test_bad_policy_is_a_one_line_user_error_naming_file_and_key(tmp_path, text, message):
    path = write_policy(tmp_path, text)
    with pytest.raises(UserError) as caught:
        load_policy(path)
    assert str(caught.value) == f"{path}: {message}"


def test_toml_syntax_error_names_the_line(tmp_path):
    path = write_policy(tmp_path, 'extends = "default"\n[limits]\nmemory = \n')
    with pytest.raises(UserError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid TOML: ") and "line 3" in message and "\n" not in message


def test_missing_rule_and_missing_key_in_a_full_file(tmp_path):
    full = (TASK_DIR.parent / "policies" / "default.toml").read_text()
    without_rule = full.replace("[rules.dynamic.log_flood]", "[rules.dynamic.log_flood_old]")
    with pytest.raises(UserError, match=r"\[rules.dynamic.log_flood_old\]: unknown rule"):
        load_policy(write_policy(tmp_path, without_rule))
    without_key = full.replace('memory = "16g"', "")
    with pytest.raises(UserError, match=r"\[limits\] memory: missing$"):
        load_policy(write_policy(tmp_path, without_key))
    table_gone = full.split("[rules.dynamic.log_flood]")[0]
    with pytest.raises(UserError, match=r"\[rules.dynamic.log_flood\]: missing"):
        load_policy(write_policy(tmp_path, table_gone))


def test_missing_files_and_names_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read the policy file"):
        load_policy(tmp_path / "absent.toml")
    with pytest.raises(UserError, match="no bundled policy named 'lax'"):
        load_policy(name="lax")


def test_a_custom_policy_extends_and_overrides(tmp_path):
    text = 'extends = "strict"\nname = "mine"\n[rules.static.env_read]\nenabled = false\n'
    policy = load_policy(write_policy(tmp_path, text))
    assert policy.name == "mine" and policy.limits.memory == "8g"
    env_read = policy.rules["static.env_read"]
    assert not env_read.enabled and env_read.action == "discard"


def test_a_rule_id_may_be_quoted(tmp_path):
    text = 'extends = "default"\n[rules."static.size"]\nenabled = false\n[rules.static.size]\naction = "discard"\n'
    size = load_policy(write_policy(tmp_path, text)).rules["static.size"]
    assert (size.enabled, size.action, size.severity) == (False, "discard", "medium")


# -- findings -------------------------------------------------------------------------------------------


def test_finding_round_trip_and_worst_action():
    finding = Finding("static.size", "medium", "block", "too big", {"value": 3, "limit": 2})
    assert Finding.from_dict(json.loads(json.dumps(finding.to_dict()))) == finding
    flag = dataclasses.replace(finding, action="flag")
    discard = dataclasses.replace(finding, action="discard")
    assert worst_action([]) is None
    assert worst_action([flag, discard]) == "discard"
    assert worst_action([flag, finding, discard]) == "block"
    with pytest.raises(ValueError):
        Finding("x", "huge", "block", "m", {})


# -- static rules -----------------------------------------------------------------------------------------

HOSTILE = [
    # forbidden and suspicious imports
    ("import socket", "static.forbidden_import", "block"),
    ("import subprocess\nsubprocess.run(['ls'])", "static.forbidden_import", "block"),
    ("from urllib.request import urlopen", "static.forbidden_import", "block"),
    ("import torch.multiprocessing as mp", "static.forbidden_import", "block"),
    ("import torch\ntorch.multiprocessing.spawn(print)", "static.forbidden_import", "block"),
    ("import prepare\nprepare.urllib.request.urlopen('http://x')", "static.forbidden_import", "block"),
    ("from prepare import urllib", "static.forbidden_import", "block"),
    ("import ctypes", "static.forbidden_import", "block"),
    ("import pickle", "static.suspicious_import", "flag"),
    # dynamic code and reflection
    ("exec('print(1)')", "static.dynamic_code", "block"),
    ("run = eval\nrun('1')", "static.dynamic_code", "block"),
    ("os = __import__('os')", "static.dynamic_code", "block"),
    ("().__class__.__bases__[0].__subclasses__()", "static.reflection", "block"),
    ("import sys\nsys._getframe(1)", "static.reflection", "block"),
    ("g = (lambda: 0).__globals__", "static.reflection", "block"),
    # prepare.py, the import system and its environment
    ("import prepare\nprepare.TIME_BUDGET = 1e9", "static.prepare_tamper", "block"),
    ("import prepare as p\np.evaluate = lambda *a: {}", "static.prepare_tamper", "block"),
    ("import prepare\nsetattr(prepare, 'TIME_BUDGET', 1e9)", "static.prepare_tamper", "block"),
    ("from prepare import SOURCES\nSOURCES['offline'] = None", "static.prepare_tamper", "block"),
    ("import prepare\nprepare.SOURCES.update({})", "static.prepare_tamper", "block"),
    ("import prepare\nvars(prepare)['TIME_BUDGET'] = 1e9", "static.prepare_tamper", "block"),
    ("import sys\nsys.modules['prepare'] = object()", "static.prepare_tamper", "block"),
    ("import sys\nsys.path.insert(0, '/tmp')", "static.prepare_tamper", "block"),
    ("globals()['TIME_BUDGET'] = 1e9", "static.prepare_tamper", "block"),
    ("import importlib, prepare\nimportlib.reload(prepare)", "static.prepare_tamper", "block"),
    ("import os\nos.environ['AUTORESEARCH_TIME_BUDGET'] = '1e9'\nimport prepare",
     "static.prepare_tamper", "block"),
    ("import os\nos.environ.update(AUTORESEARCH_DATA='/tmp')", "static.prepare_tamper", "block"),
    ("from prepare import TIME_BUDGET\nTIME_BUDGET = 1e9", "static.prepare_shadow", "flag"),
    ("import prepare\ndef f():\n    global prepare\n    prepare = None", "static.prepare_shadow", "flag"),
    ("from prepare import *", "static.prepare_shadow", "flag"),
    # data and host paths
    ("data = open('/data/val_000.bin', 'rb')", "static.data_paths", "flag"),
    ("name = f'val_{i:03d}.bin'", "static.data_paths", "flag"),
    ("import prepare\nprepare.token_shards(prepare.DATA_DIR, 'val')", "static.data_paths", "flag"),
    ("import prepare\nprepare.evaluate('/handover/model.pt2', prepare.DATA_DIR)",
     "static.data_paths", "flag"),
    ("sock = '/var/run/docker.sock'", "static.data_paths", "flag"),
    ("open('/task/prepare.py', 'w').write('')", "static.data_write", "block"),
    ("import prepare\nfrom pathlib import Path\nPath(prepare.__file__).write_text('')",
     "static.data_write", "block"),
    ("import os, prepare\nos.remove(prepare.DATA_DIR / 'manifest.json')", "static.data_write", "block"),
    ("import numpy as np, prepare\nnp.memmap(prepare.DATA_DIR / 'train_000.bin', dtype='uint16')",
     "static.data_write", "block"),
    # environment
    ("import os\nkey = os.environ['ANTHROPIC_API_KEY']", "static.env_secrets", "block"),
    ("import os\nos.getenv('AWS_SECRET_ACCESS_KEY')", "static.env_secrets", "block"),
    ("from os import environ\nenviron.get('GITHUB_TOKEN')", "static.env_secrets", "block"),
    ("import os\nprint(dict(os.environ))", "static.env_read", "flag"),
    ("import os\nhome = os.environ.get('HOME')", "static.env_read", "flag"),
    ("from os import environ as e\nfor k, v in e.items():\n    print(k, v)", "static.env_read", "flag"),
    # processes and signals
    ("import os\nos.system('curl example.com')", "static.process_control", "block"),
    ("from os import fork\nfork()", "static.process_control", "block"),
    ("import os as o\ngetattr(o, 'execv')('/bin/sh', ['sh'])", "static.process_control", "block"),
    ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)", "static.process_control", "block"),
    ("import prepare\nprepare.os.system('id')", "static.process_control", "block"),
    # fake metrics
    ("print('val_bpb: 0.5')", "static.fake_metric", "flag"),
    ("print(f'val_bpb:          {0.5:.6f}')", "static.fake_metric", "flag"),
    ("print('val_bpb:', 0.91)", "static.fake_metric", "flag"),
    ("print('val_bpb: %.6f' % 0.5)", "static.fake_metric", "flag"),
    ("print('---\\nval_bpb: {}'.format(0.5))", "static.fake_metric", "flag"),
    # the file as a whole
    ("x = 1\x00", "static.binary", "block"),
    (b"x = '\xff'", "static.binary", "block"),
    (b"# coding: unicode_escape\nx = 1  # \\u000aimport socket\n", "static.binary", "block"),
    ("  \n\t\n", "static.empty", "block"),
    ("def f(:\n    pass", "static.syntax", "block"),
    ("x = 1\n" * 40_000, "static.size", "block"),
]


@pytest.mark.parametrize(("source", "rule_id", "action"), HOSTILE,
                         ids=[f"{i:02d}-{rule_id}" for i, (_, rule_id, _) in enumerate(HOSTILE)])
def test_hostile_snippet_is_caught(source, rule_id, action):
    findings = check_source(source, DEFAULT)
    assert (rule_id, action) in {(f.rule_id, f.action) for f in findings}, findings
    json.dumps([f.to_dict() for f in findings])  # evidence is storable as JSON
    assert all("\n" not in f.message for f in findings)


def test_evidence_points_at_the_line():
    source = "import math\n\nimport os\nx = 1; os.system('id')\n"
    [finding] = check_source(source, DEFAULT)
    assert finding.evidence == {"line": 4, "col": 7, "excerpt": "x = 1; os.system('id')", "name": "os.system"}
    [syntax] = check_source("x = 1\ny = (\n", DEFAULT)
    assert syntax.rule_id == "static.syntax" and syntax.evidence["line"] == 2


BENIGN = [
    "import prepare\nfrom prepare import TIME_BUDGET, train_batches\nprint(prepare.TIME_BUDGET, TIME_BUDGET)",
    "import prepare\nprepare.HANDOVER_DIR.mkdir(parents=True, exist_ok=True)\n"
    "path = prepare.HANDOVER_DIR / prepare.MODEL_FILE",
    "import prepare\nshards = prepare.token_shards(prepare.DATA_DIR, 'train')",
    "from prepare import TIME_BUDGET\ndef f():\n    TIME_BUDGET = 3\n    return TIME_BUDGET",
    "import os\nseed = int(os.environ.get('AUTORESEARCH_SEED', '42'))\n"
    "os.environ['TORCHINDUCTOR_CACHE_DIR'] = '/tmp/x'",
    "import os\nif 'CUDA_VISIBLE_DEVICES' in os.environ:\n    pass",
    "import torch\nmodel = torch.nn.Linear(2, 2)\nmodel.eval()\nstep = torch.compile(model)",
    "from pathlib import Path\nPath('/tmp/data.txt').write_text('x')\nopen('/tmp/log.txt', 'w').close()",
    "import prepare\nwith open(prepare.DATA_DIR / 'manifest.json') as f:\n    f.read()",
    "import resource, sys\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(0)",
    "estimate = 0.5\nprint(f'val_bpb:          {estimate:.6f}')\nprint('---')",
    '"""Mentions /data/val and docker.sock in a docstring, which does nothing."""',
    "import torch.nn.functional as F\nF.relu = F.gelu",
]


@pytest.mark.parametrize("source", BENIGN)
def test_benign_snippet_has_no_findings(source):
    assert check_source(source, DEFAULT) == []


def test_utf8_with_a_byte_order_mark_or_a_cookie_is_fine():
    assert check_source(b"\xef\xbb\xbfimport math\n", DEFAULT) == []
    assert check_source("# -*- coding: utf-8 -*-\nimport math\n", DEFAULT) == []


def test_the_real_train_py_is_clean_under_both_policies():
    source = (TASK_DIR / "train.py").read_text()
    assert check_source(source, DEFAULT) == []
    assert check_source(source, STRICT) == []


def test_disabled_rules_report_nothing(tmp_path):
    path = write_policy(tmp_path, 'extends = "default"\n[rules.static.forbidden_import]\nenabled = false\n')
    assert check_source("import socket", load_policy(path)) == []


def test_strict_blocks_what_default_flags():
    for source in ("import pickle", "from prepare import TIME_BUDGET\nTIME_BUDGET = 1"):
        assert worst_action(check_source(source, DEFAULT)) == "flag"
        assert worst_action(check_source(source, STRICT)) == "block"


def test_deep_nesting_is_blocked_not_crashing():
    findings = check_source("x = " + "-" * 100_000 + "1\n", DEFAULT)
    assert [f.rule_id for f in findings] == ["static.syntax"]


# -- dynamic rules ----------------------------------------------------------------------------------------


def clean_facts(**changes) -> RunFacts:
    """The facts of an honest five-minute GPU run, with changes."""
    facts = RunFacts(
        budget_s=300.0,
        trusted_bpb=1.000,
        reported={"val_bpb": 0.990, "training_seconds": 300.2},
        training_wall_s=420.0,
        compute_s=310.0,
        compute_kind="gpu",
        capacity=1.0,
        before_progress_s=100.0,
        after_progress_s=20.0,
        progress_span_s=300.0,
        compute_outside_s=None,
        baseline=None,
        peak_vram_mb=40_000.0,
        vram_cap_mb=60_000.0,
        killed_by_policy=None,
        hashes_before={"/task/prepare.py": "a" * 64, "/data/train_000.bin": "b" * 64},
        hashes_after={"/task/prepare.py": "a" * 64, "/data/train_000.bin": "b" * 64},
        log_head="profile h100 | device cuda\nprogress step=1 elapsed=0.00 loss=9.0\n",
        log_tail="Traceback (most recent call last):\n  ValueError: a harmless crash\nval_bpb: 0.99\n",
        dropped_log_bytes=0,
        progress_last_elapsed=300.2,
    )
    return dataclasses.replace(facts, **changes)


def rule_actions(facts: RunFacts, policy=DEFAULT) -> dict[str, str]:
    return {f.rule_id: f.action for f in check_run(facts, policy)}


def test_an_honest_run_has_no_findings():
    assert check_run(clean_facts(), DEFAULT) == []
    cpu_run = clean_facts(compute_kind="cpu", compute_s=600.0, capacity=2.0, peak_vram_mb=None, vram_cap_mb=None,
                          training_wall_s=330, before_progress_s=12.0, after_progress_s=13.0, progress_span_s=305.0)
    assert check_run(cpu_run, DEFAULT) == []


def test_metric_mismatch_flags_a_reported_score_beyond_tolerance():
    assert rule_actions(clean_facts(reported={"val_bpb": 0.94})) == {"dynamic.metric_mismatch": "flag"}
    assert rule_actions(clean_facts(reported={"val_bpb": 0.96})) == {}
    strict = rule_actions(clean_facts(reported={"val_bpb": 0.97}), STRICT)
    assert strict == {"dynamic.metric_mismatch": "discard"}
    assert rule_actions(clean_facts(reported={"val_bpb": 0.5}, trusted_bpb=None)) == {}
    assert rule_actions(clean_facts(reported={"val_bpb": float("nan")})) == {}


def test_metric_implausible_discards_a_much_better_reported_score():
    findings = check_run(clean_facts(reported={"val_bpb": 0.7}), DEFAULT)
    assert {f.rule_id: f.action for f in findings} == {"dynamic.metric_mismatch": "flag",
                                                         "dynamic.metric_implausible": "discard"}
    assert findings[1].evidence == {"value": 0.7, "trusted": 1.0, "limit": 0.75}
    honest_gap = check_run(clean_facts(reported={"val_bpb": 0.9}), DEFAULT)  # short CPU runs are this far off
    assert {f.rule_id for f in honest_gap} == {"dynamic.metric_mismatch"}


def test_compute_discards_gpu_work_beyond_the_budget():  # more in test_dynamic_budget.py
    limit = (300 * 1.05 + 15) + 2 * (120 + 30) + 15
    assert rule_actions(clean_facts(compute_s=limit + 1)) == {"dynamic.compute": "discard"}
    assert rule_actions(clean_facts(compute_s=limit - 1)) == {}


def test_overhead_and_span_discard_a_long_container_run():  # more in test_dynamic_budget.py
    assert rule_actions(clean_facts(before_progress_s=151.0)) == {"dynamic.overhead": "discard"}
    assert rule_actions(clean_facts(progress_span_s=300 * 1.05 + 16)) == {"dynamic.training_span": "discard"}


def test_reported_time_discards_a_clock_past_the_budget():
    findings = check_run(clean_facts(reported={"val_bpb": 0.99, "training_seconds": 600.0},
                                     progress_last_elapsed=601.0), DEFAULT)
    assert [(f.rule_id, f.action, f.evidence["source"]) for f in findings] == [
        ("dynamic.reported_time", "discard", "training_seconds"),
        ("dynamic.reported_time", "discard", "progress_elapsed"),
    ]


def test_vram_cap_discards_over_cap_and_policy_kills():
    assert rule_actions(clean_facts(peak_vram_mb=61_000.0)) == {"dynamic.vram_cap": "discard"}
    [killed] = check_run(clean_facts(killed_by_policy="vram_cap"), DEFAULT)
    assert killed.action == "discard" and killed.evidence["killed_by"] == "vram_cap"
    assert rule_actions(clean_facts(peak_vram_mb=61_000.0, vram_cap_mb=None)) == {}


def test_tamper_is_a_critical_discard_per_file():
    after = {"/task/prepare.py": "c" * 64}
    findings = check_run(clean_facts(hashes_after=after), DEFAULT)
    assert [(f.rule_id, f.severity, f.action, f.evidence["path"]) for f in findings] == [
        ("dynamic.tamper", "critical", "discard", "/data/train_000.bin"),
        ("dynamic.tamper", "critical", "discard", "/task/prepare.py"),
    ]
    assert "vanished" in findings[0].message and "changed" in findings[1].message


def test_log_markers_flag_the_line_that_shows_them():
    head = "start\nPermissionError: [Errno 13] Permission denied: '/task/prepare.py'\n"
    tail = "OSError: [Errno 101] Network is unreachable\n"
    findings = check_run(clean_facts(log_head=head, log_tail=tail), DEFAULT)
    assert [(f.rule_id, f.action, f.evidence["where"]) for f in findings] == [
        ("dynamic.log_markers", "flag", "head"), ("dynamic.log_markers", "flag", "tail")]
    assert findings[0].evidence["excerpt"] == head.splitlines()[1]


def test_log_flood_flags_dropped_output():
    [finding] = check_run(clean_facts(dropped_log_bytes=1234), DEFAULT)
    assert (finding.rule_id, finding.action, finding.evidence["value"]) == ("dynamic.log_flood", "flag", 1234)

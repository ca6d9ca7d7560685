"""The runner's side of the verdict channel: only the scorer's own file, with this scoring's nonce, a clean
exit and a well-formed result counts; everything else is a crash that says why (attack first)."""

import json
import os
from pathlib import Path

import pytest

from autoresearch.runner.phases.experiment import MAX_VERDICT_BYTES, VERDICT_FILE, read_verdict
from autoresearch.runner.sandbox.base import DEADLINE, PhaseResult

NONCE = "a" * 32


def run(exit_code: int | None = 0, log_tail: str = "", timed_out: bool = False, oom: bool = False) -> PhaseResult:
    return PhaseResult(exit_code, oom, DEADLINE if timed_out else None, "", log_tail, len(log_tail), 0, 0.1, 1.0)


def write(folder: Path, verdict) -> Path:
    (folder / VERDICT_FILE).write_text(verdict if isinstance(verdict, str) else json.dumps(verdict))
    return folder


def ok(**changes) -> dict:
    return {"status": "ok", "split": "val", "bpb": 2.5, "val_bpb": 2.5, "nonce": NONCE, **changes}


def test_a_well_formed_verdict_with_the_nonce_is_accepted(tmp_path):
    verdict = read_verdict(write(tmp_path, ok()), NONCE, "val", run(0))
    assert (verdict.status, verdict.bpb) == ("ok", 2.5)


def test_a_json_line_on_stdout_is_not_a_verdict(tmp_path):
    forged = json.dumps(ok(bpb=0.01))
    verdict = read_verdict(tmp_path, NONCE, "val", run(0, log_tail=forged + "\n"))
    assert verdict.status == "crash" and "no verdict" in verdict.reason and verdict.bpb is None


@pytest.mark.parametrize(
    ("verdict", "exit_code", "expected"),
    [
        (ok(nonce="guessed"), 0, "nonce"),
        ({k: v for k, v in ok().items() if k != "nonce"}, 0, "nonce"),
        (ok(), 1, "inconsistent"),
        (ok(), 3, "inconsistent"),
        (ok(), None, "inconsistent"),
        (ok(split="test"), 0, "inconsistent"),
        (ok(status="great"), 0, "inconsistent"),
        (ok(bpb=float("nan")), 0, "not a positive number"),
        (ok(bpb=-1.0), 0, "not a positive number"),
        (ok(bpb="0.01"), 0, "not a positive number"),
        (ok(bpb=0), 0, "not a positive number"),
        ("not json", 0, "malformed"),
        ("[1, 2]", 0, "nonce"),
    ],
    ids=["wrong-nonce", "no-nonce", "ok-but-exit-1", "ok-but-exit-3", "ok-but-killed", "other-split",
         "unknown-status", "nan", "negative", "string", "zero", "not-json", "not-an-object"],
)
def test_anything_else_is_a_crash_with_the_reason(tmp_path, verdict, exit_code, expected):
    result = read_verdict(write(tmp_path, verdict), NONCE, "val", run(exit_code))
    assert result.status == "crash" and result.bpb is None
    assert expected in result.reason


def test_a_violation_needs_its_exit_code_and_its_reason_is_data(tmp_path):
    reason = "\x1b[2Jcausality check failed\n" + "x" * 5000
    verdict = read_verdict(write(tmp_path, ok(status="violation", reason=reason)), NONCE, "val", run(3))
    assert verdict.status == "violation"
    assert verdict.reason.startswith("\\x1b[2Jcausality check failed\\n") and len(verdict.reason) < 600


def test_a_timeout_or_oom_is_a_crash_whatever_the_file_says(tmp_path):
    write(tmp_path, ok())
    assert "deadline" in read_verdict(tmp_path, NONCE, "val", run(None, timed_out=True)).reason
    assert "memory" in read_verdict(tmp_path, NONCE, "val", run(137, oom=True)).reason


def test_a_linked_or_oversized_verdict_is_not_read(tmp_path):
    (tmp_path / "real.json").write_text(json.dumps(ok()))
    os.symlink(tmp_path / "real.json", tmp_path / VERDICT_FILE)
    assert "no verdict" in read_verdict(tmp_path, NONCE, "val", run(0)).reason
    (tmp_path / VERDICT_FILE).unlink()
    write(tmp_path, json.dumps(ok(padding="x" * MAX_VERDICT_BYTES)))
    assert "no verdict" in read_verdict(tmp_path, NONCE, "val", run(0)).reason

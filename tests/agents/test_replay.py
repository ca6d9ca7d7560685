"""The replay agent: recorded edits applied in order, exhaustion, and errors that name the line."""

import json
from pathlib import Path

import pytest

from autoresearch.runner.agents import AgentError, AgentFatal, AgentSettings, Exhausted, make_agent
from autoresearch.runner.errors import UserError
from tests.agents.conftest import TRAIN_PY


def replay(path: Path):
    return make_agent("replay", settings=AgentSettings(name="replay", replay_file=str(path)), log_turn=lambda **_: 0)


def write(path: Path, *records: object) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_edits_are_proposed_in_order_then_the_replay_is_exhausted(tmp_path, context):
    path = write(
        tmp_path / "edits.jsonl",
        {"description": "rewrite", "train_py": "LR = 0.5\n"},
        "",
        {"description": "two edits", "replace": [["LR = 0.02", "LR = 0.03"], ["DEPTH = 4", "DEPTH = 5"]]},
    )
    agent = replay(path)
    first, second = agent.propose(context), agent.propose(context)
    assert (first.train_py, first.description) == ("LR = 0.5\n", "rewrite")
    assert second.train_py == TRAIN_PY.replace("LR = 0.02", "LR = 0.03").replace("DEPTH = 4", "DEPTH = 5")
    assert second.description == "two edits"
    with pytest.raises(Exhausted, match="replay finished: 2 edits applied") as caught:
        agent.propose(context)
    assert isinstance(caught.value, AgentFatal)


def test_an_edit_that_does_not_apply_is_an_agent_error_and_is_skipped(tmp_path, context):
    path = write(
        tmp_path / "edits.jsonl",
        {"description": "ambiguous", "replace": [['print("step")', 'print("go")']]},
        {"description": "fine", "replace": [["DEPTH = 4", "DEPTH = 2"]]},
    )
    agent = replay(path)
    with pytest.raises(AgentError, match=r"replay edit 1: .* occurs 2 times"):
        agent.propose(context)
    assert agent.propose(context).description == "fine"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "Expecting property name"),
        ('["a list"]', "expected a JSON object"),
        ({"train_py": "x"}, '"description" must be'),
        ({"description": "both", "train_py": "x", "replace": [["a", "b"]]}, "exactly one of"),
        ({"description": "neither"}, "exactly one of"),
        ({"description": "d", "replace": [["a"]]}, "[old, new] string pairs"),
        ({"description": "d", "replace": [["", "b"]]}, "non-empty old"),
        ({"description": "d", "train_py": 3}, '"train_py" must be a string'),
    ],
)
def test_a_malformed_line_is_a_user_error_naming_file_and_line(tmp_path, bad, message):
    path = write(tmp_path / "edits.jsonl", {"description": "ok", "train_py": "x = 1\n"}, "", bad)
    with pytest.raises(UserError) as caught:
        replay(path)
    assert str(caught.value).startswith(f"{path}:3: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_or_empty_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"cannot read the replay file .*missing\.jsonl: No such file"):
        replay(tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match="has no edits"):
        replay(write(tmp_path / "empty.jsonl", ""))
    with pytest.raises(UserError, match="needs replay_file"):
        make_agent("replay", settings=AgentSettings(name="replay"), log_turn=lambda **_: 0)

"""The claude agent against a fake Messages API, through the real anthropic SDK."""

import json
from dataclasses import replace

import pytest

from autoresearch.runner.agents import AgentError, AgentFatal, AgentSettings, ProposalContext, make_agent
from autoresearch.runner.errors import UserError
from tests.agents.conftest import API_KEY, TRAIN_PY, TurnLog
from tests.agents.fake_api import FakeAPI, Reply, error_body, ok, tool_use

RETRY_FAST = {"retry-after-ms": "10"}


def claude(api: FakeAPI, log: TurnLog, **overrides: object):
    settings = AgentSettings(name="claude", model="claude-test", base_url=api.base_url, max_retries=0, timeout_s=5.0)
    return make_agent("claude", settings=replace(settings, **overrides), log_turn=log)


def results(api: FakeAPI, request: int) -> list[dict]:
    """The tool_result blocks of the last message of the request-th request."""
    return [b for b in api.requests[request].body["messages"][-1]["content"] if b["type"] == "tool_result"]


def test_a_tool_conversation_yields_the_edited_train_py_and_logs_every_turn(api, context):
    api.script = [
        ok({"type": "text", "text": "Let me look."}, tool_use("view_file", {"name": "train.py", "end_line": 3}, "t1")),
        ok(tool_use("replace_in_train_py", {"old": "LR = 0.02", "new": "LR = 0.03"}, "t2")),
        ok(tool_use("submit", {"description": "raise LR to 0.03"}, "t3"), cache_read=1000, cache_write=2000),
    ]
    log = TurnLog()
    proposal = claude(api, log, price_input_per_mtok=3.0, price_output_per_mtok=15.0).propose(context)

    assert proposal.train_py == TRAIN_PY.replace("LR = 0.02", "LR = 0.03")
    assert proposal.description == "raise LR to 0.03"
    assert proposal.turn_ids == [1, 2, 3]
    turn_cost = (100 * 3.0 + 20 * 15.0) / 1e6
    assert sum(row["usage"]["cost_usd"] for row in log.rows) == pytest.approx(
        3 * turn_cost + (1000 * 0.3 + 2000 * 3.75) / 1e6)
    assert log.rows[2]["usage"] == {
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 2000,
        "cost_usd": pytest.approx(turn_cost + (1000 * 0.3 + 2000 * 3.75) / 1e6),
    }
    assert all(row["error"] is None and row["model"] == "claude-test" for row in log.rows)
    assert log.rows[0]["response"]["content"][0]["text"] == "Let me look."

    first = api.requests[0].body
    assert first["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "Lower val_bpb." in first["system"][-1]["text"] and "TIME_BUDGET = 300" in first["system"][-1]["text"]
    prompt = first["messages"][0]["content"][0]["text"]
    assert TRAIN_PY in prompt and "1\tabc1234\t1.234568\t-\tkeep\tbaseline" in prompt
    assert {t["name"] for t in first["tools"]} == {"view_file", "replace_in_train_py", "rewrite_train_py",
                                                   "update_notes", "submit"}

    [viewed] = results(api, 1)
    assert viewed["tool_use_id"] == "t1" and not viewed["is_error"]
    lines = ['    1\t"""A tiny train.py."""', "    2\t", "    3\tLR = 0.02  # learning rate"]
    assert viewed["content"].splitlines() == lines
    [replaced] = results(api, 2)
    assert replaced["tool_use_id"] == "t2" and not replaced["is_error"]
    # Only the newest block carries the conversation's cache breakpoint.
    marked = [b for m in api.requests[2].body["messages"] for b in m["content"] if "cache_control" in b]
    assert marked == [replaced]

    # What was logged is what was sent, and the key went only into a header.
    assert [row["request"]["messages"] for row in log.rows] == [r.body["messages"] for r in api.requests]
    assert API_KEY not in json.dumps([row["request"] for row in log.rows])
    assert API_KEY not in json.dumps([row["response"] for row in log.rows])
    assert API_KEY in (api.requests[0].headers.get("x-api-key", "") + api.requests[0].headers.get("authorization", ""))


def test_an_ambiguous_edit_gets_an_error_result_and_the_model_fixes_it(api, context):
    fixed = 'def main():\n    print("step")\n    print("step")'
    api.script = [
        ok(tool_use("replace_in_train_py", {"old": 'print("step")', "new": 'print("go")'}, "t1")),
        ok(tool_use("replace_in_train_py", {"old": fixed, "new": 'def main():\n    print("go")'}, "t2")),
        ok(tool_use("submit", {"description": "print once"}, "t3")),
    ]
    proposal = claude(api, TurnLog()).propose(context)

    [ambiguous] = results(api, 1)
    assert ambiguous["is_error"] and "occurs 2 times" in ambiguous["content"]
    assert proposal.train_py.endswith('def main():\n    print("go")\n')


def test_submit_is_refused_until_train_py_has_changed_and_parses(api, context):
    api.script = [
        ok(tool_use("submit", {"description": "nothing"}, "t1")),
        ok(tool_use("rewrite_train_py", {"content": "def broken(:\n"}, "t2")),
        ok(tool_use("submit", {"description": "broken"}, "t3")),
        ok(
            tool_use("rewrite_train_py", {"content": "LR = 0.05\n"}, "t4"),
            tool_use("submit", {"description": "ok"}, "t5"),
        ),
    ]
    proposal = claude(api, TurnLog()).propose(context)

    assert "unchanged" in results(api, 1)[0]["content"] and results(api, 1)[0]["is_error"]
    assert "does not parse now" in results(api, 2)[0]["content"] and not results(api, 2)[0]["is_error"]
    assert "does not parse (line 1" in results(api, 3)[0]["content"] and results(api, 3)[0]["is_error"]
    assert (proposal.train_py, proposal.description) == ("LR = 0.05\n", "ok")


def test_malformed_tool_calls_get_error_results(api, context):
    api.script = [
        ok(
            tool_use("delete_prepare_py", {}, "t1"),
            tool_use("view_file", "prepare.py", "t2"),
            tool_use("view_file", {"name": "prepare.py", "start_line": "1"}, "t3"),
            tool_use("view_file", {"name": "/etc/passwd"}, "t4"),
            tool_use("submit", {"description": "two\nlines"}, "t5"),
        ),
        ok({"type": "text", "text": "Done thinking."}, stop_reason="end_turn"),
        ok(
            tool_use("rewrite_train_py", {"content": "LR = 1.0\n"}, "t6"),
            tool_use("submit", {"description": "x"}, "t7"),
        ),
    ]
    proposal = claude(api, TurnLog()).propose(context)

    errors = results(api, 1)
    assert all(r["is_error"] for r in errors)
    assert [r["tool_use_id"] for r in errors] == ["t1", "t2", "t3", "t4", "t5"]
    assert "unknown tool 'delete_prepare_py'" in errors[0]["content"]
    assert "must be an integer" in errors[2]["content"] and "no file '/etc/passwd'" in errors[3]["content"]
    nudge = api.requests[2].body["messages"][-1]["content"][0]["text"]
    assert "call submit" in nudge
    assert proposal.description == "x"


def test_a_reply_without_text_or_tool_call_is_an_agent_error(api, context):
    api.script = [ok()]
    with pytest.raises(AgentError, match="neither text nor a tool call"):
        claude(api, TurnLog()).propose(context)


def test_no_submission_within_max_turns_is_an_agent_error(api, context):
    api.script = [ok(tool_use("view_file", {"name": "program.md"}, f"t{i}")) for i in range(3)]
    with pytest.raises(AgentError, match="within 2 turns"):
        claude(api, TurnLog(), max_turns=2).propose(context)
    assert len(api.requests) == 2


def test_a_rate_limit_is_retried_by_the_sdk(api, context):
    api.script = [
        Reply(429, error_body("rate_limit_error", "slow down"), RETRY_FAST),
        ok(
            tool_use("replace_in_train_py", {"old": "DEPTH = 4", "new": "DEPTH = 6"}, "t1"),
            tool_use("submit", {"description": "deeper"}, "t2"),
        ),
    ]
    log = TurnLog()
    proposal = claude(api, log, max_retries=2).propose(context)
    assert proposal.description == "deeper" and "DEPTH = 6" in proposal.train_py
    assert len(api.requests) == 2 and len(log.rows) == 1


def test_overloaded_after_all_retries_is_an_agent_error_and_is_logged(api, context):
    api.script = [Reply(529, error_body("overloaded_error", "Overloaded"), RETRY_FAST)] * 3
    log = TurnLog()
    with pytest.raises(AgentError, match="529: Overloaded"):
        claude(api, log, max_retries=2).propose(context)
    assert len(api.requests) == 3
    [row] = log.rows
    assert row["error"] == "Overloaded" and row["response"]["status_code"] == 529
    assert row["usage"]["cost_usd"] == 0


def test_a_slow_api_times_out_as_an_agent_error(api, context):
    api.script = [Reply(200, {}, delay_s=1.0)]
    with pytest.raises(AgentError, match="timed out"):
        claude(api, TurnLog(), timeout_s=0.2).propose(context)


def test_a_reply_that_is_not_json_is_an_agent_error(api, context):
    api.script = [Reply(200, "{not json")]
    log = TurnLog()
    with pytest.raises(AgentError, match="malformed reply"):
        claude(api, log).propose(context)
    assert log.rows[0]["error"]


def test_a_refused_key_is_fatal_at_once(api, context):
    api.script = [Reply(401, error_body("authentication_error", "invalid x-api-key"))] * 3
    with pytest.raises(AgentFatal) as caught:
        claude(api, TurnLog(), max_retries=2).propose(context)
    assert str(caught.value) == "the API key was refused (401): invalid x-api-key"
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (403, "not allowed", AgentFatal),
        (400, "Your credit balance is too low to access the Anthropic API.", AgentFatal),
        (400, "messages: text content blocks must be non-empty", AgentError),
    ],
)
def test_status_errors_map_to_fatal_or_retryable(api, context, status, message, error):
    api.script = [Reply(status, error_body("some_error", message))]
    with pytest.raises(error, match=message[:20]) as caught:
        claude(api, TurnLog()).propose(context)
    assert type(caught.value) is error


def test_a_missing_key_is_fatal_when_the_agent_is_made(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(AgentFatal, match="ANTHROPIC_API_KEY is not set"):
        make_agent("claude", settings=AgentSettings(), log_turn=TurnLog())


def test_the_last_failure_is_in_the_prompt_cut_to_its_tail(api, context: ProposalContext):
    failure = "x" * 10_000 + "\nRuntimeError: CUDA out of memory"
    api.script = [ok()]
    with pytest.raises(AgentError):
        claude(api, TurnLog()).propose(replace(context, last_failure=failure))
    prompt = api.requests[0].body["messages"][0]["content"][0]["text"]
    assert "RuntimeError: CUDA out of memory" in prompt and "x" * 3900 in prompt and "x" * 5000 not in prompt


def test_an_unknown_agent_is_a_user_error():
    names = "claude, openai, claude-code, codex, sweep, replay"
    with pytest.raises(UserError, match=f"unknown agent 'gpt': choose one of {names}"):
        make_agent("gpt", settings=AgentSettings(), log_turn=TurnLog())


MODEL_INFO = {"type": "model", "id": "claude-test", "display_name": "Claude Test", "created_at": "2026-01-01T00:00:00Z"}


def test_preflight_stops_a_refused_key_before_any_proposal(api):
    api.script = [Reply(401, error_body("authentication_error", "invalid x-api-key"))]
    with pytest.raises(AgentFatal, match=r"the API key was refused \(401\)"):
        claude(api, TurnLog()).preflight()
    assert [r.path for r in api.requests] == ["/v1/models/claude-test"]
    assert API_KEY not in json.dumps(api.requests[0].body)


def test_preflight_passes_a_good_key_and_leaves_an_outage_to_the_proposals(api):
    api.script = [Reply(200, MODEL_INFO), Reply(529, error_body("overloaded_error", "Overloaded"))]
    agent = claude(api, TurnLog())
    agent.preflight()
    agent.preflight()  # 529: not fatal, the proposals retry
    assert len(api.requests) == 2


def test_preflight_with_a_base_url_still_stops_a_refused_permission(api):  # claude() sets base_url
    api.script = [Reply(403, error_body("permission_error", "not allowed"))]
    with pytest.raises(AgentFatal, match=r"lacks permission \(403\)"):
        claude(api, TurnLog()).preflight()


@pytest.mark.parametrize("reply", [Reply(404, "404 page not found"), Reply(405, "Method Not Allowed"),
                                   Reply(501, error_body("api_error", "not implemented")), Reply(200, "<html>")])
def test_preflight_against_a_compatible_server_without_the_models_endpoint_only_warns(api, reply):
    api.script = [reply]
    agent = claude(api, TurnLog())
    agent.preflight()
    [warning] = agent.warnings
    assert warning.startswith(f"{api.base_url} does not serve GET /v1/models/claude-test (")
    assert "checked by the first proposal" in warning


def test_preflight_without_a_base_url_stops_an_unknown_model(api, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.base_url)  # the SDK's default, pointed at the fake
    api.script = [Reply(404, error_body("not_found_error", "model: claude-test"))]
    agent = claude(api, TurnLog(), base_url=None)
    with pytest.raises(AgentFatal, match=r"not found \(404\); check the agent's model 'claude-test'"):
        agent.preflight()
    assert agent.warnings == [] and len(api.requests) == 1

"""The openai agent against a fake OpenAI API, through the real openai SDK; and the fake's OpenAI bodies, whole and
streamed, read by the SDK on TCP and on a Unix socket."""

import json
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx2
import openai
import pytest

from autoresearch.runner.agents import AgentError, AgentFatal, AgentSettings, make_agent
from autoresearch.runner.agents.tools import TOOLS
from tests.agents.conftest import TRAIN_PY, TurnLog
from tests.agents.fake_api import FakeAPI, Reply
from tests.agents.fake_openai import (
    chat_body,
    chat_reply,
    error_body,
    function_call_item,
    message_item,
    reasoning_item,
    response_body,
    responses_reply,
    tool_call,
)

KEY = "sk-proj-test-0123456789-secret"
MODEL_INFO = {"id": "gpt-test", "object": "model", "created": 1_767_225_600, "owned_by": "fake"}
PRICES = {"price_input_per_mtok": 2.0, "price_output_per_mtok": 8.0}
TOOL_NAMES = [tool["name"] for tool in TOOLS]  # converted when called: tools added later carry over


@pytest.fixture
def oai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPI]:
    """A started fake API, with OPENAI_API_KEY set to a test key."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = FakeAPI().start()
    yield server
    server.stop()


def agent(server: FakeAPI, log: TurnLog | None = None, **overrides: object):
    settings = AgentSettings(name="openai", model="gpt-test", base_url=f"{server.base_url}/v1", max_retries=0,
                             timeout_s=5.0, **PRICES)
    return make_agent("openai", settings=replace(settings, **overrides), log_turn=log or TurnLog())


def cost(uncached: int, output: int, cached: int = 0) -> float:
    return (uncached * 2.0 + output * 8.0 + cached * 2.0 * 0.1) / 1e6


def tool_messages(server: FakeAPI, request: int) -> list[dict]:
    """The tool messages at the end of the request-th chat request."""
    messages = server.requests[request].body["messages"]
    tail = []
    for message in reversed(messages):
        if message["role"] != "tool":
            break
        tail.insert(0, message)
    return tail


def test_a_chat_conversation_yields_the_edited_train_py_and_logs_every_turn(oai, context):
    oai.script = [
        chat_reply(tool_call("view_file", {"name": "train.py", "end_line": 3}, "call_1"), content="Let me look."),
        chat_reply(tool_call("replace_in_train_py", {"old": "LR = 0.02", "new": "LR = 0.03"}, "call_2")),
        chat_reply(tool_call("submit", {"description": "raise LR to 0.03"}, "call_3"),
                   prompt_tokens=1100, cached_tokens=1000),
    ]
    log = TurnLog()
    proposal = agent(oai, log).propose(context)

    assert proposal.train_py == TRAIN_PY.replace("LR = 0.02", "LR = 0.03")
    assert (proposal.description, proposal.turn_ids) == ("raise LR to 0.03", [1, 2, 3])
    assert [r.path for r in oai.requests] == ["/v1/chat/completions"] * 3
    assert [row["usage"] for row in log.rows[1:]] == [
        {"input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 0, "cache_write_tokens": 0,
         "cost_usd": pytest.approx(cost(100, 20))},
        {"input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 1000, "cache_write_tokens": 0,
         "cost_usd": pytest.approx(cost(100, 20, cached=1000))},
    ]
    assert all(row["error"] is None and row["model"] == "gpt-test" for row in log.rows)
    assert log.rows[0]["response"]["choices"][0]["message"]["content"] == "Let me look."

    first = oai.requests[0].body
    assert first["model"] == "gpt-test" and first["max_completion_tokens"] == 16000
    assert {t["type"] for t in first["tools"]} == {"function"}
    assert [t["function"]["name"] for t in first["tools"]] == TOOL_NAMES
    assert first["tools"][-1]["function"] == {"name": "submit", "description": TOOLS[-1]["description"],
                                              "parameters": TOOLS[-1]["input_schema"]}
    system, opening = first["messages"]
    assert system["role"] == "system" and "Lower val_bpb." in system["content"] and "cache_control" not in system
    assert opening["role"] == "user" and TRAIN_PY in opening["content"]
    assert "baseline" in opening["content"]  # the research memory

    # The model's turn goes back as it came, each tool result answers its call by id.
    said = oai.requests[1].body["messages"][2]
    assert said["role"] == "assistant" and said["content"] == "Let me look."
    assert said["tool_calls"][0]["id"] == "call_1" and said["tool_calls"][0]["function"]["name"] == "view_file"
    [viewed] = tool_messages(oai, 1)
    assert viewed["tool_call_id"] == "call_1"
    lines = ['    1\t"""A tiny train.py."""', "    2\t", "    3\tLR = 0.02  # learning rate"]
    assert viewed["content"].splitlines() == lines
    [replaced] = tool_messages(oai, 2)
    assert replaced["tool_call_id"] == "call_2" and replaced["content"].startswith("replaced;")

    # What was logged is what was sent, and the key went only into the authorization header.
    assert [row["request"]["messages"] for row in log.rows] == [r.body["messages"] for r in oai.requests]
    assert KEY not in json.dumps([row["request"] for row in log.rows] + [row["response"] for row in log.rows])
    assert oai.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_a_responses_conversation_sends_back_the_output_items_statelessly(oai, context):
    oai.script = [
        responses_reply(reasoning_item("look first", "rs_1"), message_item("Let me look.", "msg_1"),
                        function_call_item("view_file", {"name": "program.md"}, "call_1")),
        responses_reply(function_call_item("replace_in_train_py", {"old": "DEPTH = 4", "new": "DEPTH = 6"}, "call_2"),
                        function_call_item("submit", {"description": "deeper"}, "call_3"),
                        input_tokens=1100, cached_tokens=1000, output_tokens=30),
    ]
    log = TurnLog()
    proposal = agent(oai, log, api="responses").propose(context)

    assert proposal.train_py == TRAIN_PY.replace("DEPTH = 4", "DEPTH = 6") and proposal.description == "deeper"
    assert proposal.notes is None  # update_notes was not called: the notes stay as they were
    assert [r.path for r in oai.requests] == ["/v1/responses"] * 2
    assert [row["usage"]["cost_usd"] for row in log.rows] == [pytest.approx(cost(100, 20)),
                                                              pytest.approx(cost(100, 30, cached=1000))]
    assert log.rows[1]["usage"]["cache_read_tokens"] == 1000 and log.rows[1]["usage"]["input_tokens"] == 100

    first, second = (r.body for r in oai.requests)
    assert first["store"] is False and "previous_response_id" not in first
    assert first["include"] == ["reasoning.encrypted_content"] and first["max_output_tokens"] == 16000
    assert "Lower val_bpb." in first["instructions"]
    assert [t["name"] for t in first["tools"]] == TOOL_NAMES and {t["type"] for t in first["tools"]} == {"function"}
    assert first["tools"][0]["parameters"]["required"] == ["name"]
    [opening] = first["input"]
    assert opening["role"] == "user" and TRAIN_PY in opening["content"]
    opening_, reasoning, message, call, output = second["input"]
    assert opening_ == opening
    assert reasoning["type"] == "reasoning" and reasoning["encrypted_content"] == "gAAAAB-fake-rs_1"
    assert message["type"] == "message" and message["content"][0]["text"] == "Let me look."
    assert call["type"] == "function_call" and call["call_id"] == "call_1"
    assert output["type"] == "function_call_output" and output["call_id"] == "call_1"
    assert output["output"] == "    1\t# The research program\n    2\tLower val_bpb."


def test_malformed_tool_calls_come_back_as_tool_errors(oai, context):
    oai.script = [
        chat_reply(
            tool_call("delete_prepare_py", {}, "call_1"),
            tool_call("replace_in_train_py", '{"old": "LR = 0.02", "new": ', "call_2"),
            tool_call("view_file", '["train.py"]', "call_3"),
            tool_call("replace_in_train_py", {"old": "LR = 0.02"}, "call_4"),
            {"type": "function", "function": {"name": "view_file", "arguments": '{"name": "/etc/passwd"}'}},
        ),
        chat_reply(tool_call("rewrite_train_py", {"content": "LR = 1.0\n"}, "call_5"),
                   tool_call("submit", {"description": "x"}, "call_6")),
    ]
    proposal = agent(oai).propose(context)

    errors = tool_messages(oai, 1)
    assert [m["tool_call_id"] for m in errors] == ["call_1", "call_2", "call_3", "call_4", "call_unnamed_4"]
    assert all(m["content"].startswith("ERROR: ") for m in errors)
    assert "unknown tool 'delete_prepare_py'" in errors[0]["content"]
    assert "arguments of replace_in_train_py are not valid JSON" in errors[1]["content"]
    assert "must be a JSON object" in errors[2]["content"]
    assert "missing argument 'new'" in errors[3]["content"]
    assert "no file '/etc/passwd'" in errors[4]["content"]
    # The call without an id got one, the same in the echoed assistant turn and in its result.
    assert oai.requests[1].body["messages"][2]["tool_calls"][4]["id"] == "call_unnamed_4"
    assert proposal.description == "x"


def test_malformed_arguments_in_responses_mode_are_a_tool_error(oai, context):
    oai.script = [
        responses_reply(function_call_item("submit", "{description: nope}", "call_1")),
        responses_reply(function_call_item("rewrite_train_py", {"content": "LR = 1.0\n"}, "call_2"),
                        function_call_item("submit", {"description": "x"}, "call_3")),
    ]
    assert agent(oai, api="responses").propose(context).description == "x"
    output = oai.requests[1].body["input"][-1]
    assert output["call_id"] == "call_1" and output["output"].startswith("ERROR: the arguments of submit are not valid")


def test_replies_without_a_tool_call_get_a_nudge(oai, context):
    oai.script = [
        chat_reply(content="I think a higher learning rate would help."),
        chat_reply(),  # neither text nor a tool call
        chat_reply(content="Let me write", finish_reason="length"),
        chat_reply(tool_call("rewrite_train_py", {"content": "LR = 0.05\n"}, "c1"),
                   tool_call("update_notes", {"content": "try LR 0.05"}, "c2"),
                   tool_call("submit", {"description": "higher LR"}, "c3")),
    ]
    proposal = agent(oai).propose(context)

    assert proposal.description == "higher LR" and proposal.turn_ids == [1, 2, 3, 4]
    assert proposal.notes == "try LR 0.05"
    second = oai.requests[1].body["messages"]
    assert second[-2] == {"role": "assistant", "content": "I think a higher learning rate would help."}
    assert second[-1]["role"] == "user" and "call submit" in second[-1]["content"]
    third = oai.requests[2].body["messages"]
    assert [m["role"] for m in third[-2:]] == ["user", "user"]  # the empty reply is not sent back
    assert "cut at max_tokens" in oai.requests[3].body["messages"][-1]["content"]


def test_no_submission_within_max_turns_is_an_agent_error(oai, context):
    oai.script = [chat_reply() for _ in range(3)]
    with pytest.raises(AgentError, match="within 2 turns"):
        agent(oai, max_turns=2).propose(context)
    assert len(oai.requests) == 2


def test_a_refused_key_is_fatal_and_its_message_never_holds_the_key(oai, context):
    oai.script = [Reply(401, error_body("invalid_request_error", f"Incorrect API key provided: {KEY}.",
                                        "invalid_api_key"))]
    log = TurnLog()
    with pytest.raises(AgentFatal) as caught:
        agent(oai, log, max_retries=2).propose(context)
    message = str(caught.value)
    assert message == "the API key from OPENAI_API_KEY was refused (401): Incorrect API key provided: <key>."
    assert KEY not in json.dumps(log.rows) and len(oai.requests) == 1


def test_an_unknown_model_is_fatal_and_names_model_and_base_url(oai, context):
    oai.script = [Reply(404, error_body("invalid_request_error", "The model `gpt-test` does not exist",
                                        "model_not_found"))]
    with pytest.raises(AgentFatal, match=r"not found \(404\); check the agent's model 'gpt-test' and base_url") as err:
        agent(oai).propose(context)
    assert f"{oai.base_url}/v1" in str(err.value)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, error_body("insufficient_quota", "You exceeded your current quota.", "insufficient_quota")),
        (402, error_body("billing_error", "Payment required")),
    ],
)
def test_an_exhausted_quota_is_fatal(oai, context, status, body):
    oai.script = [Reply(status, body)]
    with pytest.raises(AgentFatal, match=rf"the API refused to bill this request \({status}\)"):
        agent(oai).propose(context)


def test_a_model_without_encrypted_reasoning_is_told_to_use_chat(oai, context):
    message = "Encrypted content is not supported with this model."
    oai.script = [Reply(400, error_body("invalid_request_error", message))]
    with pytest.raises(AgentFatal, match='set api = "chat"'):
        agent(oai, api="responses").propose(context)


def test_a_server_error_after_the_sdk_retries_is_an_agent_error_and_is_logged(oai, context):
    oai.script = [Reply(500, error_body("server_error", "The server had an error"), {"retry-after-ms": "10"})] * 2
    log = TurnLog()
    with pytest.raises(AgentError, match="the API answered 500: The server had an error"):
        agent(oai, log, max_retries=1).propose(context)
    assert len(oai.requests) == 2
    [row] = log.rows
    assert row["response"]["status_code"] == 500 and row["error"] == "The server had an error"
    assert row["usage"]["cost_usd"] == 0 and row["usage"]["input_tokens"] == 0


@pytest.mark.parametrize(
    ("reply", "settings", "match"),
    [
        (Reply(200, "{not json"), {}, "malformed reply from the API"),
        (Reply(200, "[]"), {"api": "responses"}, "malformed reply from the API: the reply is a JSON list, not an"),
        (Reply(200, chat_body(), delay_s=1.0), {"timeout_s": 0.2}, "timed out"),
    ],
)
def test_a_malformed_or_slow_reply_is_an_agent_error(oai, context, reply, settings, match):
    oai.script = [reply]
    log = TurnLog()
    with pytest.raises(AgentError, match=match):
        agent(oai, log, **settings).propose(context)
    assert log.rows[0]["error"]


def test_a_reply_without_usage_counts_zeros(oai, context):
    body = chat_body(tool_call("rewrite_train_py", {"content": "LR = 1.0\n"}, "c1"),
                     tool_call("submit", {"description": "x"}, "c2"))
    del body["usage"]
    oai.script = [Reply(200, body)]
    log = TurnLog()
    agent(oai, log).propose(context)
    assert log.rows[0]["usage"] == {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
                                    "cache_write_tokens": 0, "cost_usd": 0}


def test_without_a_key_the_agent_needs_a_base_url(monkeypatch, context):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("LOCAL_LLM_KEY", raising=False)
    with pytest.raises(AgentFatal, match="OPENAI_API_KEY is not set: export it, or set base_url"):
        make_agent("openai", settings=AgentSettings(name="openai"), log_turn=TurnLog())
    with pytest.raises(AgentFatal, match="LOCAL_LLM_KEY is not set"):
        make_agent("openai", settings=AgentSettings(name="openai", key_env="LOCAL_LLM_KEY"), log_turn=TurnLog())

    server = FakeAPI([chat_reply(tool_call("rewrite_train_py", {"content": "LR = 1.0\n"}, "c1"),
                                 tool_call("submit", {"description": "x"}, "c2"))]).start()
    try:
        assert agent(server).propose(context).description == "x"
    finally:
        server.stop()
    assert server.requests[0].headers["authorization"] == "Bearer not-needed"


def test_preflight_stops_a_refused_key(oai):
    oai.script = [Reply(401, error_body("invalid_request_error", "Incorrect API key provided", "invalid_api_key"))]
    with pytest.raises(AgentFatal, match=r"was refused \(401\)"):
        agent(oai).preflight()
    assert [r.path for r in oai.requests] == ["/v1/models/gpt-test"]


def test_preflight_passes_a_known_model_and_leaves_an_outage_to_the_proposals(oai):
    oai.script = [Reply(200, MODEL_INFO), Reply(503, error_body("server_error", "overloaded"))]
    openai_agent = agent(oai)
    openai_agent.preflight()
    openai_agent.preflight()
    assert openai_agent.warnings == [] and len(oai.requests) == 2


@pytest.mark.parametrize("reply", [Reply(404, "404 page not found"), Reply(405, "Method Not Allowed"),
                                   Reply(501, error_body("server_error", "not implemented")), Reply(200, "<html>")])
def test_preflight_against_a_server_without_the_models_endpoint_only_warns(oai, reply):
    oai.script = [reply]
    openai_agent = agent(oai)
    openai_agent.preflight()
    [warning] = openai_agent.warnings
    assert warning.startswith(f"{oai.base_url}/v1 does not serve GET models/gpt-test (")
    assert "checked by the first proposal" in warning


def test_preflight_without_base_url_stops_an_unknown_model(oai, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", f"{oai.base_url}/v1")  # the SDK's default, pointed at the fake
    oai.script = [Reply(404, error_body("invalid_request_error", "The model `gpt-test` does not exist"))]
    with pytest.raises(AgentFatal, match="model 'gpt-test'"):
        agent(oai, base_url=None).preflight()
    assert len(oai.requests) == 1


# The fake's bodies as the SDK reads them: streamed and whole, on TCP and on a Unix socket.


@pytest.fixture(params=["tcp", "unix"])
def client(request: pytest.FixtureRequest) -> Iterator[tuple[openai.OpenAI, FakeAPI]]:
    """An SDK client and the fake it talks to, over TCP or over a Unix socket."""
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:  # short: a socket path has at most 107 bytes
        socket = Path(folder) / "api.sock" if request.param == "unix" else None
        server = FakeAPI(unix_socket=socket).start()
        http = openai.DefaultHttpxClient(transport=httpx2.HTTPTransport(uds=str(socket))) if socket else None
        yield openai.OpenAI(api_key=KEY, base_url=f"{server.base_url}/v1", max_retries=0, http_client=http), server
        server.stop()


def test_streamed_responses_read_as_the_whole_response(client):
    sdk, server = client
    items = (reasoning_item("plan"), message_item("I will raise the learning rate of the Muon groups."),
             function_call_item("submit", {"description": "raise LR"}, "call_1"))
    streamed_reply = responses_reply(*items, stream=True, cached_tokens=40)
    server.script = [streamed_reply, streamed_reply, responses_reply(*items, cached_tokens=40)]
    events = list(sdk.responses.create(model="gpt-test", input="go", stream=True))
    with sdk.responses.stream(model="gpt-test", input="go") as stream:  # the SDK's accumulator checks the order
        streamed = stream.get_final_response()
    whole = sdk.responses.create(model="gpt-test", input="go")

    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert (events[0].type, events[-1].type) == ("response.created", "response.completed")
    assert events[-1].response.to_dict() == whole.to_dict()
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == "I will raise the learning rate of the Muon groups." and len(deltas) > 1
    assert streamed.output_text == whole.output_text == "I will raise the learning rate of the Muon groups."
    call = streamed.output[2]
    assert (call.type, call.call_id) == ("function_call", "call_1")
    assert json.loads(call.arguments) == {"description": "raise LR"}
    assert streamed.usage.input_tokens_details.cached_tokens == 40
    assert [r.path for r in server.requests] == ["/v1/responses"] * 3
    assert server.requests[0].body["stream"] is True


def test_streamed_chat_reads_as_the_whole_completion(client):
    sdk, server = client
    calls = (tool_call("replace_in_train_py", {"old": "LR = 0.02", "new": "LR = 0.03"}, "call_1"),
             tool_call("submit", {"description": "raise LR"}, "call_2"))
    server.script = [chat_reply(*calls, content="Editing now.", stream=True, cached_tokens=64)]
    messages = [{"role": "user", "content": "go"}]
    with sdk.chat.completions.stream(model="gpt-test", messages=messages,
                                     stream_options={"include_usage": True}) as stream:
        completion = stream.get_final_completion()

    message = completion.choices[0].message
    assert message.content == "Editing now." and completion.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("call_1", "replace_in_train_py", {"old": "LR = 0.02", "new": "LR = 0.03"}),
        ("call_2", "submit", {"description": "raise LR"}),
    ]
    assert completion.usage.prompt_tokens_details.cached_tokens == 64
    assert server.requests[0].path == "/v1/chat/completions"


def test_whole_bodies_read_as_the_sdk_types(client):
    sdk, server = client
    server.script = [Reply(200, response_body(message_item("hi"), status="incomplete",
                                              incomplete_reason="max_output_tokens")),
                     Reply(400, error_body("invalid_request_error", "bad tools", "invalid_value", "tools"))]
    response = sdk.responses.create(model="gpt-test", input="go")
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "go"}])
    error = caught.value
    assert (error.code, error.param, error.body["message"]) == ("invalid_value", "tools", "bad tools")

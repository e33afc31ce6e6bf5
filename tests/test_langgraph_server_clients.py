"""The graphs langgraph.json serves, against a client that shares the server (graphs/served.py):
a run's context may change the mixture but not send the server's keys where the client chooses,
nor name the server's files (nodes/untrusted.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fake_openai import FakeOpenAIServer
from langgraph_sdk import get_sync_client
from test_studio import studio  # noqa: F401  (langgraph dev, its models at the fake server)

KEY = "studio-test-key"  # the server's TOGETHER_API_KEY (test_studio.py)
QUESTION = {"messages": [{"role": "user", "content": "who holds the key?"}]}


def _error(out: Any) -> dict[str, Any]:
    assert isinstance(out, dict) and "__error__" in out, out
    error: dict[str, Any] = out["__error__"]
    return error


@pytest.mark.parametrize("graph", ["moa", "moa-unrolled"])
def test_a_client_cannot_send_the_servers_key_to_its_own_endpoint(
    studio: str,  # noqa: F811
    server: FakeOpenAIServer,
    graph: str,
) -> None:
    client = get_sync_client(url=studio, api_key=None)
    with FakeOpenAIServer() as attacker:
        for env in ("TOGETHER_API_KEY", "MY_API_KEY"):
            stolen = {"model": "openai:m", "base_url": attacker.base_url, "api_key_env": env}
            for context in ({"proposers": [stolen]}, {"aggregator": stolen}):
                out = client.runs.wait(
                    None, graph, input=QUESTION, context=context, raise_error=False
                )
                error = _error(out)
                if env == "TOGETHER_API_KEY":  # a provider's key: no context may hold it so
                    assert error["error"] == "ValidationError"
                    assert "TOGETHER_API_KEY is the together provider's key" in error["message"]
                else:
                    assert error["error"] == "ClientSettingError"
                    assert "may not send a key of the server (api_key_env)" in error["message"]
        assert attacker.requests == []  # refused before any call: nothing sent, nothing paid
        assert server.requests == []

        # Nor may it send requests (without a key) to an endpoint the server does not list in
        # MOA_CLIENT_ENDPOINTS: its own, or one inside the server's network.
        own = {"aggregator": {"model": "openai:m", "base_url": attacker.base_url}, "layers": 1}
        out = client.runs.wait(None, graph, input=QUESTION, context=own, raise_error=False)
        error = _error(out)
        assert error["error"] == "ClientSettingError"
        assert "MOA_CLIENT_ENDPOINTS" in error["message"]
        assert attacker.requests == []

    # An endpoint the server lists gets no key either (moa batch --server sends a config's
    # base_urls): the run goes on.
    listed = {"model": "openai:m", "base_url": server.base_url}
    client.runs.wait(None, "moa", input=QUESTION, context={"aggregator": listed, "layers": 1})
    (request,) = server.requests
    assert KEY not in str(request.headers)


def test_a_client_cannot_name_a_file_of_the_server(studio: str) -> None:  # noqa: F811
    client = get_sync_client(url=studio, api_key=None)
    for model in ("local:/etc/passwd", "local:../models/x.gguf"):
        context = {"proposers": [model], "aggregator": "together:agg"}
        out = client.runs.wait(None, "moa", input=QUESTION, context=context, raise_error=False)
        error = _error(out)
        assert error["error"] == "ClientSettingError"
        assert "not a file path" in error["message"] and "GGUF" not in error["message"]


def test_a_bind_the_aggregator_would_refuse_is_refused_before_anyone_is_paid(
    studio: str,  # noqa: F811
    server: FakeOpenAIServer,
) -> None:
    # The proposers were paid before the aggregator's provider refused such tools or formats.
    client = get_sync_client(url=studio, api_key=None)
    context = {"proposers": ["together:p1"], "aggregator": "together:agg"}
    bad_schema = {"name": "x", "schema": {"$ref": "file:///etc/passwd"}}
    for bind, said in [
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "must be 1 to 64"),
        ({"response_format": {"type": "json_schema", "json_schema": bad_schema}}, "$ref"),
        ({"tools": [], "temperature": 2}, "unknown key"),
        (  # OpenAI's limit, which moa serve holds its clients to: checked before the schemas
            {"tools": [{"type": "function", "function": {"name": f"t{i}"}} for i in range(129)]},
            "at most 128 tools, not 129",
        ),
    ]:
        question = {**QUESTION, "bind": bind}
        out = client.runs.wait(None, "moa", input=question, context=context, raise_error=False)
        error = _error(out)
        assert error["error"] == "ClientSettingError" and said in error["message"], error
    assert server.requests == []


def test_what_the_models_cannot_take_is_refused_before_anyone_is_paid(
    studio: str,  # noqa: F811
    server: FakeOpenAIServer,
) -> None:
    # An image the models would not be sent, and a thread whose tool call a user turned down
    # (the aggregator's provider refuses a call with no result after it): the run's error names
    # it, and no proposer was paid first.
    client = get_sync_client(url=studio, api_key=None)
    context = {"proposers": ["together:p1"], "aggregator": "together:agg"}
    image = {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}
    picture = {"messages": [{"role": "user", "content": [image]}]}
    out = client.runs.wait(None, "moa", input=picture, context=context, raise_error=False)
    assert _error(out)["error"] == "UnsupportedContentError"
    assert server.requests == []

    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    thread = client.threads.create()["thread_id"]
    asked = {**QUESTION, "bind": {"tools": tools}}
    out = client.runs.wait(thread, "moa", input=asked, context=context)
    (call,) = out["messages"][-1]["tool_calls"]
    server.requests.clear()
    no = {"messages": [{"role": "user", "content": "No, don't."}], "bind": {"tools": tools}}
    out = client.runs.wait(thread, "moa", input=no, context=context, raise_error=False)
    error = _error(out)
    assert error["error"] == "UnpairedToolCallError" and repr(call["id"]) in error["message"]
    assert server.requests == []


def test_input_that_is_no_conversation_is_a_run_error_naming_messages(
    studio: str,  # noqa: F811
    server: FakeOpenAIServer,
) -> None:
    # It was LangGraph's reducer's "Must specify non-null arguments for both 'left' and 'right'"
    # for a null, LangChain's "Unsupported message type: <class 'int'>" for an item: neither
    # named the field, nor the item.
    client = get_sync_client(url=studio, api_key=None)
    for messages, said in [
        (None, "messages is null: send a list of messages"),
        (
            [*QUESTION["messages"], 5],
            "messages[1] is not a message: Unsupported message type: <class 'int'>",
        ),
        (
            [{"role": "user"}],
            "messages[0] is not a message: Message dict must contain 'role' and 'content' keys",
        ),
        ([{"role": "user", "content": 5}], "messages[0] is not a message: content: Input should"),
    ]:
        for graph in ("moa", "moa-unrolled"):
            out = client.runs.wait(None, graph, input={"messages": messages}, raise_error=False)
            error = _error(out)
            assert error["error"] == "InvalidMessagesError" and error["message"].startswith(said)
    assert server.requests == []
    # Within a thread too, where the reducer adds the input to the messages kept.
    thread = client.threads.create()["thread_id"]
    client.runs.wait(thread, "moa", input=QUESTION, context={"layers": 1})
    out = client.runs.wait(thread, "moa", input={"messages": None}, raise_error=False)
    assert _error(out)["message"] == "messages is null: send a list of messages"


def test_a_stateless_stream_stops_its_run_on_disconnect_only_when_asked(
    studio: str,  # noqa: F811
    server: FakeOpenAIServer,
) -> None:
    # The LangGraph server's own rule (langgraph-api): a stateless runs.stream goes on after its
    # client leaves, billed, unless the client passes on_disconnect="cancel"; the graph then
    # stops, its provider requests closed, and no later call starts (docs/serving.md).
    client = get_sync_client(url=studio, api_key=None)
    server.script("lgd-slow", "a slow proposal", ttft=4)
    server.script("lgd-agg", "the answer")
    context = {"proposers": ["together:lgd-slow"] * 2, "aggregator": "together:lgd-agg"}

    def leave_mid_run(**options: Any) -> None:
        stream = client.runs.stream(
            None, "moa", input=QUESTION, context=context, stream_mode="messages-tuple", **options
        )
        next(stream)  # the run's metadata: it started
        deadline = time.monotonic() + 60
        while len(server.requests_for("lgd-slow")) < 2:  # the proposers are asked
            assert time.monotonic() < deadline, "the proposers were never called"
            time.sleep(0.05)
        stream.close()  # the client goes away (its HTTP response closed)

    leave_mid_run(on_disconnect="cancel")
    deadline = time.monotonic() + 60
    while not all(r.disconnected for r in server.requests_for("lgd-slow")):
        assert time.monotonic() < deadline, "the cancelled run's provider requests stayed open"
        time.sleep(0.05)
    time.sleep(6)  # past the proposers' 4 s: nothing else is called
    assert server.requests_for("lgd-agg") == []

    server.requests.clear()
    leave_mid_run()  # the default: the run goes on without its client, and is billed
    deadline = time.monotonic() + 60
    while not server.requests_for("lgd-agg"):
        assert time.monotonic() < deadline, "the run stopped with its client"
        time.sleep(0.1)
    assert not any(r.disconnected for r in server.requests_for("lgd-slow"))


def test_a_base_url_with_a_tab_is_the_clients_error_not_an_internal_one(
    studio: str,  # noqa: F811
    server: FakeOpenAIServer,
) -> None:
    # urlsplit drops the tab: the URL passed for the endpoint listed, then the HTTP client refused
    # it, and the client got {"error": "InvalidURL", "message": "An internal error occurred"}.
    # The context's own check refuses it now, as LangGraph validates a run's context: with
    # pydantic's wording around ours, like every other bad context value.
    client = get_sync_client(url=studio, api_key=None)
    tabbed = server.base_url.replace("/v1", "\t/v1")
    context = {"aggregator": {"model": "openai:m", "base_url": tabbed}, "layers": 1}
    out = client.runs.wait(None, "moa", input=QUESTION, context=context, raise_error=False)
    error = _error(out)
    assert error["error"] == "ValidationError"
    assert "aggregator.base_url" in error["message"]
    assert f"{tabbed!r} holds '\\t' at " in error["message"]
    assert "give the URL alone" in error["message"]
    assert server.requests == []


def test_a_command_cannot_slip_past_the_first_steps_checks(
    studio: str,  # noqa: F811
    server: FakeOpenAIServer,
) -> None:
    # A Command writing the turn's tools (or stop sequences) and going straight to the aggregator
    # skipped the checks of the run's input: 300 tools no provider takes reached the aggregator,
    # three paid calls, and stayed in the thread for its next commanded run.
    client = get_sync_client(url=studio, api_key=None)
    context = {"proposers": ["together:p1"], "aggregator": "together:agg"}
    again = [{"role": "user", "content": "again"}]
    tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(300)]
    bad_schema = [{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}]
    for update, kind, said in [
        ({"turn_bind": {"tools": tools}}, "ClientSettingError", "turn_bind.tools: at most 128"),
        (
            {"turn_bind": {"tools": bad_schema}},
            "ClientSettingError",
            "turn_bind: tools[0].function.parameters is not a valid JSON schema",
        ),
        ({"turn_stop": 5}, "ConfigError", "turn_stop must be a string or a list of strings"),
    ]:
        thread = client.threads.create()["thread_id"]
        client.runs.wait(thread, "moa", input=QUESTION, context=context)
        server.requests.clear()
        writes = {"update": {**update, "messages": again}, "goto": "aggregate"}
        finds = {"update": {"messages": again}, "goto": "aggregate"}  # the thread keeps it
        for command in (writes, finds):
            out = client.runs.wait(
                thread, "moa", command=command, context=context, raise_error=False
            )
            error = _error(out)
            assert error["error"] == kind and error["message"].startswith(said), error
        assert server.requests == []  # refused before any model was paid
        # The thread's next turn brings its own options: it runs.
        out = client.runs.wait(thread, "moa", input=QUESTION, context=context)
        assert out["messages"][-1]["content"]

"""``moa serve`` with tools and response formats, driven by the ``openai`` SDK's own tool loop,
streaming helper and ``parse``."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import fake_context, spec
from fake_openai import FakeOpenAIServer, RecordedRequest, ToolCall, ToolCallReply
from langchain_core.messages import convert_to_messages
from pydantic import BaseModel
from serving import app_for, running
from test_tools import WEATHER, agent_script, chat

from langgraph_moa import Context, UnpairedToolCallError

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
QUESTION: Any = [{"role": "user", "content": "What's the weather in Paris?"}]
CALL: Any = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
CALLED_WEATHER: Any = {"role": "assistant", "content": None, "tool_calls": [CALL]}
WEATHER_RESULT: Any = {"role": "tool", "tool_call_id": "c1", "content": WEATHER}
DEEP = '{"a": ' * 5000 + "1" + "}" * 5000  # JSON arguments nested 5,000 deep


def tool_with(**function: Any) -> Any:
    return {**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], **function}}


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with running(app_for(fake_context(server, ["p1", "p2"]))) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


def run_tool(call: Any) -> str:
    assert call.function.name == "weather"
    return f"{WEATHER} in {json.loads(call.function.arguments)['city']}"


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_the_openai_sdks_tool_loop(
    server: FakeOpenAIServer, client: openai.OpenAI, streamed: bool
) -> None:
    agent_script(server, token_delay=0.001)
    messages: list[Any] = list(QUESTION)
    for _ in range(3):  # the SDK user's loop: call tools until the model answers
        if streamed:
            with client.chat.completions.stream(
                model="fake", messages=messages, tools=[WEATHER_TOOL], parallel_tool_calls=False
            ) as stream:
                completion = stream.get_final_completion()
        else:
            completion = client.chat.completions.create(
                model="fake", messages=messages, tools=[WEATHER_TOOL], parallel_tool_calls=False
            )
        choice = completion.choices[0]
        if choice.finish_reason != "tool_calls":
            break
        assert choice.message.content is None
        messages.append(choice.message)
        for call in choice.message.tool_calls or []:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": run_tool(call)})
    assert choice.finish_reason == "stop"
    assert choice.message.content == "It is sunny in Paris, 21 C."
    assert [m["role"] if isinstance(m, dict) else m.role for m in messages] == [
        "user",
        "assistant",
        "tool",
    ]
    first, second = server.requests_for("agg")
    assert first.body["parallel_tool_calls"] is False
    assert second.messages[-1]["role"] == "tool"
    assert second.messages[-1]["content"] == f"{WEATHER} in Paris"
    assert server.requests_for("p1")[1].messages[-1]["content"].startswith("[tool result")


def test_streamed_tool_calls_in_openais_chunk_shapes(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    agent_script(server)
    chunks = list(
        client.chat.completions.create(
            model="fake",
            messages=QUESTION,
            tools=[WEATHER_TOOL],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [c.choices[0] for c in chunks if c.choices]
    (calls,) = [d.delta.tool_calls for d in deltas if d.delta.tool_calls]
    assert calls[0].index == 0 and calls[0].type == "function" and calls[0].id
    assert calls[0].function is not None and calls[0].function.name == "weather"
    assert json.loads(calls[0].function.arguments or "") == {"city": "Paris"}
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_a_tool_call_where_the_client_sent_no_tools_is_no_answer(
    server: FakeOpenAIServer, client: openai.OpenAI, streamed: bool
) -> None:
    # It reached the client: a 200 with tool_calls [rm_rf] and finish_reason "tool_calls", for a
    # client that sent no tools (or an empty answer on /moa/invoke). Now it is a bad answer,
    # asked again, told why; a proposer's call is no proposal.
    server.script("p1", "It is sunny.")
    server.script("p2", ToolCallReply([ToolCall("rm_rf", {"path": "/"})]))
    replies = iter([ToolCallReply([ToolCall("rm_rf", {"path": "/"})]), "It is sunny in Paris."])
    server.script("agg", lambda r: next(replies))
    ask: Any = {"model": "fake", "messages": QUESTION, "extra_body": {"show_proposals": True}}
    if streamed:
        chunks = list(client.chat.completions.create(**ask, stream=True))
        deltas = [c.choices[0] for c in chunks if c.choices]
        text = "".join(d.delta.content or "" for d in deltas)
        assert not [d for d in deltas if d.delta.tool_calls]
        reasoning = "".join(getattr(d.delta, "reasoning_content", None) or "" for d in deltas)
        finish = [d.finish_reason for d in deltas if d.finish_reason]
    else:
        completion = client.chat.completions.create(**ask)
        choice = completion.choices[0]
        assert not choice.message.tool_calls
        text, finish = choice.message.content or "", [choice.finish_reason]
        reasoning = getattr(choice.message, "reasoning_content", None) or ""
    assert text.endswith("It is sunny in Paris.") and finish == ["stop"]
    _, second = server.requests_for("agg")
    told = second.messages[-1]["content"]
    assert "it called a tool where none was given" in told and "call no tool" in told
    assert "it called a tool where none was given" in reasoning  # p2's failure, shown as such


class Person(BaseModel):
    name: str
    age: int


def json_script(server: FakeOpenAIServer) -> None:
    server.script("p1", "Ada Lovelace, 36.")
    server.script("p2", "Ada, who died at 36.")

    def aggregator(request: RecordedRequest) -> str | ToolCallReply:
        assert request.body.get("response_format"), "the aggregator is asked for JSON"
        return '{"name": "Ada", "age": 36}'

    server.script("agg", aggregator)


def test_the_sdks_parse_helper_and_json_mode(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    json_script(server)
    completion = client.chat.completions.parse(
        model="fake",
        messages=[{"role": "user", "content": "Who? Ada, 36."}],
        response_format=Person,
    )
    assert completion.choices[0].message.parsed == Person(name="Ada", age=36)
    (agg,) = server.requests_for("agg")
    assert agg.body["response_format"]["type"] == "json_schema"
    assert agg.body["response_format"]["json_schema"]["name"] == "Person"
    assert "response_format" not in server.requests_for("p1")[0].body  # proposers: prose

    # Streamed, with an answer asked again: the helper parses all the text it got.
    replies = iter(['{"name": "Ada"}', '{"name": "Ada", "age": 36}'])
    server.script("agg", lambda r: next(replies), token_delay=0.001)
    with client.chat.completions.stream(
        model="fake",
        messages=[{"role": "user", "content": "Who? Ada, 36."}],
        response_format=Person,
    ) as stream:
        assert stream.get_final_completion().choices[0].message.parsed == Person(name="Ada", age=36)

    json_script(server)
    server.requests.clear()
    answer = client.chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "Who? Ada, 36. Answer in JSON."}],
        response_format={"type": "json_object"},
    )
    assert json.loads(answer.choices[0].message.content or "") == {"name": "Ada", "age": 36}
    assert server.requests_for("agg")[0].body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"tools": [WEATHER_TOOL], "tool_choice": "search"}, "tool_choice", "'search'"),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"response_format": {"type": "xml"}}, "response_format", "'xml' is not supported"),
        (
            {"messages": [*QUESTION, {"role": "tool", "content": "x"}]},
            "messages[1].tool_call_id",
            "needs tool_call_id",
        ),
        (
            {
                "messages": [
                    *QUESTION,
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "w"}}]},
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]},
                ]
            },
            "messages[2].tool_calls[0]",
            "a tool call needs",
        ),
        (
            {"messages": [*QUESTION, CALLED_WEATHER, {**WEATHER_RESULT, "tool_call_id": "c9"}]},
            "messages[2].tool_call_id",
            "none has the id 'c9'",
        ),
        (
            {"messages": [*QUESTION, WEATHER_RESULT]},
            "messages[1].tool_call_id",
            "must answer a tool call of the assistant message just before it",
        ),
        (
            {"messages": [*QUESTION, CALLED_WEATHER, *QUESTION]},
            "messages[1].tool_calls",
            "none answers 'c1'",
        ),
        (
            {
                "messages": [
                    *QUESTION,
                    {
                        **CALLED_WEATHER,
                        "tool_calls": [{**CALL, "function": {"name": "w", "arguments": {}}}],
                    },
                    WEATHER_RESULT,
                ]
            },
            "messages[1].tool_calls[0]",
            "a tool call needs",
        ),
        (  # valid JSON, but deeper than Python's parser goes: a 500 was the server's bug
            {
                "messages": [
                    *QUESTION,
                    {
                        **CALLED_WEATHER,
                        "tool_calls": [{**CALL, "function": {"name": "w", "arguments": DEEP}}],
                    },
                    WEATHER_RESULT,
                ]
            },
            "messages[1].tool_calls[0]",
            "a tool call needs",
        ),
        (
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": "weather"}},
            "tool_choice",
            "names no function",
        ),
        ({"tools": [WEATHER_TOOL], "parallel_tool_calls": "yes"}, "parallel_tool_calls", "bool"),
        ({"tools": [tool_with(name="get weather")]}, "tools", "letters, digits, underscores"),
        ({"tools": [WEATHER_TOOL, WEATHER_TOOL]}, "tools", "'weather' names two tools"),
        # Chosen by its name, a tool named like a mode read as the mode ("none": no call at all)
        ({"tools": [tool_with(name="none")]}, "tools", "'none' is a tool_choice mode"),
        (
            {
                "tools": [WEATHER_TOOL],
                "tool_choice": {"type": "function", "function": {"name": "auto"}},
            },
            "tool_choice",
            "names a tool 'auto', which no tool may be named",
        ),
        ({"tools": [tool_with(parameters="city")]}, "tools", "must be a JSON schema object"),
        (
            {"tools": [tool_with(parameters={"type": "object", "required": "city"})]},
            "tools",
            "not a valid JSON schema: 'city' is not of type 'array' (at required)",
        ),
        (  # a tool call's arguments are an object: no call could match (OpenAI refuses it)
            {"tools": [tool_with(parameters={"type": "string"})], "tool_choice": "required"},
            "tools",
            "tools[0].function.parameters must describe an object (its arguments), not 'string'",
        ),
        (  # never read: a client's schema must not make the server open a file or a URL
            {"tools": [tool_with(parameters={"$ref": "file:///etc/passwd"})]},
            "tools",
            "$ref 'file:///etc/passwd' points to nothing in the schema",
        ),
        (
            {"tools": [tool_with(parameters={"properties": {"city": {"pattern": "("}}})]},
            "tools",
            "'(' is not a 'regex' (at properties/city/pattern)",
        ),
        (  # OpenAI's own limit, as ChatMoA.bind_tools holds it (nodes/models/tools.py)
            {"tools": [tool_with(name=f"t{i}") for i in range(129)]},
            "tools",
            "tools: at most 128 tools, not 129 (OpenAI's limit",
        ),
        ({"response_format": {}}, "response_format", "type None is not supported"),
        (
            {"response_format": {"type": "json_schema", "json_schema": "Person"}},
            "response_format",
            "needs json_schema.schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "response_format",
            "json_schema.name None must be",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "P", "schema": {"properties": {"age": {"enum": 3}}}},
                }
            },
            "response_format",
            "not a valid JSON schema: 3 is not of type 'array' (at properties/age/enum)",
        ),
        # The answer is one JSON object: with a schema of anything else every answer was paid
        # for, then refused (a 502 after five calls). OpenAI refuses these formats too.
        *(
            (
                {
                    "response_format": {
                        "type": "json_schema",
                        "json_schema": {"name": "x", "schema": schema},
                    }
                },
                "response_format",
                f'json_schema.schema must have "type": "object" at its root (the answer is one '
                f"JSON object, as OpenAI requires){said}",
            )
            for schema, said in [
                ({"type": "string"}, ", not 'string'"),
                ({"type": "array", "items": {"type": "integer"}}, ", not 'array'"),
                ({"enum": [1, 2]}, '; it has no "type" there'),
                ({"not": {}}, '; it has no "type" there'),
                ({"anyOf": [{"type": "object"}, {"type": "string"}]}, '; it has no "type" there'),
            ]
        ),
        (  # checking any value against it never ends: every tool call failed, after billing
            {
                "tools": [
                    tool_with(
                        parameters={
                            "$defs": {"a": {"$ref": "#/$defs/a"}},
                            "properties": {"x": {"$ref": "#/$defs/a"}},
                        }
                    )
                ]
            },
            "tools",
            "$ref '#/$defs/a' leads back to itself before any property or item of the value",
        ),
    ],
)
def test_bad_tool_requests_are_400s(
    server: FakeOpenAIServer, client: openai.OpenAI, body: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**{"model": "fake", "messages": QUESTION, **body})
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == param and message in error["message"]
    assert not server.requests  # nothing paid


SYSTEM: Any = {"role": "system", "content": "Answer in French."}


@pytest.mark.parametrize(
    ("history", "refused_at"),
    [
        ([CALLED_WEATHER, WEATHER_RESULT], None),
        ([SYSTEM, CALLED_WEATHER, WEATHER_RESULT, SYSTEM], None),
        # OpenAI refuses a system message between a call and its result, as any other message:
        # both name the system message
        ([CALLED_WEATHER, SYSTEM, WEATHER_RESULT], 2),
        ([CALLED_WEATHER, {"role": "user", "content": "No, don't."}], 1),
        ([WEATHER_RESULT], 1),
    ],
    ids=["paired", "system-around", "system-between", "call-turned-down", "result-of-no-call"],
)
def test_v1_and_the_graph_pair_tool_calls_by_one_rule(
    server: FakeOpenAIServer, client: openai.OpenAI, history: list[Any], refused_at: int | None
) -> None:
    messages = [*QUESTION, *history]
    agent_script(server)
    served = graph = None
    try:
        client.chat.completions.create(model="fake", messages=messages, tools=[WEATHER_TOOL])
    except openai.BadRequestError as exc:
        assert isinstance(exc.body, dict)
        served = exc.body["param"]
    try:
        chat(server).bind_tools([WEATHER_TOOL]).invoke(convert_to_messages(messages))
    except UnpairedToolCallError as exc:
        graph = exc.message if exc.between is None else exc.between
        assert (exc.between is not None) == ("move it before the calls" in str(exc))
    if refused_at is None:
        assert (served, graph) == (None, None)
    else:
        assert graph == refused_at and served.startswith(f"messages[{refused_at}]")


@pytest.mark.parametrize("stream", [False, True])
def test_an_aggregator_without_tools_is_a_400_naming_it(
    server: FakeOpenAIServer, stream: bool
) -> None:
    ctx = Context(proposers=[spec(server, "p1")], aggregator="local:smollm2")
    with running(app_for(ctx)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="local:smollm2 cannot call tools"):
            client.chat.completions.create(
                model="fake", messages=QUESTION, tools=[WEATHER_TOOL], stream=stream
            )
    assert not server.requests


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (ToolCall("search", {"q": "Paris"}), "the tool 'search', which does not exist"),
        # Streamed to the server, these were read as partial JSON: {} ("'city' is a required
        # property"), and an error of no JSON object
        (ToolCall("weather", "{not json"), "its call of weather has arguments that are not valid"),
        (ToolCall("weather", "[1, 2]"), "its call of weather has arguments that are not a JSON"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_bad_tool_call_is_asked_again(
    server: FakeOpenAIServer, client: openai.OpenAI, bad: ToolCall, problem: str, stream: bool
) -> None:
    server.script("p1", "Call weather.")
    server.script("p2", "Call weather.")
    replies = iter([ToolCallReply([bad]), ToolCallReply([ToolCall("weather", {"city": "Paris"})])])
    server.script("agg", lambda r: next(replies))
    ask: Any = {"model": "fake", "messages": QUESTION, "tools": [WEATHER_TOOL]}
    if stream:
        chunks = list(client.chat.completions.create(**ask, stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        (calls,) = [d.tool_calls for d in deltas if d.tool_calls]
        name = calls[0].function.name if calls[0].function else None
    else:
        completion = client.chat.completions.create(**ask)
        (call,) = completion.choices[0].message.tool_calls or []
        name = call.function.name  # type: ignore[union-attr]
    assert name == "weather"
    _, second = server.requests_for("agg")
    assert problem in second.messages[-1]["content"]


def test_a_huge_schema_is_checked_while_the_server_answers_others(
    server: FakeOpenAIServer,
) -> None:
    # Checking a JSON schema of 15,000 properties (0.5 MB) takes seconds of CPU: it must not stop
    # the event loop, every other client's requests and streams with it.
    properties = {f"p{i}": {"type": "string"} for i in range(15_000)}
    schema = {"name": "huge", "schema": {"type": "object", "properties": properties}}
    body = json.dumps(
        {
            "model": "no-such-model",  # a 400 once the schema is checked: nothing runs
            "messages": QUESTION,
            "response_format": {"type": "json_schema", "json_schema": schema},
        }
    ).encode()
    with running(app_for(fake_context(server, ["p1"]))) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as huge:
            head = "POST /v1/chat/completions HTTP/1.1\r\nHost: moa\r\n"
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            huge.sendall(head.encode() + body)
            time.sleep(0.3)  # read by the server, whose check is under way
            assert httpx.get(f"{url}/health", timeout=60).status_code == 200
            huge.setblocking(False)
            with pytest.raises(BlockingIOError):
                huge.recv(1)  # /health was answered before the huge request's check ended
            huge.setblocking(True)
            assert b" 400 " in huge.recv(200).split(b"\r\n")[0]
    assert not server.requests


@pytest.mark.parametrize("stream", [False, True])
def test_json_nested_deeper_than_python_parses_is_asked_again_not_a_500(
    server: FakeOpenAIServer, client: openai.OpenAI, stream: bool
) -> None:
    # A client may ask the model for it; the answer's check must refuse it as it refuses any bad
    # JSON: asked again, then a 502 naming why, never the 500 of a server bug.
    server.script("p1", "Nest it.")
    deep = "[" * 5000 + "]" * 5000  # one token: the answer is not cut at max_tokens
    server.script("agg", lambda r: '{"a": 1}' if "nested too deeply" in str(r.messages) else deep)
    schema = {"name": "A", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}
    formats = [{"type": "json_object"}, {"type": "json_schema", "json_schema": schema}]
    for response_format in formats:
        server.requests.clear()
        ask: Any = {"model": "fake", "messages": QUESTION, "response_format": response_format}
        if stream:
            text = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(**ask, stream=True)
                if c.choices
            )
        else:
            text = client.chat.completions.create(**ask).choices[0].message.content or ""
        assert json.loads(text) == {"a": 1}
        assert len(server.requests_for("agg")) == 2  # asked again once, told why

"""MoA as an agent's model: tool calls and structured output through the aggregator.

The fake provider scripts the aggregator's tool calls (OpenAI's shapes, streamed and not); the
agents are LangChain's ``create_agent`` and LangGraph's prebuilt ``ToolNode``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import fake_context, spec
from fake_openai import (
    FakeOpenAIServer,
    RecordedRequest,
    ToolCall,
    ToolCallReply,
    count_prompt_tokens,
)
from langchain.agents import create_agent
from langchain.agents.structured_output import ProviderStrategy
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from langgraph_moa import ChatMoA, Context, build_moa_graph
from langgraph_moa.nodes.errors import (
    AggregatorError,
    CapabilityError,
    ConfigError,
    InputError,
    UnpairedToolCallError,
)

WEATHER = "Sunny, 21 C"


@tool
def weather(city: str) -> str:
    """The current weather in a city."""
    return f"{WEATHER} in {city}"


@tool
def clock(city: str) -> str:
    """The local time in a city."""
    return f"12:00 in {city}"


def last_role(request: RecordedRequest) -> str:
    return str(request.messages[-1]["role"])


def agent_script(server: FakeOpenAIServer, *calls: ToolCall, token_delay: float = 0.0) -> None:
    """Proposers advise; the aggregator calls ``calls`` first, then answers from the results."""
    server.script("p1", "Call weather for Paris.")
    server.script("p2", "Use the weather tool with city Paris.")

    def aggregator(request: RecordedRequest) -> str | ToolCallReply:
        if last_role(request) == "tool":
            return "It is sunny in Paris, 21 C."
        return ToolCallReply(list(calls or [ToolCall("weather", {"city": "Paris"})]))

    server.script("agg", aggregator, token_delay=token_delay)


def chat(server: FakeOpenAIServer, **kw: Any) -> ChatMoA:
    return ChatMoA(context=fake_context(server, ["p1", "p2"], **kw))


def system_text(request: RecordedRequest) -> str:
    first = request.messages[0]
    return str(first["content"]) if first["role"] == "system" else ""


def server_usage(request: RecordedRequest) -> int:
    """The tokens the fake server reported for one request."""
    return count_prompt_tokens(request.messages) + request.chunks_sent


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_agent_calls_a_tool_gets_its_result_and_answers(
    server: FakeOpenAIServer, mode: str
) -> None:
    agent_script(server)
    agent = create_agent(model=chat(server), tools=[weather])
    inputs = {"messages": [HumanMessage("What's the weather in Paris?")]}
    state = agent.invoke(inputs) if mode == "sync" else await agent.ainvoke(inputs)

    kinds = [type(m).__name__ for m in state["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    call, result, answer = state["messages"][1:]
    assert call.tool_calls[0]["name"] == "weather"
    assert call.tool_calls[0]["args"] == {"city": "Paris"}
    assert result.content == f"{WEATHER} in Paris"
    assert answer.content == "It is sunny in Paris, 21 C." and not answer.tool_calls

    first, second = server.requests_for("agg")
    # The aggregator is bound to the tool, and sees the tool call and its result as they are.
    assert [t["function"]["name"] for t in first.body["tools"]] == ["weather"]
    assert second.messages[-2]["role"] == "assistant"
    assert second.messages[-2]["tool_calls"][0]["function"]["name"] == "weather"
    assert second.messages[-1] == {
        "role": "tool",
        "content": f"{WEATHER} in Paris",
        "tool_call_id": call.tool_calls[0]["id"],
    }
    # The proposers are not bound: they get the tools described, and the result as text.
    for name in ("p1", "p2"):
        p_first, p_second = server.requests_for(name)
        assert "tools" not in p_first.body
        assert "weather" in system_text(p_first) and "city" in system_text(p_first)
        assert p_second.messages[-1] == {
            "role": "user",
            "content": f"[tool weather returned]\n{WEATHER} in Paris",
        }
        assert '[called tool weather with {"city": "Paris"}]' in json.dumps(
            p_second.messages, ensure_ascii=False
        ).replace('\\"', '"')
    # Usage per step: each answer carries the tokens of its own step's calls.
    steps = [server.requests[:3], server.requests[3:]]
    for message, calls in zip((call, answer), steps, strict=True):
        assert message.usage_metadata is not None
        assert message.usage_metadata["total_tokens"] == sum(server_usage(r) for r in calls)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_streamed_agent_shows_only_the_aggregators_tokens_and_tool_calls(
    server: FakeOpenAIServer, mode: str
) -> None:
    agent_script(server, token_delay=0.001)
    agent = create_agent(model=chat(server), tools=[weather])
    inputs = {"messages": [HumanMessage("What's the weather in Paris?")]}
    if mode == "sync":
        parts = list(agent.stream(inputs, stream_mode="messages"))
    else:
        parts = [p async for p in agent.astream(inputs, stream_mode="messages")]
    model_chunks = [c for c, meta in parts if isinstance(c, AIMessageChunk)]
    text = "".join(str(c.content) for c in model_chunks)
    assert text == "It is sunny in Paris, 21 C."  # no proposal text
    assert len([c for c in model_chunks if c.content]) == 7  # token by token
    calls = [tc for c in model_chunks for tc in c.tool_call_chunks]
    assert [(c["name"], json.loads(c["args"] or "{}")) for c in calls] == [
        ("weather", {"city": "Paris"})
    ]
    tools = [c for c, meta in parts if isinstance(c, ToolMessage)]
    assert [t.content for t in tools] == [f"{WEATHER} in Paris"]


async def test_a_hand_built_graph_with_langgraphs_tool_node(server: FakeOpenAIServer) -> None:
    agent_script(
        server, ToolCall("weather", {"city": "Paris"}), ToolCall("clock", {"city": "Paris"})
    )
    model = chat(server).bind_tools([weather, clock], parallel_tool_calls=True)

    def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    async def acall_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    for node in (call_model, acall_model):
        server.requests.clear()
        builder = StateGraph(MessagesState)
        builder.add_node("model", node)
        builder.add_node("tools", ToolNode([weather, clock]))
        builder.add_edge(START, "model")
        builder.add_conditional_edges("model", tools_condition)
        builder.add_edge("tools", "model")
        app = builder.compile()
        inputs = {"messages": [HumanMessage("Weather and time in Paris?")]}
        state = app.invoke(inputs) if node is call_model else await app.ainvoke(inputs)
        results = [m.content for m in state["messages"] if isinstance(m, ToolMessage)]
        assert results == [f"{WEATHER} in Paris", "12:00 in Paris"]  # both calls of one answer
        assert state["messages"][-1].content == "It is sunny in Paris, 21 C."
        assert server.requests_for("agg")[0].body["parallel_tool_calls"] is True


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("auto", "auto"),
        ("any", "required"),
        ("required", "required"),
        ("weather", {"type": "function", "function": {"name": "weather"}}),
    ],
)
def test_tool_choice_reaches_the_aggregator(
    server: FakeOpenAIServer, choice: str, sent: Any
) -> None:
    agent_script(server)
    message = chat(server).bind_tools([weather, clock], tool_choice=choice).invoke("Paris?")
    assert message.tool_calls[0]["name"] == "weather"
    (agg,) = server.requests_for("agg")
    assert agg.body["tool_choice"] == sent


def test_tool_choice_none_and_bad_choices(server: FakeOpenAIServer) -> None:
    server.script("p1", "It is sunny.")
    server.script("p2", "Sunny, I think.")
    server.script("agg", "Probably sunny.")
    message = chat(server).bind_tools([weather], tool_choice="none").invoke("Weather in Paris?")
    assert message.content == "Probably sunny." and not message.tool_calls
    assert server.requests_for("agg")[0].body["tool_choice"] == "none"
    assert "weather" not in system_text(server.requests_for("p1")[0])  # nothing to advise on
    with pytest.raises(ConfigError, match="'search', which is not among the tools"):
        chat(server).bind_tools([weather], tool_choice="search")


def test_tool_choice_none_means_no_call_and_no_tool_is_named_like_a_mode(
    server: FakeOpenAIServer,
) -> None:
    # "none" was read as a tool's name: "it called another tool than none, which the tool choice
    # requires", and the aggregator was told to call only the tools it is given.
    server.script("p1", "It is sunny.")
    replies = iter([ToolCallReply([ToolCall("weather", {"city": "Paris"})]), "Probably sunny."])
    server.script("agg", lambda r: next(replies))
    message = chat(server).bind_tools([weather], tool_choice="none").invoke("Weather in Paris?")
    assert message.content == "Probably sunny." and not message.tool_calls
    told = server.requests_for("agg")[1].messages[-1]["content"]
    assert "it called a tool where the tool choice is 'none' (answer in text)" in told
    assert "call no tool" in told and "another tool than" not in told

    # A tool named like a mode would be chosen by its name as that mode (OpenAI's form
    # {"type": "function", "function": {"name": ...}} names a tool): refused when bound.
    server.requests.clear()
    for mode in ("none", "auto", "required", "any"):
        named = {"type": "function", "function": {"name": mode, "parameters": {}}}
        with pytest.raises(ConfigError, match=rf"name '{mode}' is a tool_choice mode"):
            chat(server).bind_tools([named])
        by_name = {"type": "function", "function": {"name": mode}}
        with pytest.raises(ConfigError, match=rf"names a tool '{mode}', which no tool may"):
            chat(server).bind_tools([weather], tool_choice=by_name)
    assert server.requests == []


def test_more_tools_than_openai_takes_are_refused_when_bound_as_moa_serve_refuses_them(
    server: FakeOpenAIServer,
) -> None:
    # moa serve's /v1 refused 129 tools like OpenAI; ChatMoA took them, and the run would have
    # paid the proposers before the aggregator's provider refused the request.
    def function(i: int) -> dict[str, Any]:
        return {"type": "function", "function": {"name": f"t{i}", "parameters": {}}}

    chat(server).bind_tools([function(i) for i in range(128)])  # OpenAI's limit: taken
    with pytest.raises(ConfigError) as refused:
        chat(server).bind_tools([function(i) for i in range(129)])
    assert str(refused.value) == (
        "tools: at most 128 tools, not 129 (OpenAI's limit, which moa serve holds its clients "
        "to): bind only the tools the step needs"
    )
    assert server.requests == []


async def test_a_tool_call_nobody_bound_is_no_answer_nor_proposal(server: FakeOpenAIServer) -> None:
    # A proposer's call was an empty proposal, and the aggregator's reached the caller as the
    # answer's tool_calls, for a caller that bound no tools.
    from langgraph_moa import graph

    server.script("p1", "It is sunny.")
    server.script("p2", ToolCallReply([ToolCall("weather", {"city": "Paris"})]))
    replies = iter([ToolCallReply([ToolCall("weather", {"city": "Paris"})]), "Sunny, 21 C."])
    server.script("agg", lambda r: next(replies))
    state = await graph.ainvoke(
        {"messages": [HumanMessage("Weather in Paris?")]},
        context=fake_context(server, ["p1", "p2"]),
    )
    answer = state["messages"][-1]
    assert answer.content == "Sunny, 21 C." and not answer.tool_calls
    proposed, called = state["layers"][0]
    assert proposed["text"] == "It is sunny." and proposed["error"] is None
    assert called["text"] is None
    assert called["error"] == {
        "kind": "tool_call",
        "message": "it called a tool where none was given",
    }
    first, second = server.requests_for("agg")
    references = system_text(first)  # one reference: p1's
    assert '<reference id="1">' in references and '<reference id="2">' not in references
    assert "it called a tool where none was given" in second.messages[-1]["content"]


@pytest.mark.parametrize(
    ("policy", "choice", "proposers_called"),
    [
        ("advise", "any", True),
        ("skip_forced", "any", False),
        ("skip_forced", "auto", True),
        ("skip", "auto", False),
    ],
)
async def test_what_proposers_do_on_a_tool_step(
    server: FakeOpenAIServer, policy: str, choice: str, proposers_called: bool
) -> None:
    agent_script(server)
    model = chat(server, tool_proposers=policy).bind_tools([weather], tool_choice=choice)
    message = await model.ainvoke("Weather in Paris?")
    assert message.tool_calls[0]["args"] == {"city": "Paris"}
    assert bool(server.requests_for("p1")) is proposers_called
    assert (message.response_metadata["moa_layers"] != []) is proposers_called


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (ToolCall("search", {"q": "Paris"}), "the tool 'search', which does not exist"),
        (ToolCall("weather", {"town": "Paris"}), "arguments: 'city' is a required property"),
        (ToolCall("weather", {"city": 75}), "arguments.city: 75 is not of type 'string'"),
        (ToolCall("weather", '{"city": "Par'), "not valid JSON"),
        (ToolCall("weather", "{not json"), "not valid JSON"),
        # JSON but no object: not streamed, LangChain's AIMessage refused them (a failed call
        # with pydantic's words, never asked again), and read null as {}.
        (ToolCall("weather", "[1, 2]"), "has arguments that are not a JSON object"),
        (ToolCall("weather", "3"), "has arguments that are not a JSON object"),
        (ToolCall("weather", "null"), "has arguments that are not a JSON object"),
    ],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
async def test_a_bad_tool_call_is_asked_again_then_a_clear_error(
    server: FakeOpenAIServer, bad: ToolCall, problem: str, streamed: bool
) -> None:
    # Streamed, arguments that are no JSON were read as partial JSON: "{not json" as {} ("'city'
    # is a required property"), a cut '{"city": "Par' as {"city": "Par"} (a call that passed).
    server.script("p1", "Call weather.")
    server.script("p2", "Call weather.")
    replies = iter([ToolCallReply([bad]), ToolCallReply([ToolCall("weather", {"city": "Paris"})])])
    server.script("agg", lambda r: next(replies))
    model = chat(server).bind_tools([weather])
    if streamed:
        chunks = [chunk async for chunk in model.astream("Weather in Paris?")]
        message = chunks[0]
        for chunk in chunks[1:]:
            message += chunk
    else:
        message = await model.ainvoke("Weather in Paris?")
    assert message.tool_calls[0]["args"] == {"city": "Paris"}
    _, retry = server.requests_for("agg")  # asked once again
    assert problem in retry.messages[-1]["content"]  # the aggregator is told what was wrong
    assert message.usage_metadata is not None  # the rejected answer was paid for: counted
    assert message.usage_metadata["total_tokens"] == sum(server_usage(r) for r in server.requests)

    server.reset()
    server.script("p1", "Call weather.")
    server.script("agg", ToolCallReply([bad]))
    model = ChatMoA(context=fake_context(server, ["p1"], max_attempts=2)).bind_tools([weather])
    with pytest.raises(AggregatorError) as caught:
        list(model.stream("Weather in Paris?")) if streamed else model.invoke("Weather in Paris?")
    assert str(caught.value).startswith("aggregator together:agg failed: ")
    assert problem in str(caught.value) and "(2 answers)" in str(caught.value)
    assert len(server.requests_for("agg")) == 2


def test_an_aggregator_that_cannot_call_tools_is_named(server: FakeOpenAIServer) -> None:
    server.script("p1", "Call weather.")
    ctx = Context(proposers=[spec(server, "p1")], aggregator="local:smollm2")
    with pytest.raises(CapabilityError, match=r"^local:smollm2 cannot call tools"):
        ChatMoA(context=ctx).bind_tools([weather]).invoke("Weather in Paris?")
    assert not server.requests  # said before any proposer was paid


def test_the_unrolled_graph_names_an_aggregator_that_cannot_call_tools(
    server: FakeOpenAIServer,
) -> None:
    # The check ran in the dynamic graph's router only: the unrolled graph paid its proposers.
    server.script("p1", "Call weather.")
    ctx = Context(proposers=[spec(server, "p1")], aggregator="local:smollm2")
    unrolled = build_moa_graph(unroll=ctx).compile()
    tools = [convert_to_openai_tool(weather)]
    question = {"messages": [HumanMessage("Weather in Paris?")], "bind": {"tools": tools}}
    with pytest.raises(CapabilityError, match=r"^local:smollm2 cannot call tools"):
        unrolled.invoke(question, context=ctx)
    assert not server.requests


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="The person's name")
    age: int


class PersonDict(TypedDict):
    """A person mentioned in the text."""

    name: str
    age: int


PERSON_SCHEMA = {
    "title": "Person",
    "description": "A person mentioned in the text.",
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def structured_script(server: FakeOpenAIServer) -> None:
    server.script("p1", "Ada Lovelace, who was 36.")
    server.script("p2", "The person is Ada, aged 36.")

    def aggregator(request: RecordedRequest) -> str | ToolCallReply:
        if request.body.get("tools"):
            name = request.body["tools"][0]["function"]["name"]
            return ToolCallReply([ToolCall(name, {"name": "Ada", "age": 36})])
        return '{"name": "Ada", "age": 36}'

    server.script("agg", aggregator)


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
@pytest.mark.parametrize(
    "schema", [Person, PersonDict, PERSON_SCHEMA], ids=["pydantic", "typeddict", "json"]
)
async def test_structured_output_by_each_method(
    server: FakeOpenAIServer, method: str, schema: Any
) -> None:
    structured_script(server)
    structured = chat(server).with_structured_output(schema, method=method)  # type: ignore[arg-type]
    prompt = "Extract the person as JSON: Ada Lovelace died at 36."
    result = await structured.ainvoke(prompt)
    if schema is Person:
        assert result == Person(name="Ada", age=36)
    else:
        assert result == {"name": "Ada", "age": 36}
    (agg,) = server.requests_for("agg")
    if method == "function_calling":
        assert agg.body["tool_choice"] == "required"
    elif method == "json_schema":
        assert agg.body["response_format"]["type"] == "json_schema"
        assert agg.body["response_format"]["json_schema"]["schema"]["required"] == ["name", "age"]
    else:
        assert agg.body["response_format"] == {"type": "json_object"}
    # The proposers answer in prose: no tools, no response format.
    assert not {"tools", "response_format"} & set(server.requests_for("p1")[0].body)


def test_structured_output_sync_with_include_raw_and_a_bad_answer(server: FakeOpenAIServer) -> None:
    structured_script(server)
    raw = chat(server).with_structured_output(Person, method="json_schema", include_raw=True)
    out = raw.invoke("Who? Ada Lovelace, 36.")
    assert isinstance(out, dict) and out["parsed"] == Person(name="Ada", age=36)
    assert isinstance(out["raw"], AIMessage) and out["parsing_error"] is None

    # A JSON answer that does not match the schema is asked again, then fails clearly.
    server.reset()
    server.script("p1", "Ada.")
    server.script("agg", '{"name": "Ada"}')
    structured = ChatMoA(context=fake_context(server, ["p1"], max_attempts=2))
    with pytest.raises(AggregatorError, match="the answer: 'age' is a required property"):
        structured.with_structured_output(Person, method="json_schema").invoke("Who?")


def test_a_tool_schema_is_checked_when_bound_and_read_in_full(server: FakeOpenAIServer) -> None:
    any_city = {"type": "function", "function": {"name": "weather", "parameters": {}}}
    any_city["function"]["parameters"] = {"type": "object", "properties": {"city": True}}
    server.script("p1", "Call weather.")
    server.script("agg", ToolCallReply([ToolCall("weather", {"city": ["Paris", 1]})]))
    model = ChatMoA(context=fake_context(server, ["p1"])).bind_tools([any_city])
    assert model.invoke("Weather?").tool_calls[0]["args"] == {"city": ["Paris", 1]}

    broken = {**any_city, "function": {"name": "weather", "parameters": {"type": "thing"}}}
    with pytest.raises(ConfigError, match=r"parameters is not a valid JSON schema: 'thing' is"):
        ChatMoA(context=fake_context(server, ["p1"])).bind_tools([broken])

    # Arguments are a JSON object: a schema of anything else matches no call, so every answer
    # would be refused and paid for (the proposers' too) before the run failed.
    for kind in ("string", ["array", "null"]):
        scalar = {**any_city, "function": {"name": "weather", "parameters": {"type": kind}}}
        with pytest.raises(ConfigError, match=r"parameters must describe an object \(its argu"):
            ChatMoA(context=fake_context(server, ["p1"])).bind_tools([scalar])
    nullable = {"type": ["object", "null"], "properties": {"city": {"type": "string"}}}
    tool = {"type": "function", "function": {"name": "weather", "parameters": nullable}}
    server.script("agg", ToolCallReply([ToolCall("weather", {"city": "Paris"})]))
    server.requests.clear()
    model = ChatMoA(context=fake_context(server, ["p1"])).bind_tools([tool])
    assert model.invoke("Weather?").tool_calls[0]["args"] == {"city": "Paris"}
    assert len(server.requests_for("agg")) == 1

    # References point into the schema; one elsewhere (a URL, a file) is refused, never read.
    city = {"$ref": "#/$defs/City"}
    by_ref = {"type": "object", "properties": {"city": city}, "$defs": {"City": {"type": "string"}}}
    replies = iter([ToolCall("weather", {"city": 75}), ToolCall("weather", {"city": "Paris"})])
    server.script("agg", lambda r: ToolCallReply([next(replies)]))
    tool = {"type": "function", "function": {"name": "weather", "parameters": by_ref}}
    model = ChatMoA(context=fake_context(server, ["p1"])).bind_tools([tool])
    assert model.invoke("Weather?").tool_calls[0]["args"] == {"city": "Paris"}
    assert "arguments.city: 75 is not of type 'string'" in str(server.requests_for("agg")[-1].body)
    # A client's regex is never run on what the model writes: "^(a+)+$" on 40 a's and a "!"
    # would hold the server's event loop (and the GIL) for hours (ReDoS). Patterns go unchecked.
    digits = {"type": "object", "properties": {"city": {"type": "string", "pattern": "^[0-9]+$"}}}
    server.requests.clear()
    server.script("agg", ToolCallReply([ToolCall("weather", {"city": "Paris"})]))
    tool = {"type": "function", "function": {"name": "weather", "parameters": digits}}
    model = ChatMoA(context=fake_context(server, ["p1"])).bind_tools([tool])
    assert model.invoke("Weather?").tool_calls[0]["args"] == {"city": "Paris"}
    assert len(server.requests_for("agg")) == 1  # not asked again
    elsewhere = {"type": "object", "properties": {"city": {"$ref": f"{server.url}/city.json"}}}
    tool = {"type": "function", "function": {"name": "weather", "parameters": elsewhere}}
    with pytest.raises(ConfigError, match=r"city\.json' points to nothing in the schema"):
        ChatMoA(context=fake_context(server, ["p1"])).bind_tools([tool])


def test_a_schema_no_answer_could_match_is_refused_when_bound(server: FakeOpenAIServer) -> None:
    # Each was taken, then every answer was paid for and refused: a $ref leading back to itself
    # ("arguments is nested too deeply" for every call), a response format of no object.
    model = ChatMoA(context=fake_context(server, ["p1"]))
    looping = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "properties": {"x": {"$ref": "#/$defs/a"}}}
    tool = {"type": "function", "function": {"name": "weather", "parameters": looping}}
    with pytest.raises(ConfigError, match=r"'#/\$defs/a' leads back to itself before any prop"):
        model.bind_tools([tool])
    for schema in ({"type": "array", "items": {"type": "integer"}}, {"enum": [1, 2]}):
        json_schema = {"name": "numbers", "schema": schema}
        with pytest.raises(ConfigError, match='must have "type": "object" at its root'):
            model.bind(response_format={"type": "json_schema", "json_schema": json_schema}).invoke(
                "Three numbers?"
            )
        with pytest.raises(ConfigError, match='must have "type": "object" at its root'):
            model.with_structured_output(schema | {"title": "numbers"}, method="json_schema")
    assert server.requests == []


def test_structured_output_the_way_openai_models_take_it(server: FakeOpenAIServer) -> None:
    """``bind(response_format=schema)`` and create_agent's ProviderStrategy beside tools."""
    structured_script(server)
    chat_model = chat(server)
    answer = chat_model.bind(response_format=Person).invoke("Who? Ada Lovelace, 36.")
    assert Person.model_validate_json(str(answer.content)) == Person(name="Ada", age=36)

    server.reset()
    server.script("p1", "Call weather.")
    server.script("p2", "Call weather.")

    def aggregator(request: RecordedRequest) -> str | ToolCallReply:
        if last_role(request) == "tool":
            return '{"name": "Ada", "age": 36}'
        return ToolCallReply([ToolCall("weather", {"city": "Paris"})])

    server.script("agg", aggregator)
    agent = create_agent(chat_model, tools=[weather], response_format=ProviderStrategy(Person))
    state = agent.invoke({"messages": [HumanMessage("Who lives in Paris?")]})
    assert state["structured_response"] == Person(name="Ada", age=36)
    first, _ = server.requests_for("agg")
    # OpenAI takes a response format beside tools only if the tools are strict.
    assert first.body["tools"][0]["function"]["strict"] is True
    assert first.body["response_format"]["json_schema"]["name"] == "Person"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_streamed_answer_asked_again_leaves_no_rejected_json(
    server: FakeOpenAIServer, mode: str
) -> None:
    """LangChain adds up a stream's chunks (as ``invoke`` does under ``stream_mode="messages"``):
    a JSON answer asked again must not reach them; streamed text of a rejected tool call stays,
    a blank line before the new answer (sent tokens cannot be taken back)."""
    server.script("p1", "Ada, 36.")
    replies = iter(['{"name": "Ada"}', '{"name": "Ada", "age": 36}'])
    server.script("agg", lambda r: next(replies), token_delay=0.001)
    structured = ChatMoA(context=fake_context(server, ["p1"])).with_structured_output(
        Person, method="json_schema"
    )
    if mode == "sync":
        parsed = list(structured.stream("Who?"))
    else:
        parsed = [p async for p in structured.astream("Who?")]
    assert parsed == [Person(name="Ada", age=36)]

    server.reset()
    server.script("p1", "Call weather.")
    replies = iter(
        [
            ToolCallReply([ToolCall("search", {"q": "Paris"})], content="Let me look."),
            ToolCallReply([ToolCall("weather", {"city": "Paris"})], content="Checking."),
            "Sunny.",
        ]
    )
    server.script("agg", lambda r: next(replies), token_delay=0.001)
    agent = create_agent(ChatMoA(context=fake_context(server, ["p1"])), tools=[weather])
    inputs = {"messages": [HumanMessage("Weather in Paris?")]}
    if mode == "sync":
        parts = list(agent.stream(inputs, stream_mode=["messages", "values"]))
    else:
        parts = [p async for p in agent.astream(inputs, stream_mode=["messages", "values"])]
    state = [payload for kind, payload in parts if kind == "values"][-1]
    assert [m.content for m in state["messages"][1:]] == [
        "Let me look.\n\nChecking.",
        f"{WEATHER} in Paris",
        "Sunny.",
    ]


CALL = {"name": "weather", "args": {"city": "Paris"}, "id": "c1"}


@pytest.mark.parametrize(
    ("history", "at", "ids", "said"),
    [
        (  # a human in the loop turned the call down and said so instead of running it
            [AIMessage("", tool_calls=[CALL]), HumanMessage("No, not that. Just guess.")],
            1,
            ["c1"],
            r"messages\[1\] calls tools that no tool message right after it answers \('c1'\)",
        ),
        (
            [
                AIMessage("", tool_calls=[CALL, {**CALL, "id": "c2"}]),
                ToolMessage("x", tool_call_id="c1"),
            ],
            1,
            ["c2"],
            r"\('c2'\)",
        ),
        (
            [AIMessage("", tool_calls=[CALL]), ToolMessage("x", tool_call_id="c9")],
            2,
            ["c9"],
            r"messages\[2\] is a tool result for 'c9', which no tool call of the assistant",
        ),
    ],
    ids=["call-turned-down", "one-of-two-unanswered", "result-of-no-call"],
)
def test_tool_calls_and_results_the_aggregator_would_be_refused_fail_before_any_call(
    server: FakeOpenAIServer, history: list[Any], at: int, ids: list[str], said: str
) -> None:
    # The aggregator of a step with tools is sent the conversation as it is, and providers refuse
    # a tool call with no result right after it (or a result of no call): the proposers would be
    # paid, then the step fail on the aggregator's 400.
    agent_script(server)
    conversation = [HumanMessage("Weather in Paris?"), *history]
    model = chat(server).bind_tools([weather])
    with pytest.raises(UnpairedToolCallError, match=said) as caught:
        model.invoke(conversation)
    assert server.requests == []
    error = caught.value
    assert (error.message, error.ids) == (at, ids)
    assert isinstance(error, InputError) and isinstance(error, ValueError)
    # A call whose arguments were not JSON is sent to the provider as a call too (langchain-openai
    # sends invalid_tool_calls beside tool_calls): answered, it pairs like any other.
    bad = {"name": "weather", "args": "{city: Paris", "id": "c1", "error": None}
    answered = [
        HumanMessage("Weather in Paris?"),
        AIMessage("", invalid_tool_calls=[bad]),
        ToolMessage("Error: arguments are not JSON", tool_call_id="c1"),
    ]
    assert model.invoke(answered).content == "It is sunny in Paris, 21 C."
    # Without tools bound the aggregator reads the conversation as text, as the proposers do.
    server.script("agg", "A guess: sunny.")
    assert chat(server).invoke(conversation).content == "A guess: sunny."


def test_arguments_as_deep_as_a_recursive_schema_allows_are_asked_again(
    server: FakeOpenAIServer,
) -> None:
    # Valid by the schema perhaps, but deeper than its check can follow: refused like arguments
    # that do not match (asked again, told why), not an unexpected RecursionError from the run.
    tree = {"$ref": "#/$defs/node"}
    node = {"type": "object", "properties": {"child": tree}}
    parameters = {"type": "object", "properties": {"root": tree}, "$defs": {"node": node}}
    tool = {"type": "function", "function": {"name": "plant", "parameters": parameters}}
    deep = '{"child": ' * 400 + "{}" + "}" * 400
    server.script("p1", "Plant a tree.")
    replies = iter([f'{{"root": {deep}}}', '{"root": {"child": {}}}'])
    server.script("agg", lambda r: ToolCallReply([ToolCall("plant", next(replies))]))
    step = ChatMoA(context=fake_context(server, ["p1"])).bind_tools([tool]).invoke("Plant one.")
    assert step.tool_calls[0]["args"] == {"root": {"child": {}}}
    assert "arguments is nested too deeply" in str(server.requests_for("agg")[-1].messages)


@pytest.mark.parametrize(
    ("bind", "said"),
    [
        ("tools", "bind: must be an object of tools"),
        ([{"type": "function"}], "bind: must be an object of tools"),
        ({"tools": 5}, "bind.tools: must be a list of tool objects"),
        ({"tools": [], "temperature": 0}, "bind: unknown key 'temperature'"),
        (
            {"tools": [{"type": "function", "function": {"name": f"t{i}"}} for i in range(129)]},
            "bind.tools: at most 128 tools, not 129",
        ),
    ],
)
async def test_the_graphs_bind_input_of_the_wrong_shape_is_one_clear_error(
    server: FakeOpenAIServer, bind: Any, said: str
) -> None:
    # It was "'str' object has no attribute 'get'" (or the like) from deep inside.
    from langgraph_moa import graph

    with pytest.raises(ConfigError, match=said):
        await graph.ainvoke(
            {"messages": [HumanMessage("hi")], "bind": bind},
            context=fake_context(server, ["p1"]),
        )
    assert server.requests == []

"""MoA inside the test's own agent graphs: subgraph, node, tool, chat model; sync and async."""

from __future__ import annotations

import json
import operator
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
from conftest import fake_context
from fake_openai import Failure, FakeOpenAIServer, RecordedRequest, count_prompt_tokens
from langchain.agents import create_agent
from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from langgraph_moa import ChatMoA, Context, build_moa_graph, graph, moa_node, moa_tool
from langgraph_moa.nodes.errors import (
    ConfigError,
    EmptyConversationError,
    InputError,
    UnsupportedContentError,
)


@dataclass
class ParentContext:
    """A parent's own run-time settings, unrelated to MoA."""

    user_id: str = "u-1"
    moa: Context | None = None


class ParentState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    topic: str


def script(server: FakeOpenAIServer, answer: str = "the mixture's answer") -> None:
    for name in ("p1", "p2"):
        server.script(name, f"proposal by {name}")
    server.script("agg", answer, token_delay=0.002)


def requests_total_tokens(requests: list[RecordedRequest]) -> int:
    # What the server reported: prompt tokens by its own count, plus the chunks it sent.
    return sum(count_prompt_tokens(r.messages) + r.chunks_sent for r in requests)


async def test_a_subgraph_in_a_parent_with_its_own_state_and_context(
    server: FakeOpenAIServer,
) -> None:
    script(server)
    moa = build_moa_graph(context=fake_context(server, ["p1", "p2"])).compile(name="moa")
    parent = StateGraph(ParentState, context_schema=ParentContext)
    parent.add_node("moa", moa)
    parent.add_edge(START, "moa")
    parent.add_edge("moa", END)
    app = parent.compile()

    state = await app.ainvoke(
        {"messages": [HumanMessage("hi")], "topic": "t"}, context=ParentContext()
    )
    assert state["messages"][-1].content == "the mixture's answer"
    assert state["topic"] == "t"
    assert {r.model for r in server.requests} == {"p1", "p2", "agg"}

    # A moa field of the parent's context overrides the subgraph's own settings.
    server.reset()
    script(server)
    server.script("agg2", "from the parent's choice")
    own = fake_context(server, ["p1"], aggregator="agg2")
    state = app.invoke(
        {"messages": [HumanMessage("hi")], "topic": "t"}, context=ParentContext(moa=own)
    )
    assert state["messages"][-1].content == "from the parent's choice"
    assert {r.model for r in server.requests} == {"p1", "agg2"}


class QAState(TypedDict, total=False):
    question: str
    answer: str
    proposals: list[Any]
    log: Annotated[list[str], operator.add]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_node_over_the_parents_own_keys(server: FakeOpenAIServer, mode: str) -> None:
    script(server)
    parent = StateGraph(QAState)
    parent.add_node(
        "ask",
        moa_node(
            question="question",
            answer="answer",
            layers="proposals",
            context=fake_context(server, ["p1", "p2"]),
        ),
    )
    parent.add_edge(START, "ask")
    parent.add_edge("ask", END)
    app = parent.compile()
    inputs: QAState = {"question": "What is MoA?"}
    state = app.invoke(inputs) if mode == "sync" else await app.ainvoke(inputs)
    assert state["answer"] == "the mixture's answer"
    assert [p["text"] for p in state["proposals"][0]] == ["proposal by p1", "proposal by p2"]
    (agg,) = server.requests_for("agg")
    assert agg.messages[-1] == {"role": "user", "content": "What is MoA?"}


async def test_chat_moa_ends_its_answer_at_a_stop_sequence(server: FakeOpenAIServer) -> None:
    # A ReAct-style agent stops the model before it writes the tool's observation itself; the
    # stop sequence arrives split across tokens ("up.\n", "Observation: ").
    script(server, "I will look it up.\nObservation: made up\nmore")
    chat = ChatMoA(context=fake_context(server, ["p1", "p2"]))
    stop = ["\nObservation:"]
    said = "I will look it up."
    assert chat.invoke("q", stop=stop).content == said
    assert (await chat.ainvoke("q", stop=stop)).content == said
    pieces = [c.content for c in chat.stream("q", stop=stop)]
    assert "".join(map(str, pieces)) == said
    assert not any("\n" in str(p) for p in pieces)  # the held newline was never sent
    assert "".join([str(c.content) async for c in chat.astream("q", stop=stop)]) == said
    last = chat.invoke("q", stop=stop)
    assert last.usage_metadata is not None and last.usage_metadata["output_tokens"] > 0
    assert chat.invoke("q").content == "I will look it up.\nObservation: made up\nmore"


async def test_chat_moa_sends_its_stop_sequences_to_the_aggregator_only(
    server: FakeOpenAIServer,
) -> None:
    # The aggregator's provider stops where the agent asked (nothing after it is written or
    # paid for); the proposers write their whole answers. OpenAI takes at most 4: the first 4
    # are sent, and every one still ends the answer here.
    script(server)
    server.script("agg", "I will look it up.\nObservation: made up\nmore", honour_stop=True)
    chat = ChatMoA(context=fake_context(server, ["p1", "p2"]))
    stops = ["\nObservation:", "never", "said", "here", " look"]
    assert (await chat.ainvoke("q", stop=stops)).content == "I will"
    (aggregator,) = server.requests_for("agg")
    assert aggregator.body["stop"] == stops[:4]
    assert aggregator.reply == "I will look it up."  # the provider stopped at the first sent
    assert all("stop" not in r.body for r in server.requests if r.model != "agg")

    # An answer that begins with a stop sequence is an empty answer, as the agent asked: not an
    # "empty answer" failure asked again (and paid for) until the run fails.
    server.reset()
    script(server)
    server.script("agg", "Observation: made up", honour_stop=True)
    assert chat.invoke("q", stop=["Observation:"]).content == ""
    assert len(server.requests_for("agg")) == 1


async def test_the_graphs_stop_input_ends_the_answer_it_keeps(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    from langgraph_moa.nodes.models.callcache import CallCache, use_call_cache

    said = "I will look it up.\nObservation: made up"
    script(server, said)  # a provider that ignores stop writes on...
    ctx = fake_context(server, ["p1"])
    cut = {"messages": [HumanMessage("q")], "stop": ["\nObservation:"]}
    whole = {"messages": [HumanMessage("q")]}
    state = await graph.ainvoke(cut, context=ctx)
    assert state["messages"][-1].text == "I will look it up."  # ... and the answer kept is cut
    assert server.requests_for("agg")[0].body["stop"] == ["\nObservation:"]
    assert "stop" not in server.requests_for("p1")[0].body

    # With the call cache (moa batch), an answer asked with stop sequences is not the answer to
    # the same request without them (it would come back cut), nor the other way round.
    server.reset()
    server.script("p1", "proposal by p1")
    server.script("agg", said, honour_stop=True)
    cache = CallCache(tmp_path / "calls.sqlite")
    try:
        with use_call_cache(cache, "item"):
            answers = [
                (await graph.ainvoke(inputs, context=ctx))["messages"][-1].text
                for inputs in (cut, whole, cut, whole)
            ]
    finally:
        cache.close()
    assert answers == ["I will look it up.", said] * 2
    assert [r.reply for r in server.requests_for("agg")] == ["I will look it up.", said]
    assert len(server.requests_for("p1")) == 1  # the proposer's answer: the same either way

    with pytest.raises(ConfigError, match="stop must be a string or a list of strings"):
        await graph.ainvoke({**whole, "stop": 5}, context=ctx)  # type: ignore[typeddict-item]
    assert len(server.requests) == 3  # refused before any call


async def test_a_turn_without_stop_or_bind_has_none_after_a_turn_that_failed(
    server: FakeOpenAIServer,
) -> None:
    # On a checkpointed thread, a turn's stop sequences and tools are that turn's only: the next
    # turn sent without them gets an answer neither cut nor bound, even when the turn that sent
    # them failed before its aggregator could finish.
    script(server, "I will look it up.\nObservation: made up")
    server.fail("agg", Failure(status=400, message="the aggregator refuses"))
    moa = build_moa_graph(fake_context(server, ["p1"])).compile(checkpointer=InMemorySaver())
    thread: RunnableConfig = {"configurable": {"thread_id": "t"}}
    tool = {"type": "function", "function": {"name": "look_up", "parameters": {"type": "object"}}}
    failed = {
        "messages": [HumanMessage("q")],
        "stop": ["\nObservation:"],
        "bind": {"tools": [tool]},
    }
    with pytest.raises(Exception, match="the aggregator refuses"):
        await moa.ainvoke(failed, thread)  # type: ignore[arg-type]
    state = await moa.ainvoke({"messages": [HumanMessage("again")]}, thread)
    assert state["messages"][-1].text == "I will look it up.\nObservation: made up"
    last = server.requests_for("agg")[-1]
    assert "stop" not in last.body and "tools" not in last.body

    # A turn that sends them gets them, and the one after it again none.
    state = await moa.ainvoke({"messages": [HumanMessage("q")], "stop": "\nObservation:"}, thread)
    assert state["messages"][-1].text == "I will look it up."
    # Nor does a turn that succeeded keep them in the thread's later checkpoints.
    assert (await moa.aget_state(thread)).values["turn_stop"] is None
    state = await moa.ainvoke({"messages": [HumanMessage("q")]}, thread)
    assert state["messages"][-1].text == "I will look it up.\nObservation: made up"


def test_an_answer_asked_again_is_cut_afresh_by_the_stop_sequences(
    server: FakeOpenAIServer,
) -> None:
    # With tools bound a broken answer starts over; the first attempt reached the stop sequence,
    # and the new answer must still be shown (after the blank line of a restart), cut again.
    script(server, "Checking.\nObservation: x")
    server.fail("agg", Failure(drop_after_tokens=2))
    chat = ChatMoA(context=fake_context(server, ["p1"], retry_base_s=0.01))
    tools = chat.bind_tools([{"name": "look", "description": "d", "parameters": {}}])
    pieces = [str(c.content) for c in tools.stream("q", stop=["\nObservation:"])]
    assert "".join(pieces) == "Checking.\n\nChecking."
    assert len(server.requests_for("agg")) == 2


def test_a_chat_moa_with_a_misspelt_preset_fails_when_made() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'togther'; choose one of"):
        ChatMoA(context="togther")
    assert ChatMoA(context="together").context == "together"  # no key needed to make it


def test_per_call_settings_chat_moa_would_ignore_are_refused(server: FakeOpenAIServer) -> None:
    # As ChatOpenAI takes them, they change the answer; ChatMoA's models take theirs from its
    # Context, so an answer made otherwise than asked (temperature=0 not deterministic, tools
    # never called) would come back as if they had been used.
    script(server)
    chat = ChatMoA(context=fake_context(server, ["p1", "p2"]))
    tool = {"type": "function", "function": {"name": "weather", "parameters": {}}}
    for kwargs, hint in [
        ({"temperature": 0}, r"set it in the mixture's Context \(Context\(temperature=\.\.\.\)"),
        ({"max_tokens": 50}, r"Context\(max_tokens=\.\.\.\)"),
        ({"tools": [tool]}, r"use bind_tools\(tools, tool_choice=\.\.\."),
        ({"tool_choice": "any"}, "use bind_tools"),
        ({"top_p": 0.1}, r"in its Context \(ChatMoA\(context=\.\.\.\)\)"),
        ({"presence_penalty": 1}, "in its Context"),
        ({"reasoning_effort": "low"}, "in its Context"),
    ]:
        (name,) = kwargs
        with pytest.raises(ConfigError, match=rf"ChatMoA takes no per-call {name!r}.*{hint}"):
            chat.invoke("Hi", **kwargs)
        with pytest.raises(ConfigError, match=f"no per-call {name!r}"):
            list(chat.bind(**kwargs).stream("Hi"))
    assert server.requests == []
    # What LangChain itself passes on (with_structured_output's tracing hint) still goes through.
    assert chat.bind(ls_structured_output_format={}).invoke("Hi").content == "the mixture's answer"


def test_a_node_whose_question_is_missing_says_so(server: FakeOpenAIServer) -> None:
    # The parent's state has None (or a number) where the question goes: one error naming the
    # key, before any model is paid (LangGraph said "'NoneType' object is not iterable").
    parent = StateGraph(QAState)
    parent.add_node("ask", moa_node(context=fake_context(server, ["p1"])))
    parent.add_edge(START, "ask")
    app = parent.compile()
    for value in (None, 42, b"bytes"):  # bytes are a sequence, of ints: not messages
        with pytest.raises(InputError, match=r"state\['question'\] is (NoneType|int|bytes): moa"):
            app.invoke({"question": value})  # type: ignore[typeddict-item]
    # A key the node was told to read and the state lacks (a typo of the key, or a step before
    # it that did not write it): named, with the keys the state has, not a bare KeyError.
    for state in (QAState, QAData):
        misnamed = StateGraph(state)
        misnamed.add_node("ask", moa_node(question="query", context=fake_context(server, ["p1"])))
        misnamed.add_edge(START, "ask")
        with pytest.raises(InputError, match=r"the state has no 'query' for moa_node\(question="):
            misnamed.compile().invoke({"question": "Why?"})
    assert server.requests == []


@dataclass
class QAData:
    question: str = ""
    answer: str = ""


class ToolCallingFake(GenericFakeChatModel):
    """An agent model that calls the MoA tool once, then answers with what it returned."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


async def test_a_tool_for_a_tool_calling_agent(server: FakeOpenAIServer) -> None:
    script(server)
    tool = moa_tool(fake_context(server, ["p1", "p2"]))
    call = {"name": tool.name, "args": {"question": "Is P = NP?"}, "id": "call-1"}
    agent_model = ToolCallingFake(
        messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content="done")])
    )
    agent = create_agent(agent_model, [tool])
    state = await agent.ainvoke({"messages": [HumanMessage("Hard question: is P = NP?")]})
    (result,) = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert result.content == "the mixture's answer"
    assert server.requests_for("p1")[0].messages[-1] == {"role": "user", "content": "Is P = NP?"}
    assert tool.invoke({"question": "again"}) == "the mixture's answer"  # sync too


async def test_a_chat_model_sync_async_streaming_and_usage(server: FakeOpenAIServer) -> None:
    script(server, "one two three four five six")
    chat = ChatMoA(context=fake_context(server, ["p1", "p2"]))

    message = chat.invoke("hello")
    assert message.content == "one two three four five six"
    assert message.usage_metadata is not None
    assert message.usage_metadata["total_tokens"] == requests_total_tokens(server.requests) > 0
    assert message.response_metadata["model_name"] == "together:agg"
    assert len(message.response_metadata["moa_layers"][0]) == 2

    assert (await chat.ainvoke("hello")).content == "one two three four five six"
    chunks = [c async for c in chat.astream("hello")]
    assert [c.content for c in chunks if c.content] == [
        "one ",
        "two ",
        "three ",
        "four ",
        "five ",
        "six",
    ]
    total: AIMessageChunk = sum(chunks[1:], chunks[0])  # type: ignore[assignment]
    assert total.content == "one two three four five six"
    assert total.usage_metadata is not None and total.usage_metadata["total_tokens"] > 0
    sync_chunks = list(chat.stream("hello"))
    assert "".join(str(c.content) for c in sync_chunks) == "one two three four five six"
    assert len([c for c in sync_chunks if c.content]) == 6
    assert [m.content for m in chat.batch(["a", "b"])] == ["one two three four five six"] * 2
    assert [m.content for m in await chat.abatch(["a", "b"])] == ["one two three four five six"] * 2


def test_the_graph_itself_works_sync(server: FakeOpenAIServer) -> None:
    script(server, "alpha beta gamma")
    ctx = fake_context(server, ["p1", "p2"], layers=3)
    assert graph.invoke({"messages": [HumanMessage("x")]}, context=ctx)["messages"][-1].content == (
        "alpha beta gamma"
    )
    tokens = [
        chunk.content
        for chunk, meta in graph.stream(
            {"messages": [HumanMessage("x")]}, context=ctx, stream_mode="messages"
        )
        if chunk.content
    ]
    assert tokens == ["alpha ", "beta ", "gamma"]
    states = graph.batch([{"messages": [HumanMessage("x")]}] * 2, context=ctx)
    assert [s["messages"][-1].content for s in states] == ["alpha beta gamma"] * 2


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            "as_text",
            [
                {"role": "user", "content": "What's the weather in Paris?"},
                {
                    "role": "assistant",
                    "content": '[called tool weather with {"city": "Paris"}]',
                },
                {"role": "user", "content": "[tool weather returned]\nSunny, 21 C"},
            ],
        ),
        ("drop", [{"role": "user", "content": "What's the weather in Paris?"}]),
    ],
)
async def test_a_react_history_reaches_the_models_as_text_turns(
    server: FakeOpenAIServer, policy: str, expected: list[dict[str, str]]
) -> None:
    script(server)
    history: list[AnyMessage] = [
        HumanMessage("What's the weather in Paris?"),
        AIMessage(
            content="", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "t1"}]
        ),
        ToolMessage(content="Sunny, 21 C", tool_call_id="t1", name="weather"),
        AIMessage(content="Draft: it is sunny."),  # the parent's own draft, before asking MoA
    ]
    ctx = fake_context(server, ["p1", "p2"], tool_history=policy)
    state = await graph.ainvoke({"messages": history}, context=ctx)
    for model in ("p1", "p2"):
        (request,) = server.requests_for(model)
        assert request.messages == expected, json.dumps(request.messages)
    (agg,) = server.requests_for("agg")
    assert agg.messages[1:] == expected  # after the aggregation prompt
    assert state["messages"][-1].content == "the mixture's answer"


async def test_a_messages_state_parent_keeps_the_answer(server: FakeOpenAIServer) -> None:
    script(server)
    parent = StateGraph(MessagesState)
    parent.add_node("moa", build_moa_graph(context=fake_context(server, ["p1"])).compile())
    parent.add_edge(START, "moa")
    state = await parent.compile().ainvoke({"messages": [HumanMessage("hi")]})
    assert [m.type for m in state["messages"]] == ["human", "ai"]
    assert state["messages"][-1].content == "the mixture's answer"


def test_an_uncompiled_graph_given_to_add_node_says_what_to_do(server: FakeOpenAIServer) -> None:
    parent = StateGraph(MessagesState)
    with pytest.raises(TypeError, match=r"give add_node build_moa_graph\(\.\.\.\)\.compile\(\)"):
        parent.add_node("moa", build_moa_graph(context=fake_context(server, ["p1"])))


class DictContext(TypedDict, total=False):
    """A parent's own context as a dict (a TypedDict schema; the LangGraph server passes dicts),
    with keys that share a name with MoA settings but mean the parent's own things."""

    user_id: str
    timeout: float
    moa: Any


async def test_a_parents_dict_context_is_not_read_as_moas_settings(
    server: FakeOpenAIServer,
) -> None:
    script(server)
    server.script("agg2", "from the parent's choice")
    own = fake_context(server, ["p1", "p2"])
    subgraph = StateGraph(MessagesState, context_schema=DictContext)
    subgraph.add_node("moa", build_moa_graph(context=own).compile(name="moa"))
    subgraph.add_edge(START, "moa")
    agent = create_agent(ChatMoA(context=own), [], context_schema=DictContext)
    parents: dict[str, Any] = {"a subgraph": subgraph.compile(), "ChatMoA in an agent": agent}
    for kind, app in parents.items():
        inputs = {"messages": [HumanMessage("hi")]}
        state = await app.ainvoke(inputs, context={"user_id": "u1", "timeout": 30})
        assert state["messages"][-1].content == "the mixture's answer", kind
        # Its moa key still carries MoA's settings.
        mine = {"user_id": "u1", "moa": fake_context(server, ["p1"], aggregator="agg2")}
        state = await app.ainvoke(inputs, context=mine)
        assert state["messages"][-1].content == "from the parent's choice", kind


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_chat_moa_in_an_agent_is_one_model_to_the_agents_config(
    server: FakeOpenAIServer, mode: str
) -> None:
    """The agent's callbacks see ChatMoA once (its usage adds up every call: the mixture's own
    calls must not be counted again, nor its answer streamed twice); the agent's step budget and
    parallelism are its own, not the mixture's."""
    for name in ("p1", "p2", "p3"):
        server.script(name, f"proposal by {name}", ttft=0.2)
    server.script("agg", "one two three", token_delay=0.002)
    agent = create_agent(ChatMoA(context=fake_context(server, ["p1", "p2", "p3"])), [])
    inputs = {"messages": [HumanMessage("hi")]}
    usage = UsageMetadataCallbackHandler()
    config: RunnableConfig = {"callbacks": [usage], "max_concurrency": 1, "recursion_limit": 3}
    if mode == "sync":
        agent.invoke(inputs, config)
        streamed = [
            chunk.text
            for _, (chunk, _) in agent.stream(inputs, stream_mode="messages", subgraphs=True)
        ]
    else:
        await agent.ainvoke(inputs, config)
        streamed = [
            event["data"]["chunk"].text
            async for event in agent.astream_events(inputs, version="v2")
            if event["event"] == "on_chat_model_stream"
        ]
    assert "".join(streamed) == "one two three"  # once, not the aggregator's tokens again
    (per_model,) = usage.usage_metadata.values()
    assert per_model["total_tokens"] == requests_total_tokens(server.requests[:4])
    assert server.max_concurrency() == 3  # the proposers side by side, despite max_concurrency=1


@pytest.mark.parametrize(
    "conversation",
    [[], [AIMessage("How can I help?")], [ToolMessage("42", tool_call_id="t1")]],
    ids=["empty", "assistant-only", "tool-result-dropped"],
)
def test_a_conversation_with_nothing_to_answer_is_refused_before_any_call(
    server: FakeOpenAIServer, conversation: list[AnyMessage]
) -> None:
    # Providers refuse an empty conversation: each proposer would fail, the error would name them.
    ctx = fake_context(server, ["p1", "p2"], tool_history="drop")
    with pytest.raises(EmptyConversationError, match="no user message"):
        ChatMoA(context=ctx).invoke(conversation)
    with pytest.raises(EmptyConversationError) as caught:
        graph.invoke({"messages": conversation}, context=ctx)
    assert server.requests == []
    # What a caller acts on, as data: every message was left out, and by which policy; a tool
    # result the "drop" policy left out is counted and named (as_text would have shown it).
    error = pickle.loads(pickle.dumps(caught.value))  # as LangGraph may hand it over
    tools = sum(isinstance(m, ToolMessage) for m in conversation)
    assert (error.dropped, error.tool_history, error.tool_results) == (
        len(conversation), "drop", tools
    )  # fmt: skip
    assert str(error) == str(caught.value)
    assert ("'as_text' would show" in str(error)) == bool(tools)


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


@pytest.mark.parametrize(
    ("conversation", "at", "part"),
    [
        ([HumanMessage([{"type": "text", "text": "What is in this picture?"}, IMAGE])], 0, 1),
        (
            [
                HumanMessage("Take a screenshot of the page."),
                AIMessage("", tool_calls=[{"name": "shot", "args": {}, "id": "t1"}]),
                ToolMessage([{"type": "image", "url": "https://x.test/s.png"}], tool_call_id="t1"),
            ],
            2,
            0,
        ),
    ],
    ids=["user-image", "tool-result-image"],
)
def test_content_the_models_cannot_see_is_refused_not_dropped(
    server: FakeOpenAIServer, conversation: list[AnyMessage], at: int, part: int
) -> None:
    # The models read text only: an answer about a picture they never saw would read as one.
    script(server)
    ctx = fake_context(server, ["p1", "p2"])
    with pytest.raises(UnsupportedContentError, match=rf"messages\[{at}\].content\[{part}\] is"):
        ChatMoA(context=ctx).invoke(conversation)
    with pytest.raises(UnsupportedContentError) as caught:
        graph.invoke({"messages": conversation}, context=ctx)
    assert server.requests == []
    error = pickle.loads(pickle.dumps(caught.value))  # as LangGraph may hand it over
    kind = conversation[at].content[part]["type"]  # type: ignore[index]
    assert (error.message, error.part, error.kind) == (at, part, kind)
    assert isinstance(error, InputError) and isinstance(error, ValueError)
    assert f"a content part of type {kind!r}" in str(error)
    # Text parts, and whatever an assistant's own content holds (reasoning, tool-use blocks),
    # are read as before; a tool result left out by tool_history="drop" is not looked at.
    text = [HumanMessage([{"type": "text", "text": "Hi"}, "there"]), AIMessage([{"type": "x"}])]
    ChatMoA(context=ctx).invoke([*text, HumanMessage("and?")])
    if isinstance(conversation[-1], ToolMessage):
        drop = fake_context(server, ["p1", "p2"], tool_history="drop")
        assert ChatMoA(context=drop).invoke(conversation).content == "the mixture's answer"
        # A tool's JSON result (LangGraph's ToolNode keeps a tool's list of "json" blocks as is)
        # is text the models can read: shown as JSON, not refused nor dropped.
        server.requests.clear()
        result = ToolMessage([{"type": "json", "json": {"temp": 21}}], tool_call_id="t1")
        ChatMoA(context=ctx).invoke([*conversation[:2], result])
        seen = server.requests_for("p1")[0].messages[-1]["content"]
        assert seen == '[tool result returned]\n{"temp": 21}'


def test_text_parts_by_the_responses_apis_names_are_text(server: FakeOpenAIServer) -> None:
    # Some clients keep a history in the OpenAI Responses API's parts (input_text for what the
    # model was told, output_text for its answers; langchain-openai reads both as text). They
    # were refused as unsupported content, and an assistant's output_text silently dropped.
    script(server)
    ctx = fake_context(server, ["p1", "p2"])
    conversation = [
        SystemMessage([{"type": "input_text", "text": "Answer in one word."}]),
        HumanMessage([{"type": "input_text", "text": "Name a prime."}]),
        AIMessage([{"type": "output_text", "text": "Seven.", "annotations": []}]),
        HumanMessage([{"type": "input_text", "text": "Another?"}, {"type": "text", "text": "!"}]),
    ]
    assert ChatMoA(context=ctx).invoke(conversation).content == "the mixture's answer"
    system, *turns = server.requests_for("p1")[0].messages
    assert "Answer in one word." in system["content"]
    assert [(m["role"], m["content"]) for m in turns] == [
        ("user", "Name a prime."),
        ("assistant", "Seven."),
        ("user", "Another?!"),
    ]
    # With tools bound the aggregator is sent the conversation as it is: as "text" parts, the
    # kind every chat API takes (OpenAI's Chat Completions refuses input_text).
    server.requests.clear()
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    ChatMoA(context=ctx).bind_tools([tool]).invoke(conversation)
    sent = server.requests_for("agg")[0].messages
    assert "input_text" not in str(sent) and "output_text" not in str(sent)
    assert {"type": "text", "text": "Name a prime."} in sent[1]["content"]
    assert "Seven." in str(sent[2]["content"])
    # What is not text under any name is still refused before any call.
    server.requests.clear()
    picture = {"type": "input_image", "image_url": "https://x.test/cat.png"}
    with pytest.raises(UnsupportedContentError, match=r"messages\[0\].content\[1\] is"):
        ChatMoA(context=ctx).invoke([HumanMessage([conversation[1].content[0], picture])])
    assert server.requests == []


@pytest.mark.parametrize("way", ["moa_node", "moa_tool"])
async def test_the_callers_step_budget_and_parallelism_bound_its_graph_not_the_mixture(
    server: FakeOpenAIServer, way: str
) -> None:
    for name in ("p1", "p2", "p3"):
        server.script(name, f"proposal by {name}", ttft=0.2)
    server.script("agg", "the mixture's answer")
    ctx = fake_context(server, ["p1", "p2", "p3"], layers=3)  # six steps of its own
    app: Any
    if way == "moa_node":
        parent = StateGraph(QAState)
        parent.add_node("ask", moa_node(context=ctx))
        parent.add_edge(START, "ask")
        app, inputs, key = parent.compile(), {"question": "q"}, "answer"
    else:
        call = {"name": "ask_mixture_of_models", "args": {"question": "q"}, "id": "call-1"}
        agent_model = ToolCallingFake(
            messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content="done")])
        )
        app = create_agent(agent_model, [moa_tool(ctx)])
        inputs, key = {"messages": [HumanMessage("q")]}, "messages"
    state = await app.ainvoke(inputs, {"recursion_limit": 5, "max_concurrency": 1})
    assert "the mixture's answer" in str(state[key])
    assert server.max_concurrency() == 3  # each layer's proposers side by side


def test_a_node_resumed_after_an_interrupt_does_not_pay_its_chat_moa_call_again(
    server: FakeOpenAIServer,
) -> None:
    # The node runs again from its start on resume; the mixture's run, saved under the parent's
    # checkpointer, answers from what it saved.
    script(server, "a draft")
    chat = ChatMoA(context=fake_context(server, ["p1", "p2"]))

    def review(state: MessagesState) -> dict[str, Any]:
        draft = chat.invoke(state["messages"])
        return {"messages": [draft]} if interrupt(draft.content) else {}

    parent = StateGraph(MessagesState)
    parent.add_node("review", review)
    parent.add_edge(START, "review")
    app = parent.compile(checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "t"}}
    assert "__interrupt__" in app.invoke({"messages": [HumanMessage("hi")]}, config)
    paid = len(server.requests)
    state = app.invoke(Command(resume=True), config)
    assert state["messages"][-1].content == "a draft"
    assert len(server.requests) == paid == 3

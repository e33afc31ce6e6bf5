"""The MoA graph over real provider clients talking HTTP to the fake server."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import fake_context, spec
from fake_openai import FakeOpenAIServer, default_reply
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, RemoveMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph

from langgraph_moa import InputError, InvalidMessagesError
from langgraph_moa.graphs import build_moa_graph, graph
from langgraph_moa.nodes.aggregate import ANSWER_TAG
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.models import settings_for
from langgraph_moa.nodes.models.cache import chat_model

QUESTION = "What are some fun things to do in SF?"


async def run(ctx: Context, question: str = QUESTION) -> dict[str, Any]:
    return await graph.ainvoke({"messages": [HumanMessage(question)]}, context=ctx)


def system_prompt(request: Any) -> str:
    return next((m["content"] for m in request.messages if m["role"] == "system"), "")


async def test_aggregator_request_holds_every_last_layer_proposal_and_the_question(
    server: FakeOpenAIServer,
) -> None:
    for name in ("p1", "p2", "p3"):
        server.script(name, f"Proposal text from {name}: Golden Gate, Alcatraz & <b>tacos</b>.")
    ctx = fake_context(server, ["p1", "p2", "p3"])
    state = await run(ctx)

    (request,) = server.requests_for("agg")
    system = system_prompt(request)
    for name in ("p1", "p2", "p3"):
        assert f"Proposal text from {name}: Golden Gate, Alcatraz & <b>tacos</b>." in system
    assert "synthesize" in system.lower() and "critically" in system.lower()
    assert request.messages[-1] == {"role": "user", "content": QUESTION}
    assert state["messages"][-1].content == default_reply("agg", request.messages)


async def test_layer_k_proposers_receive_layer_k_minus_1_responses(
    server: FakeOpenAIServer,
) -> None:
    counter = {"n": 0}

    def numbered(req: Any) -> str:
        counter["n"] += 1
        return f"answer number {counter['n']} by {req.model}"

    for name in ("a", "b"):
        server.script(name, numbered)
    state = await run(fake_context(server, ["a", "b"], layers=3))

    layer1, layer2 = state["layers"]
    layer1_texts = [p["text"] for p in layer1]
    for req in server.requests:
        if req.model == "agg":
            continue
        first_layer = any(r.messages == req.messages for r in []) or not system_prompt(req)
        if first_layer:
            assert req.messages == [{"role": "user", "content": QUESTION}]
    layer2_requests = [r for r in server.requests if r.model != "agg" and system_prompt(r)]
    assert len(layer2_requests) == 2
    for req in layer2_requests:
        for text in layer1_texts:
            assert text in system_prompt(req)
    agg_system = system_prompt(server.requests_for("agg")[0])
    for p in layer2:
        assert p["text"] in agg_system
    for p in layer1:  # the aggregator sees the last layer only
        assert p["text"] not in agg_system


async def test_proposers_of_a_layer_run_concurrently(server: FakeOpenAIServer) -> None:
    for name in ("s1", "s2", "s3", "s4"):
        server.script(name, "a short answer", ttft=0.6)
    start = time.perf_counter()
    state = await run(fake_context(server, ["s1", "s2", "s3", "s4"]))
    wall = time.perf_counter() - start

    assert server.max_concurrency() == 4
    # The slowest proposer is 0.6 s; one after another would take 2.4 s.
    assert wall < 1.8, wall
    assert all(p["latency_s"] >= 0.55 for p in state["layers"][0])


async def test_per_layer_lists_follow_proposer_order_not_completion_order(
    server: FakeOpenAIServer,
) -> None:
    names = ["slow", "medium", "fast"]
    for name, delay in zip(names, (0.4, 0.2, 0.0), strict=True):
        server.script(name, f"reply of {name}", ttft=delay)
    state = await run(fake_context(server, names, layers=3))

    assert [[p["model"] for p in layer] for layer in state["layers"]] == [
        [f"together:{n}" for n in names]
    ] * 2
    arrival = [r.model for r in server.requests if r.model != "agg"][:3]
    finished = sorted(server.requests[:3], key=lambda r: r.finished or 0)
    assert [r.model for r in finished] == ["fast", "medium", "slow"], arrival
    agg_system = system_prompt(server.requests_for("agg")[0])
    positions = [agg_system.index(f"reply of {n}") for n in names]
    assert positions == sorted(positions)


async def test_each_proposal_records_model_text_usage_latency(server: FakeOpenAIServer) -> None:
    server.script("u1", "one two three four", ttft=0.05)
    state = await run(fake_context(server, ["u1"]))
    (proposal,) = state["layers"][0]
    assert proposal["model"] == "together:u1"
    assert proposal["text"] == "one two three four"
    assert proposal["usage"] is not None and proposal["usage"]["output_tokens"] == 4
    assert proposal["usage"]["input_tokens"] > 0
    assert proposal["latency_s"] >= 0.05
    assert proposal["attempts"] == 1 and proposal["error"] is None
    assert state["answer"]["model"] == "together:agg"
    assert state["answer"]["usage"] is not None


async def test_final_answer_streams_in_chunks_before_it_is_complete(
    server: FakeOpenAIServer,
) -> None:
    words = " ".join(f"word{i}" for i in range(12))
    server.script("agg", words, token_delay=0.05)
    ctx = fake_context(server, ["p"])
    arrivals: list[tuple[float, str]] = []
    nodes_seen: set[str] = set()
    start = time.perf_counter()
    async for chunk, meta in graph.astream(
        {"messages": [HumanMessage(QUESTION)]}, context=ctx, stream_mode="messages"
    ):
        nodes_seen.add(meta["langgraph_node"])
        assert ANSWER_TAG in meta["tags"]
        assert isinstance(chunk, AIMessageChunk)
        if chunk.text:
            arrivals.append((time.perf_counter() - start, chunk.text))
    # Only the aggregator's tokens reach the messages stream (proposers are tagged nostream).
    assert nodes_seen == {"aggregate"}
    assert "".join(t for _, t in arrivals) == words
    assert len(arrivals) == 12
    # The first token arrived while the server was still producing the rest (11 x 50 ms).
    assert arrivals[-1][0] - arrivals[0][0] > 0.3


async def test_multi_turn_passes_earlier_turns_to_proposers_and_aggregator(
    server: FakeOpenAIServer,
) -> None:
    app = build_moa_graph().compile(checkpointer=InMemorySaver())
    ctx = fake_context(server, ["a", "b"])
    config: Any = {"configurable": {"thread_id": "t1"}}
    first = await app.ainvoke({"messages": [HumanMessage("first question")]}, config, context=ctx)
    first_answer = first["messages"][-1].content
    server.requests.clear()
    second = await app.ainvoke({"messages": [HumanMessage("second question")]}, config, context=ctx)

    for req in server.requests:
        convo = [m for m in req.messages if m["role"] != "system"]
        assert convo == [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": first_answer},
            {"role": "user", "content": "second question"},
        ]
    assert len(second["messages"]) == 4
    assert isinstance(second["messages"][-1], AIMessage)
    # Per-layer lists describe this turn only.
    assert len(second["layers"]) == 1 and len(second["layers"][0]) == 2


async def test_layers_may_use_different_proposers(server: FakeOpenAIServer) -> None:
    ctx = Context(
        layers=3,
        proposers=[spec(server, "unused")],
        layer_proposers=[[spec(server, "x1"), spec(server, "x2")], [spec(server, "y1")]],
        aggregator=spec(server, "agg"),
    )
    state = await run(ctx)
    assert [[p["model"] for p in layer] for layer in state["layers"]] == [
        ["together:x1", "together:x2"],
        ["together:y1"],
    ]
    assert not server.requests_for("unused")


async def test_single_layer_asks_the_aggregator_alone(server: FakeOpenAIServer) -> None:
    state = await run(fake_context(server, ["p"], layers=1))
    assert [r.model for r in server.requests] == ["agg"]
    assert state["layers"] == []
    assert not system_prompt(server.requests[0])


async def test_openai_compatible_endpoint_by_base_url(server: FakeOpenAIServer) -> None:
    ctx = Context(
        proposers=[spec(server, "vllm-model", provider="openai")],
        aggregator=spec(server, "agg", provider="openai"),
    )
    state = await run(ctx)
    assert state["layers"][0][0]["model"] == "openai:vllm-model"
    assert state["layers"][0][0]["text"]
    assert len(server.requests) == 2


async def test_together_env_vars_are_honoured(server: FakeOpenAIServer, monkeypatch: Any) -> None:
    monkeypatch.setenv("TOGETHER_API_BASE", server.base_url)
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-test-key")
    ctx = Context(proposers=["together:m1"], aggregator="together:m2")
    await run(ctx)
    assert {r.model for r in server.requests} == {"m1", "m2"}
    assert all(r.headers["authorization"] == "Bearer tg-test-key" for r in server.requests)


async def test_each_chat_model_is_built_once_and_reused(server: FakeOpenAIServer) -> None:
    ctx = fake_context(server, ["a", "a", "b"])
    before = chat_model(settings_for(ctx.proposers[0], ctx))
    await run(ctx)
    await run(ctx)
    assert chat_model(settings_for(ctx.proposers[0], ctx)) is before
    assert chat_model(settings_for(ctx.proposers[1], ctx)) is before  # same model, same settings


async def test_works_as_a_subgraph_of_a_messages_graph(server: FakeOpenAIServer) -> None:
    server.script("agg", "the synthesized answer", token_delay=0.01)
    parent = StateGraph(MessagesState, context_schema=Context)
    parent.add_node("moa", build_moa_graph().compile(name="moa"))
    parent.add_edge(START, "moa")
    app = parent.compile()
    ctx = fake_context(server, ["a", "b"])

    tokens = []
    async for _ns, (chunk, meta) in app.astream(
        {"messages": [HumanMessage(QUESTION)]},
        context=ctx,
        stream_mode="messages",
        subgraphs=True,
    ):
        if ANSWER_TAG in meta.get("tags", ()) and chunk.text:
            tokens.append(chunk.text)
    assert "".join(tokens) == "the synthesized answer"
    result = await app.ainvoke({"messages": [HumanMessage(QUESTION)]}, context=ctx)
    assert result["messages"][-1].content == "the synthesized answer"
    assert [type(m).__name__ for m in result["messages"]] == ["HumanMessage", "AIMessage"]


def test_graph_renders_propose_join_aggregate_and_context_is_described() -> None:
    mermaid = graph.get_graph().draw_mermaid()
    for edge in (
        "__start__ --> begin_turn",
        "begin_turn -.-> propose",
        "propose --> join",
        "join -.-> propose",
        "join -.-> aggregate",
        "aggregate --> __end__",
    ):
        assert edge in mermaid
    schema = Context.model_json_schema()
    for name, field in schema["properties"].items():
        assert field.get("description"), name
    # The conversation, and optionally the tools and response format of the turn and its stop
    # sequences (not required).
    input_schema = graph.get_input_jsonschema()
    assert set(input_schema["properties"]) == {"messages", "bind", "stop"}
    assert input_schema["required"] == ["messages"]


async def test_a_failed_turn_leaves_nothing_behind_for_the_next(server: FakeOpenAIServer) -> None:
    from fake_openai import Failure

    from langgraph_moa.nodes.errors import LayerFailedError

    app = build_moa_graph().compile(checkpointer=InMemorySaver())
    ctx = fake_context(server, ["a", "b"], min_proposals=2, max_attempts=1)
    config: Any = {"configurable": {"thread_id": "t-fail"}}
    server.fail("b", Failure(status=401))
    try:
        await app.ainvoke({"messages": [HumanMessage("first")]}, config, context=ctx)
    except LayerFailedError:
        pass
    else:
        raise AssertionError("the first turn should have failed")
    server.requests.clear()
    second = await app.ainvoke({"messages": [HumanMessage("second")]}, config, context=ctx)
    # Turn 1's answer from "a" must not leak into turn 2's layer or references.
    assert [p["model"] for p in second["layers"][0]] == ["together:a", "together:b"]
    agg = system_prompt(server.requests_for("agg")[0])
    assert agg.count("<reference id=") == 2


def test_messages_that_are_no_conversation_are_one_input_error(server: FakeOpenAIServer) -> None:
    # Refused as the input enters the state, before any node: LangGraph's reducer said "Must
    # specify non-null arguments for both 'left' and 'right'" to a null.
    ctx = fake_context(server, ["p1"])
    with pytest.raises(InvalidMessagesError, match=r"^messages is null: send a list of messages$"):
        graph.invoke({"messages": None}, context=ctx)
    with pytest.raises(InputError, match=r"^messages\[1\] is not a message: Unsupported message"):
        graph.invoke({"messages": ["Hi", None]}, context=ctx)
    with pytest.raises(
        InvalidMessagesError, match=r"^messages is neither a list of messages nor one"
    ):
        graph.invoke({"messages": 5}, context=ctx)
    assert server.requests == []


@pytest.mark.parametrize(
    "right",
    [
        "hi",
        ("user", "hi"),
        {"role": "user", "content": "hi"},
        [("user", "x")],
        RemoveMessage(id="2"),
        [RemoveMessage(id="1")],
        HumanMessage("edited", id="1"),
        [],
    ],
    ids=["text", "tuple", "dict", "list", "remove", "remove-list", "same-id", "nothing"],
)
def test_the_messages_reducer_takes_what_add_messages_takes(right: Any) -> None:
    # graphs/state.py's reducer only names what add_messages cannot read: the rest is its own.
    from langgraph.graph.message import add_messages

    from langgraph_moa.graphs.state import conversation

    left = [HumanMessage("a", id="1"), AIMessage("b", id="2")]

    def seen(messages: Any) -> list[tuple[str, Any, str | None]]:
        return [(m.type, m.content, m.id if m.id in ("1", "2") else None) for m in messages]

    assert seen(conversation(left, right)) == seen(add_messages(left, right))

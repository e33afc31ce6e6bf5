"""Bound tools and response formats against the aggregator's context window, whatever starts
the run (nodes/models/bind_fit.py, nodes/models/budget.py): too large, refused before any model
is paid; fitting but leaving little room, the references trimmed so the aggregator's request
fits. moa serve's /v1 answer (a 400 ``context_length_exceeded``) is tests/test_serve_request_
fields.py's."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from conftest import fake_context, spec
from fake_openai import FakeOpenAIServer, RecordedRequest, message_text
from langchain_core.messages import HumanMessage

from langgraph_moa import (
    BindOverflowError,
    ChatMoA,
    Context,
    ContextOverflowError,
    ModelSpec,
    build_moa_graph,
)
from langgraph_moa.nodes.models.bind_fit import check_bind_fits
from langgraph_moa.nodes.models.budget import (
    MESSAGE_OVERHEAD,
    REQUEST_OVERHEAD,
    TRUNCATED,
    estimate_tokens,
)

# The aggregator "together:agg" is no model the catalog knows: its window is the default 8192.
WINDOW = 8192


def tools(count: int, words: int) -> list[dict[str, Any]]:
    """``count`` function tools, each described in ``words`` words."""
    return [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": "word " * words,
                "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
            },
        }
        for i in range(count)
    ]


LARGE_TOOLS = tools(100, 100)  # some 17,000 tokens
FIELD = {"type": "string", "description": "word " * 20}
LARGE_SCHEMA = {  # some 16,000 tokens
    "title": "Report",
    "type": "object",
    "properties": {f"field_{i}": FIELD for i in range(400)},
}


def assert_refused(error: BindOverflowError, part: str) -> None:
    """What the user is told, and the data an application answers from."""
    assert isinstance(error, ContextOverflowError)  # caught as the public kind too
    assert (error.part, error.model, error.window) == (part, "together:agg", WINDOW)
    assert error.tokens > WINDOW and error.max_tokens == 512
    smaller = "fewer or shorter tools" if part == "tools" else "a smaller response_format"
    assert str(error).startswith(f"{part} takes about {error.tokens} tokens of the aggregator's")
    assert f"together:agg's context window of {WINDOW} tokens; send {smaller}" in str(error)
    copy = pickle.loads(pickle.dumps(error))  # as LangGraph may hand it over
    assert (copy.part, copy.tokens, str(copy)) == (error.part, error.tokens, str(error))


async def test_chatmoa_refuses_tools_too_large_for_the_aggregator_before_any_call(
    server: FakeOpenAIServer,
) -> None:
    # Before, the proposers were asked (and paid), then the aggregator's provider refused.
    chat = ChatMoA(context=fake_context(server, ["p1", "p2"]))
    with pytest.raises(BindOverflowError) as caught:
        await chat.bind_tools(LARGE_TOOLS).ainvoke("What is the weather in Paris?")
    assert_refused(caught.value, "tools")
    with pytest.raises(BindOverflowError):  # the sync twin runs the same first step
        chat.bind_tools(LARGE_TOOLS).invoke("What is the weather in Paris?")
    assert server.requests == []


async def test_chatmoa_refuses_a_response_format_too_large_before_any_call(
    server: FakeOpenAIServer,
) -> None:
    chat = ChatMoA(context=fake_context(server, ["p1", "p2"]))
    structured = chat.with_structured_output(LARGE_SCHEMA, method="json_schema")
    with pytest.raises(BindOverflowError) as caught:
        await structured.ainvoke("Write the report.")
    assert_refused(caught.value, "response_format")
    assert server.requests == []


@pytest.mark.parametrize("shape", ["dynamic", "unrolled"])
async def test_a_graph_run_with_a_bind_too_large_is_refused_before_any_call(
    server: FakeOpenAIServer, shape: str
) -> None:
    ctx = fake_context(server, ["p1", "p2"], layers=3)
    graph = build_moa_graph(unroll=ctx if shape == "unrolled" else None).compile()
    question = {"messages": [HumanMessage("hi")], "bind": {"tools": LARGE_TOOLS}}
    with pytest.raises(BindOverflowError) as caught:
        await graph.ainvoke(question, context=ctx)
    assert_refused(caught.value, "tools")
    assert server.requests == []
    # The larger part is named when both are bound.
    small_format = {"type": "json_object"}
    question["bind"] = {"tools": LARGE_TOOLS, "response_format": small_format}
    with pytest.raises(BindOverflowError, match=r"^tools takes"):
        await graph.ainvoke(question, context=ctx)
    assert server.requests == []


def test_a_local_aggregator_without_a_declared_window_is_not_checked() -> None:
    # Its window is known only once the model is loaded (n_ctx); declared, it is checked.
    bind = {"tools": LARGE_TOOLS}
    messages = [HumanMessage("hi")]
    local = Context(layers=1, aggregator=ModelSpec(model="local:/models/some.gguf"))
    check_bind_fits(local, messages, bind)
    declared = ModelSpec(model="local:/models/some.gguf", context_window=WINDOW)
    with pytest.raises(BindOverflowError):
        check_bind_fits(Context(layers=1, aggregator=declared), messages, bind)


def received_tokens(request: RecordedRequest) -> int:
    """What the aggregator's provider received counts against its window, by the estimate the
    context budget uses: the messages, the tools sent beside them and the answer asked for."""
    messages = sum(
        estimate_tokens(message_text(m.get("content"))) + MESSAGE_OVERHEAD for m in request.messages
    )
    bound = estimate_tokens(json.dumps(request.body["tools"], ensure_ascii=False))
    answer = request.body.get("max_completion_tokens") or request.body["max_tokens"]
    return REQUEST_OVERHEAD + messages + bound + int(answer)


async def test_tools_that_fit_leave_less_room_and_the_references_are_trimmed_for_them(
    server: FakeOpenAIServer,
) -> None:
    # The tools (~1,000 tokens) fit beside the conversation and the answer; with both proposals
    # (~600 tokens each) too, the request would not. The references are trimmed to make room,
    # instead of a request the provider refuses after the proposers were paid.
    window = 2000
    proposal = "word " * 420
    server.script("p1", proposal)
    server.script("p2", proposal)
    server.script("agg", "It is sunny in Paris.")
    ctx = Context(
        proposers=[spec(server, "p1"), spec(server, "p2")],
        aggregator=spec(server, "agg", context_window=window, max_tokens=200),
        max_attempts=1,
    )
    answer = await ChatMoA(context=ctx).bind_tools(tools(8, 60)).ainvoke("Weather in Paris?")
    assert answer.content == "It is sunny in Paris."
    (request,) = server.requests_for("agg")
    assert request.body["tools"]  # sent whole
    system = message_text(request.messages[0]["content"])
    assert system.count(TRUNCATED) == 2  # both references cut, each kept in part
    assert system.count("word") > 100
    assert received_tokens(request) <= window


async def test_the_aggregation_prompt_counts_toward_the_fit(server: FakeOpenAIServer) -> None:
    # The aggregation prompt around the references is sent too: a bind that fits only without it
    # passed the first step, then failed the aggregator's own fit after the proposers were paid.
    alone = fake_context(server, [], layers=1)
    messages = [HumanMessage("hi")]

    def fits(ctx: Context, words: int) -> bool:
        try:
            check_bind_fits(ctx, messages, {"tools": tools(10, words)})
        except BindOverflowError:
            return False
        return True

    low, high = 1, 2000  # the largest tools the aggregator alone has room for
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(alone, mid) else (low, mid - 1)
    ctx = fake_context(server, ["p1", "p2"], layers=2)
    graph = build_moa_graph().compile()
    question = {"messages": messages, "bind": {"tools": tools(10, low)}}
    with pytest.raises(BindOverflowError):
        await graph.ainvoke(question, context=ctx)
    assert server.requests == []

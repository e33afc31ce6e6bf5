"""Bound tools and response formats against the aggregator's context window: fitting but
leaving little room, the references are trimmed so the aggregator's request fits
(nodes/models/budget.py)."""

from __future__ import annotations

import json
from typing import Any

from conftest import spec
from fake_openai import FakeOpenAIServer, RecordedRequest, message_text

from langgraph_moa import ChatMoA, Context
from langgraph_moa.nodes.models.budget import (
    MESSAGE_OVERHEAD,
    REQUEST_OVERHEAD,
    TRUNCATED,
    estimate_tokens,
)


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

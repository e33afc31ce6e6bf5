"""Staircase streaming on the real embedded model (SmolLM2-135M through llama.cpp, the ``local``
extra, installed in CI): the provider continuation path (a raw prompt) and the pool of 2 loaded
copies shared by 3 proposers and the aggregator's chunk requests, which never wait for each other
while holding a copy. A deadlock there fails the test (the time bound) instead of hanging CI."""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph_moa.graphs import graph
from langgraph_moa.nodes.aggregate import ANSWER_TAG
from langgraph_moa.nodes.context import Context, ModelSpec

# Generous: the run takes ~20-60 s on 2 loaded cores; only a deadlock comes near this.
HANG_S = 600


async def test_staircase_on_the_local_model_continues_the_answer_across_chunks() -> None:
    ctx = Context(
        proposers=[
            ModelSpec(model="local:smollm2", temperature=t, seed=s)
            for s, t in ((1, 0.5), (2, 0.8), (3, 1.0))
        ],
        aggregator=ModelSpec(model="local:smollm2", temperature=0.3, seed=4),
        max_tokens=32,
        staircase=True,
        staircase_chunks=[8],
    )
    tokens: list[str] = []
    final: dict[str, Any] = {}

    async def run() -> None:
        async for mode, payload in graph.astream(
            {"messages": [("user", "Explain how a bicycle works, step by step.")]},
            context=ctx,
            stream_mode=["messages", "values"],
        ):
            if mode == "messages":
                chunk, meta = payload
                if ANSWER_TAG in meta.get("tags", ()):
                    tokens.append(chunk.text)
            else:
                final.update(payload)

    async with asyncio.timeout(HANG_S):
        await run()

    record = final["staircase"]
    requests = record["requests"]
    answer = final["messages"][-1].text
    assert answer.strip()
    # The answer streamed is every chunk request's text in order: nothing lost or repeated.
    assert "".join(tokens) == answer == "".join(r["text"] for r in requests)
    # Written in more than one request, the later ones continuing it through llama.cpp's raw
    # prompt (provider continuation), the first while a proposal was still being written.
    assert record["continuation"] == "prefill"
    assert len(requests) >= 2, requests
    assert [r["continuation"] for r in requests[1:]] == ["prefill"] * (len(requests) - 1)
    assert requests[0]["unfinished"] >= 1, requests[0]
    # Each request continued exactly the text the ones before it wrote.
    for i, request in enumerate(requests):
        assert request["answer_chars"] == sum(len(r["text"]) for r in requests[:i])

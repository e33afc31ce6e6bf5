"""Staircase streaming (Context.staircase) at the fake provider: the aggregator's requests while
the proposers still stream, the answer continued at every seam, failures, two proposer layers."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from conftest import spec
from fake_openai import Failure, FakeOpenAIServer, RecordedRequest, continuing

from langgraph_moa.graphs import graph
from langgraph_moa.nodes.aggregate import ANSWER_TAG
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.records import usage_by_model
from langgraph_moa.nodes.staircase import UNFINISHED

ANSWER = " ".join(f"answer{i}" for i in range(150)) + "."
PROPOSALS = {name: " ".join(f"{name}w{i}" for i in range(80)) for name in ("p1", "p2", "p3")}
_SO_FAR = re.compile(r"<answer_so_far>\n(.*)</answer_so_far>", re.DOTALL)


def fallback_so_far(record: RecordedRequest) -> str | None:
    """The answer so far of a fallback request (the prompt's <answer_so_far> block)."""
    found = _SO_FAR.search(str(record.messages[0].get("content")))
    return found.group(1) if found else None


def script_proposers(server: FakeOpenAIServer, names: list[str]) -> None:
    for name in names:  # 80 tokens over ~2 s: the aggregator starts long before they end
        server.script(name, PROPOSALS[name], ttft=0.05, token_delay=0.025)


def context(server: FakeOpenAIServer, provider: str, **kw: Any) -> Context:
    return Context(
        proposers=[spec(server, p) for p in PROPOSALS],
        aggregator=spec(server, "agg", provider),
        staircase=True,
        staircase_chunks=[4, 8],
        max_tokens=200,
        **kw,
    )


async def run(ctx: Context) -> tuple[str, dict[str, Any]]:
    """The streamed answer (stream_mode="messages", the answer's tag) and the final state."""
    tokens: list[str] = []
    final: dict[str, Any] = {}
    async for mode, payload in graph.astream(
        {"messages": [("user", "What is MoA?")]}, context=ctx, stream_mode=["messages", "values"]
    ):
        if mode == "messages":
            chunk, meta = payload
            if ANSWER_TAG in meta.get("tags", ()):
                tokens.append(chunk.text)
        else:
            final = payload
    return "".join(tokens), final


def system_of(record: RecordedRequest) -> str:
    return str(record.messages[0]["content"])


def assert_seamless(streamed: str, final: dict[str, Any], server: FakeOpenAIServer) -> None:
    """The streamed answer is every aggregator request's text in order, nothing lost or doubled."""
    requests = server.requests_for("agg")
    assert streamed == ANSWER
    assert final["messages"][-1].text == ANSWER
    assert "".join(r.reply or "" for r in requests) == ANSWER
    record = final["staircase"]
    assert [r["text"] for r in record["requests"]] == [r.reply for r in requests]
    assert record["aggregator_requests"] == len(requests) >= 3
    assert final["answer"]["attempts"] == len(requests)


@pytest.mark.parametrize("provider", ["vllm", "together"])
async def test_the_answer_starts_on_partial_proposals_and_continues_at_every_seam(
    server: FakeOpenAIServer, provider: str
) -> None:
    script_proposers(server, list(PROPOSALS))
    so_far = None if provider == "vllm" else fallback_so_far
    reply = continuing(ANSWER) if so_far is None else continuing(ANSWER, so_far)
    server.script("agg", reply, ttft=0.01, token_delay=0.005)
    streamed, final = await run(context(server, provider))

    requests = server.requests_for("agg")
    proposals = [r for name in PROPOSALS for r in server.requests_for(name)]
    first = requests[0]
    # The first aggregator request starts while every proposer is still streaming...
    assert all(p.finished is not None and first.started < p.finished for p in proposals)
    # ... and carries a partial proposal from each, marked unfinished.
    system = system_of(first)
    assert system.count(UNFINISHED.strip()) == len(PROPOSALS)
    for text in PROPOSALS.values():
        assert text.split()[0] in system and text.split()[-1] not in system
    # Later requests continue the answer so far: exactly the text of the requests before.
    for n, later in enumerate(requests[1:], start=1):
        before = "".join(r.reply or "" for r in requests[:n])
        if provider == "vllm":  # the provider continues a final assistant message
            assert later.messages[-1] == {"role": "assistant", "content": before}
            assert later.body["continue_final_message"] is True
        else:  # the fallback: the answer so far in the prompt, no assistant turn
            assert fallback_so_far(later) == before
            assert all(m["role"] != "assistant" for m in later.messages)
    # The last request reads the complete proposals.
    assert UNFINISHED.strip() not in system_of(requests[-1])
    assert all(text in system_of(requests[-1]) for text in PROPOSALS.values())
    assert_seamless(streamed, final, server)
    record = final["staircase"]
    assert record["continuation"] == ("prefill" if provider == "vllm" else "instruct")
    assert record["requests"][-1]["final"] and not record["requests"][0]["final"]
    assert record["requests"][0]["unfinished"] == len(PROPOSALS)
    assert record["input_tokens"] == sum(
        r["usage"]["input_tokens"] for r in record["requests"] if r["usage"]
    )
    assert [p["text"] for p in final["layers"][0]] == list(PROPOSALS.values())


async def test_a_proposer_failing_mid_stream_is_dropped_from_later_chunks(
    server: FakeOpenAIServer,
) -> None:
    script_proposers(server, list(PROPOSALS))
    server.fail("p2", Failure(drop_after_tokens=6))
    server.script("agg", continuing(ANSWER), ttft=0.01, token_delay=0.005)
    streamed, final = await run(context(server, "vllm", max_attempts=1))

    requests = server.requests_for("agg")
    assert "p2w0" in system_of(requests[0])  # read while it still streamed
    dropped_at = server.requests_for("p2")[0].finished
    assert dropped_at is not None
    after = [r for r in requests if r.started > dropped_at + 0.05]
    assert after and all("p2w0" not in system_of(r) for r in after)
    assert_seamless(streamed, final, server)
    p2 = final["layers"][0][1]
    assert p2["text"] is None and p2["error"]["kind"] in ("stream", "connection")
    assert [p["text"] for p in final["layers"][0] if p["text"]] == [
        PROPOSALS["p1"],
        PROPOSALS["p3"],
    ]


async def test_a_chunk_broken_mid_stream_is_continued_from_what_was_shown(
    server: FakeOpenAIServer,
) -> None:
    script_proposers(server, ["p1", "p2", "p3"])
    server.script("agg", continuing(ANSWER), ttft=0.01, token_delay=0.005)
    server.fail("agg", Failure(drop_after_tokens=2))  # the first chunk breaks after 2 tokens
    streamed, final = await run(context(server, "vllm", retry_base_s=0.01))

    requests = server.requests_for("agg")
    assert requests[0].chunks_sent == 2
    shown = "".join(ANSWER.split(" ")[i] + " " for i in range(2))
    assert requests[1].messages[-1] == {"role": "assistant", "content": shown}
    assert streamed == ANSWER == final["messages"][-1].text


async def test_a_chunk_refused_with_retry_after_waits_what_the_provider_asked(
    server: FakeOpenAIServer,
) -> None:
    script_proposers(server, ["p1", "p2", "p3"])
    server.script("agg", continuing(ANSWER), ttft=0.01, token_delay=0.005)
    server.fail("agg", Failure(status=429, retry_after="1"))
    # The backoff alone would retry within 10 ms.
    streamed, final = await run(context(server, "vllm", retry_base_s=0.01))

    refused, retried = server.requests_for("agg")[:2]
    assert refused.finished is not None
    assert retried.started - refused.finished >= 0.95
    assert streamed == ANSWER == final["messages"][-1].text


async def test_two_proposer_layers_stream_into_each_other(server: FakeOpenAIServer) -> None:
    script_proposers(server, ["p1", "p2"])
    layer2 = {
        "q1": " ".join(f"q1w{i}" for i in range(150)),
        "q2": " ".join(f"q2w{i}" for i in range(150)),
    }
    for name, text in layer2.items():
        server.script(name, continuing(text, fallback_so_far), ttft=0.01, token_delay=0.01)
    server.script("agg", continuing(ANSWER), ttft=0.01, token_delay=0.005)
    ctx = Context(
        layers=3,
        layer_proposers=[
            [spec(server, "p1"), spec(server, "p2")],
            [spec(server, n) for n in layer2],
        ],
        aggregator=spec(server, "agg", "vllm"),
        staircase=True,
        staircase_chunks=[4, 8],
        max_tokens=200,
    )
    streamed, final = await run(ctx)

    layer1_end = min(r.finished or 0 for n in ("p1", "p2") for r in server.requests_for(n))
    # Layer 2 and the aggregator both start while layer 1 still streams.
    assert server.requests_for("q1")[0].started < layer1_end
    assert server.requests_for("agg")[0].started < layer1_end
    assert "q1w0" in system_of(server.requests_for("agg")[0])
    assert streamed == ANSWER == final["messages"][-1].text
    assert [[p["text"] for p in layer] for layer in final["layers"]] == [
        [PROPOSALS["p1"], PROPOSALS["p2"]],
        list(layer2.values()),
    ]
    assert final["staircase"]["proposer_requests"] == sum(
        len(server.requests_for(n)) for n in layer2
    )
    # The calls of the usage report are the requests the server saw, chunk requests included.
    calls = {m: row["calls"] for m, row in usage_by_model(final["layers"], final["answer"]).items()}
    assert calls == {f"together:{n}": len(server.requests_for(n)) for n in ("p1", "p2")} | {
        f"together:{n}": len(server.requests_for(n)) for n in layer2
    } | {"vllm:agg": len(server.requests_for("agg"))}


async def test_the_answer_ends_at_a_stop_sequence_the_provider_ignored(
    server: FakeOpenAIServer,
) -> None:
    # Every chunk request of the aggregator carries the run's stop sequences (no proposer's);
    # a provider that ignores them writes past one, so the writer stops asking for more once
    # the answer holds one, and the answer kept ends before it.
    script_proposers(server, list(PROPOSALS))
    server.script("agg", continuing(ANSWER), ttft=0.01, token_delay=0.005)
    inputs = {"messages": [("user", "What is MoA?")], "stop": ["answer10"]}
    final = await graph.ainvoke(inputs, context=context(server, "vllm"))

    assert final["messages"][-1].text == ANSWER[: ANSWER.index("answer10")]
    requests = server.requests_for("agg")
    assert len(requests) == 2  # 4 tokens, then 8 reaching "answer10": no third request
    assert all(r.body["stop"] == ["answer10"] for r in requests)
    assert all("stop" not in r.body for name in PROPOSALS for r in server.requests_for(name))
    assert final["staircase"]["aggregator_requests"] == 2


def test_standard_moa_is_unchanged_and_records_no_staircase(server: FakeOpenAIServer) -> None:
    script_proposers(server, ["p1", "p2"])
    server.script("agg", ANSWER)
    ctx = Context(
        proposers=[spec(server, "p1"), spec(server, "p2")], aggregator=spec(server, "agg")
    )
    final = graph.invoke({"messages": [("user", "hi")]}, context=ctx)
    assert final["messages"][-1].text == ANSWER and final.get("staircase") is None
    assert len(server.requests_for("agg")) == 1
    assert all(not r.stream for n in ("p1", "p2") for r in server.requests_for(n))


def test_staircase_needs_streaming() -> None:
    with pytest.raises(ValueError, match="staircase needs stream"):
        Context(staircase=True, stream=False)


async def test_every_chunk_request_fits_the_window_with_the_answer_so_far(
    server: FakeOpenAIServer,
) -> None:
    for name, n in {"p1": 480, "p2": 240}.items():  # ~10 kB and ~5 kB: trimmed to fit
        text = " ".join(f"{name}-word-number-{i:05d}" for i in range(n))
        server.script(name, text, ttft=0.01, token_delay=0.002)
    answer = " ".join(f"answer-word-{i:04d}" for i in range(400))
    server.script("agg", continuing(answer, fallback_so_far), ttft=0.01, token_delay=0.001)
    window = 2048
    ctx = Context(
        proposers=[spec(server, "p1"), spec(server, "p2")],
        aggregator=spec(server, "agg", context_window=window, max_tokens=400),
        staircase=True,
        staircase_chunks=[64, 128],
    )
    streamed, final = await run(ctx)

    requests = server.requests_for("agg")
    assert len(requests) >= 3 and streamed == final["messages"][-1].text
    assert len(fallback_so_far(requests[-1]) or "") > 2000  # a long answer so far, resent
    for r in requests:  # prompt (3.5 characters a token, 4 a message, 3 a request) + answer
        prompt = 3 + sum(math.ceil(len(m["content"]) / 3.5) + 4 for m in r.messages)
        assert prompt + r.body["max_tokens"] <= window, (r.body["max_tokens"], prompt)

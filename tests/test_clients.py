"""Model clients: cheap to build, sharing HTTP clients, nothing kept per finished event loop."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest
from conftest import fake_context
from fake_openai import FakeOpenAIServer
from langchain_core.messages import HumanMessage

from langgraph_moa.graphs import graph
from langgraph_moa.nodes.context import Context, ModelSpec
from langgraph_moa.nodes.models import cache, http, settings_for
from langgraph_moa.nodes.models.cache import chat_model


def test_models_of_a_loop_share_one_http_client_and_build_fast(server: FakeOpenAIServer) -> None:
    ctx = fake_context(server, ["a"])

    async def build() -> list[Any]:
        chat_model(settings_for(ModelSpec(model="together:warm", base_url=server.base_url), ctx))
        start = time.perf_counter()
        models = [
            chat_model(
                settings_for(ModelSpec(model=f"{provider}:m{i}", base_url=server.base_url), ctx)
            )
            for i in range(5)
            for provider in ("together", "openai")
        ]
        # Each model used to build 2-4 HTTP clients, each loading the CA store (~50 ms).
        assert time.perf_counter() - start < 0.5
        return models

    models = asyncio.run(build())
    async_http = {id(m.root_async_client._client) for m in models}
    sync_http = {id(m.root_client._client) for m in models}
    assert len(async_http) == 1 and len(sync_http) == 1


def test_nothing_is_kept_for_finished_event_loops(server: FakeOpenAIServer) -> None:
    ctx = fake_context(server, ["a", "b"], quorum=1)
    # Loops other tests left running (a sync caller's own loop lives as long as the process).
    before = cache.cached_loops(), http.cached_loops()
    for _ in range(4):  # as a program calling asyncio.run per query does
        state = asyncio.run(graph.ainvoke({"messages": [HumanMessage("hi")]}, context=ctx))
        assert state["answer"]["model"] == "together:agg"
    # Only the last loop's models and HTTP client remain (they are dropped with the next loop).
    assert cache.cached_loops() <= before[0] + 1 and http.cached_loops() <= before[1] + 1


def test_an_owned_loop_sends_over_aiohttp_and_closes_its_clients(
    server: FakeOpenAIServer, capfd: pytest.CaptureFixture[str]
) -> None:
    from langgraph_moa.nodes.models.resources import RESOURCES

    ctx = fake_context(server, ["a", "b"])

    async def owned() -> tuple[Any, dict[str, Any]]:
        async with RESOURCES.owned_loop():
            client = chat_model(settings_for(ctx.aggregator, ctx)).root_async_client._client
            state = await graph.ainvoke({"messages": [HumanMessage("hi")]}, context=ctx)
            # The same models and client serve every call of the loop.
            assert chat_model(settings_for(ctx.aggregator, ctx)).root_async_client._client is client
        return client, state

    client, state = asyncio.run(owned())
    assert state["answer"]["model"] == "together:agg" and state["layers"][0][1]["text"]
    assert type(client._transport).__module__.startswith("openai._vendor.httpx_aiohttp")
    assert client.is_closed
    gc.collect()  # an aiohttp session left open is reported when collected
    assert "Unclosed" not in capfd.readouterr().err

    async def built_before() -> None:
        chat_model(settings_for(ctx.aggregator, ctx))
        async with RESOURCES.owned_loop():
            pass

    with pytest.raises(RuntimeError, match="already built"):
        asyncio.run(built_before())


def test_the_server_gets_the_body_the_sdk_would_have_sent(server: FakeOpenAIServer) -> None:
    """Messages skip the SDK's type walk (nodes/models/request_body.py): the same JSON arrives."""
    from langchain_core.messages import AIMessage, SystemMessage
    from langchain_together import ChatTogether

    ctx = fake_context(server, ["a"])
    conversation = [
        SystemMessage("Be brief."),
        HumanMessage("Name a colour."),
        AIMessage("Blue.", tool_calls=[{"name": "pick", "args": {"n": 1}, "id": "c1"}]),
        HumanMessage([{"type": "text", "text": "And another?"}]),
    ]
    settings = settings_for(ModelSpec(model="together:m", base_url=server.base_url, seed=3), ctx)

    async def both() -> None:
        ours = chat_model(settings, stream=False)
        plain = ChatTogether(
            model="m", api_key="not-needed", base_url=server.base_url, temperature=ours.temperature,
            max_tokens=ours.max_tokens, seed=3, max_retries=0,
        )  # fmt: skip
        await ours.ainvoke(conversation, extra_body={"top_k": 5})
        await plain.ainvoke(conversation, extra_body={"top_k": 5})

    asyncio.run(both())
    ours, plain = (r.body for r in server.requests_for("m"))
    assert ours["messages"][2]["tool_calls"][0]["function"]["name"] == "pick"
    assert ours["top_k"] == 5 and ours == plain


@pytest.mark.parametrize(
    ("variable", "provider"),
    [
        ("OPENAI_BASE_URL", "openai"),
        ("OPENAI_API_BASE", "openai"),
        ("TOGETHER_API_BASE", "together"),
    ],
)
def test_a_process_that_moves_the_provider_endpoint_talks_to_the_new_one(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, variable: str, provider: str
) -> None:
    # The chat models kept per event loop were keyed without these variables, which the OpenAI
    # clients read: the second run went on talking to the first endpoint.
    ctx = Context(proposers=[], layers=1, aggregator=f"{provider}:agg")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("TOGETHER_API_KEY", "test-key")
    with FakeOpenAIServer() as other:
        for endpoint in (server, other):
            monkeypatch.setenv(variable, endpoint.base_url)
            # Sync: both runs on the one background loop, whose chat models are kept.
            state = graph.invoke({"messages": [HumanMessage("hi")]}, context=ctx)
            assert state["answer"]["model"] == f"{provider}:agg"
        assert len(server.requests_for("agg")) == 1
        assert len(other.requests_for("agg")) == 1

"""Model clients: cheap to build, sharing HTTP clients, nothing kept per finished event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from conftest import fake_context
from fake_openai import FakeOpenAIServer
from langchain_core.messages import HumanMessage

from langgraph_moa.graphs import graph
from langgraph_moa.nodes.context import ModelSpec
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
    for _ in range(4):  # as a program calling asyncio.run per query does
        state = asyncio.run(graph.ainvoke({"messages": [HumanMessage("hi")]}, context=ctx))
        assert state["answer"]["model"] == "together:agg"
    # Only the last loop's models and HTTP client remain (they are dropped with the next loop).
    assert cache.cached_loops() <= 1 and http.cached_loops() <= 1

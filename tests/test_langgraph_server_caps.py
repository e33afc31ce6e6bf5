"""What one run may cost on a LangGraph server (nodes/caps.py, graphs/served.py): a client asking
for more than the server's caps is refused before any model is called, told the cap, the value
and the variable that raises it; the server's environment raises a cap; a value that is no cap
stops the server as it loads the graph."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fake_context
from fake_openai import Failure, FakeOpenAIServer
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph_dev import langgraph_dev, start_langgraph_dev
from langgraph_sdk import get_sync_client
from test_studio import studio_env

from langgraph_moa.graphs.moa import build_moa_graph
from langgraph_moa.nodes.errors import AggregatorError, CostCapError

QUESTION = {"messages": [{"role": "user", "content": "how much may I spend?"}]}
RAISED = {"MOA_MAX_PROPOSERS": "10"}  # the default cap is 8


def models(n: int) -> list[str]:
    return [f"together:p{i}" for i in range(n)]


@pytest.fixture(scope="module")
def capped(_server: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``langgraph dev`` with its models at the fake server and one cap raised."""
    with langgraph_dev(tmp_path_factory.mktemp("capped"), {**studio_env(_server), **RAISED}) as (
        url,
        _,
    ):
        yield url


def _error(out: Any) -> dict[str, Any]:
    assert isinstance(out, dict) and "__error__" in out, out
    error: dict[str, Any] = out["__error__"]
    return error


def test_a_run_past_any_cap_is_refused_before_any_call(
    capped: str, server: FakeOpenAIServer
) -> None:
    client = get_sync_client(url=capped, api_key=None)
    over = [
        ({"proposers": models(11)}, "proposers per layer is 11", 10, "MOA_MAX_PROPOSERS"),
        ({"proposers": models(2), "layers": 5}, "layers is 5", 4, "MOA_MAX_LAYERS"),
        ({"proposers": models(8), "layers": 4}, "model calls per run is 25", 24, "MOA_MAX_CALLS"),
        ({"max_attempts": 5}, "max_attempts is 5", 3, "MOA_MAX_ATTEMPTS"),
        ({"timeout": 600}, "timeout (s) is 600", 120, "MOA_MAX_TIMEOUT"),
        (
            {"aggregator": {"model": "together:agg", "max_tokens": 100000}},
            "max_tokens is 100000",
            4096,
            "MOA_MAX_TOKENS",
        ),
    ]
    for context, said, cap, variable in over:
        out = client.runs.wait(None, "moa", input=QUESTION, context=context, raise_error=False)
        error = _error(out)
        assert error["error"] == "CostCapError", error
        assert error["message"] == (
            f"{said}, above this server's cap of {cap} per request (its operator raises it "
            f"with the environment variable {variable}); ask for less"
        )
    # Studio streams its runs; the unrolled graph is held to the same caps.
    for graph in ("moa", "moa-unrolled"):
        errors = [
            part.data
            for part in client.runs.stream(
                None, graph, input=QUESTION, context={"max_tokens": 100000}, stream_mode="values"
            )
            if part.event == "error"
        ]
        assert errors[0]["error"] == "CostCapError"
        assert "max_tokens is 100000" in errors[0]["message"]
    assert server.requests == []  # refused before any call: nothing paid


def test_the_servers_environment_raises_a_cap_and_runs_within_the_caps_work(
    capped: str, server: FakeOpenAIServer
) -> None:
    # 10 proposers: past the default cap of 8, within MOA_MAX_PROPOSERS=10.
    client = get_sync_client(url=capped, api_key=None)
    context = {"proposers": models(10), "aggregator": "together:agg"}
    out = client.runs.wait(None, "moa", input=QUESTION, context=context)
    assert isinstance(out, dict) and "__error__" not in out, out
    assert [p["model"] for p in out["layers"][0]] == models(10)
    paid = sorted(r.model for r in server.requests)
    assert paid == sorted([*(f"p{i}" for i in range(10)), "agg"])


async def test_a_resumed_run_is_held_to_the_caps_too(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A thread's run resumed from its checkpoint brings a new context to a node past START.
    monkeypatch.setenv("MOA_MAX_TOKENS", "1000")
    monkeypatch.setenv("MOA_CLIENT_ENDPOINTS", server.base_url)
    graph = build_moa_graph(untrusted=True).compile(checkpointer=InMemorySaver())
    context = fake_context(server, ["p1", "p2"], max_attempts=1).model_dump(exclude_unset=True)
    config = {"configurable": {"thread_id": "resumed"}}
    server.fail("agg", Failure(status=500))
    with pytest.raises(AggregatorError):
        await graph.ainvoke({"messages": [HumanMessage("hi")]}, config, context=context)
    paid = len(server.requests)  # the two proposers and the failed aggregator
    resumed = {**context, "max_tokens": 5000}
    with pytest.raises(CostCapError, match=r"max_tokens is 5000, .* cap of 1000 .* MOA_MAX_TOKENS"):
        await graph.ainvoke(None, config, context=resumed)
    assert len(server.requests) == paid
    out = await graph.ainvoke(None, config, context=context)  # within the caps: it goes on
    assert out["messages"][-1].content.startswith("Answer from agg")


def test_a_value_that_is_no_cap_stops_the_server_as_it_loads(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError) as failed:
        start_langgraph_dev(tmp_path, {**studio_env(server), "MOA_MAX_CALLS": "lots"})
    said = "Failed to load graph 'moa' from ./graphs/served.py: MOA_MAX_CALLS='lots' is not a valid"
    assert said in str(failed.value)

"""The graph served by ``langgraph dev`` (what LangGraph Studio talks to), over real HTTP."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fake_openai import FakeOpenAIServer, continuing
from langgraph_dev import langgraph_dev as serve_repository
from langgraph_dev import start_langgraph_dev as start
from langgraph_sdk import get_sync_client
from test_staircase import fallback_so_far

from langgraph_moa.nodes.context import load_preset


def studio_env(server: FakeOpenAIServer) -> dict[str, str]:
    """A key for each provider and their base URLs at the fake server, which the server's
    clients may also name as a model's endpoint (moa batch --server's configs do)."""
    return {
        "TOGETHER_API_KEY": "studio-test-key",
        "TOGETHER_API_BASE": server.base_url,
        "OPENAI_API_KEY": "studio-test-key",
        "OPENAI_BASE_URL": server.base_url,
        "MOA_CLIENT_ENDPOINTS": server.base_url,
    }


@contextmanager
def langgraph_dev(server: FakeOpenAIServer, work: Path) -> Iterator[str]:
    """``langgraph dev`` (tests/langgraph_dev.py) run from ``work``, its models at the fake
    server; yields its URL and stops it at the end."""
    with serve_repository(work, studio_env(server)) as (url, _):
        yield url


def start_langgraph_dev(
    server: FakeOpenAIServer, work: Path, port: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """The same, started on ``port`` (a free one by default); the caller stops it."""
    return start(work, studio_env(server), port=int(port) if port else None)


@pytest.fixture(scope="module")
def studio(_server: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with langgraph_dev(_server, tmp_path_factory.mktemp("studio")) as url:
        yield url


def test_studio_renders_and_streams_the_answer(studio: str, server: FakeOpenAIServer) -> None:
    server.script("Qwen/Qwen2.5-72B-Instruct-Turbo", "studio answer in five words")
    client = get_sync_client(url=studio, api_key=None)
    (assistant,) = client.assistants.search(graph_id="moa")
    drawn = client.assistants.get_graph(assistant["assistant_id"])
    assert {"propose", "join", "aggregate"} <= {n["id"] for n in drawn["nodes"]}
    # Beside it, the default preset's mixture unrolled: a node per proposer, a join per layer.
    (unrolled,) = client.assistants.search(graph_id="moa-unrolled")
    nodes = {n["id"] for n in client.assistants.get_graph(unrolled["assistant_id"])["nodes"]}
    together = load_preset("together")
    assert nodes == {"__start__", "begin_turn", "__end__", "aggregate", "join layer 1"} | {
        f"layer 1 · {s.name.rsplit('/', 1)[-1]}" for s in together.proposers
    }

    tokens: list[str] = []
    final = None
    for part in client.runs.stream(
        None,
        assistant["assistant_id"],
        input={"messages": [{"role": "user", "content": "hello from studio"}]},
        context={"proposers": ["together:m1", "together:m2"], "layers": 2},
        stream_mode=["messages-tuple", "values"],
    ):
        if part.event == "messages":
            chunk, meta = part.data
            assert meta["langgraph_node"] == "aggregate"
            if chunk.get("content"):
                tokens.append(chunk["content"])
        elif part.event == "values":
            final = part.data
    assert "".join(tokens) == "studio answer in five words"
    assert len(tokens) == 5
    assert final is not None
    assert [p["model"] for p in final["layers"][0]] == ["together:m1", "together:m2"]
    assert {r.model for r in server.requests} == {
        "m1",
        "m2",
        "Qwen/Qwen2.5-72B-Instruct-Turbo",
    }

    # A context that changes the unrolled graph's shape: the client sees why, not "internal".
    errors = [
        part.data
        for part in client.runs.stream(
            None,
            unrolled["assistant_id"],
            input={"messages": [{"role": "user", "content": "hello"}]},
            context={"proposers": ["together:m1"], "layers": 2},
            stream_mode="values",
        )
        if part.event == "error"
    ]
    assert errors[0]["error"] == "ConfigError"
    assert "this graph is unrolled for 1 proposer layer(s)" in errors[0]["message"]


def test_studio_draws_a_staircase_run_beside_its_proposers_and_streams_it(
    studio: str, server: FakeOpenAIServer
) -> None:
    for name in ("m1", "m2"):  # ~2 s each: the answer starts long before they end
        server.script(name, " ".join(f"{name}w{i}" for i in range(80)), token_delay=0.025)
    answer = " ".join(f"a{i}" for i in range(40))
    server.script("Qwen/Qwen2.5-72B-Instruct-Turbo", continuing(answer, fallback_so_far))
    client = get_sync_client(url=studio, api_key=None)
    (assistant,) = client.assistants.search(graph_id="moa")
    drawn = client.assistants.get_graph(assistant["assistant_id"])
    edges = {(e["source"], e["target"]) for e in drawn["edges"]}
    for node in ("staircase_propose", "staircase_aggregate"):
        assert ("begin_turn", node) in edges and (node, "__end__") in edges

    first, tokens, nodes = None, [], set()
    for part in client.runs.stream(
        None,
        assistant["assistant_id"],
        input={"messages": [{"role": "user", "content": "hello from studio"}]},
        context={"proposers": ["together:m1", "together:m2"], "staircase": True},
        stream_mode="messages-tuple",
    ):
        if part.event == "messages" and part.data[0].get("content"):
            first = first or time.perf_counter()
            tokens.append(part.data[0]["content"])
            nodes.add(part.data[1]["langgraph_node"])
    assert "".join(tokens) == answer and nodes == {"staircase_aggregate"}
    ends = [r.finished for n in ("m1", "m2") for r in server.requests_for(n)]
    assert first is not None and all(e is not None and first < e for e in ends)


def test_a_failed_staircase_run_resumed_on_its_thread_asks_no_finished_proposer_again(
    studio: str, server: FakeOpenAIServer
) -> None:
    """The server resumes a thread whose staircase run failed at the aggregator (a 400) after m1
    had answered and while m2 streamed: the answer comes, m1 is not asked again, m2 (cut short
    by the failure) is."""
    from fake_openai import Failure

    aggregator = "Qwen/Qwen2.5-72B-Instruct-Turbo"
    server.script("m1", "m1 says yes")
    server.script("m2", " ".join(f"m2w{i}" for i in range(40)), ttft=0.5, token_delay=0.05)
    server.script(aggregator, continuing("resumed answer", fallback_so_far))
    server.fail(aggregator, Failure(status=400))  # asked once m2 has 16 tokens (~1.3 s)
    client = get_sync_client(url=studio, api_key=None)
    thread = client.threads.create()["thread_id"]
    context = {"proposers": ["together:m1", "together:m2"], "staircase": True}
    question = {"messages": [{"role": "user", "content": "hello"}]}
    failed = client.runs.wait(thread, "moa", input=question, context=context, raise_error=False)
    assert failed["__error__"]["error"] == "AggregatorError"  # type: ignore[index,call-overload]
    resumed = client.runs.wait(thread, "moa", input=None, context=context)
    assert resumed["messages"][-1]["content"] == "resumed answer"  # type: ignore[index,call-overload]
    assert [len(server.requests_for(n)) for n in ("m1", "m2")] == [1, 2]

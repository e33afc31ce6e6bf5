"""A hung proposer costs a bounded time by default (issue 14, item 2).

Once every other proposer of a layer has finished (with enough answers to go on), the last one
gets ``straggler_grace`` seconds, or twice the time its siblings took if that is longer; then it is
cancelled (its HTTP request closed) and recorded with kind ``"straggler"``. Real graph, real
clients, fake server over HTTP.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import fake_context, run_cli
from fake_openai import Failure, FakeOpenAIServer
from langchain_core.messages import HumanMessage

from langgraph_moa.graphs import graph
from langgraph_moa.nodes.context import Context, build_context
from langgraph_moa.nodes.errors import ConfigError
from langgraph_moa.nodes.models.quorum import active_groups


async def run(ctx: Context) -> dict[str, Any]:
    return await graph.ainvoke({"messages": [HumanMessage("hi")]}, context=ctx)


def by_model(layer: list[Any]) -> dict[str, Any]:
    return {p["model"].split(":", 1)[1]: p for p in layer}


def test_the_default_bounds_a_hung_proposer() -> None:
    # The worst a single hung proposer adds once its siblings answered: max(30 s, 2x their time),
    # instead of timeout x max_attempts + backoff (3 x 120 s + ~3 s).
    ctx = Context(proposers=["together:a", "together:b"], aggregator="together:c")
    assert ctx.straggler_grace == 30.0
    assert ctx.straggler_grace < ctx.timeout * ctx.max_attempts


async def test_a_hung_proposer_is_cut_once_its_siblings_answered(
    server: FakeOpenAIServer,
) -> None:
    server.script("fast", "fast answer", ttft=0.1)
    server.script("hung", "never", ttft=60)
    ctx = fake_context(server, ["fast", "hung"], straggler_grace=0.5)
    start = time.perf_counter()
    state = await run(ctx)
    assert time.perf_counter() - start < 20.0  # the hung proposer would take 60 s

    layer = by_model(state["layers"][0])
    assert layer["fast"]["text"] == "fast answer"
    cut = layer["hung"]
    assert cut["text"] is None and cut["error"]["kind"] == "straggler"
    assert "straggler_grace" in cut["error"]["message"]
    assert 0.55 <= cut["latency_s"] < 10.0 and cut["attempts"] == 1
    assert server.wait_idle(5.0)
    assert server.requests_for("hung")[0].disconnected  # the request was really closed
    assert state["messages"][-1].content  # the answer came from the other proposal
    assert active_groups() == 0


async def test_slow_siblings_give_a_straggler_as_long_again(server: FakeOpenAIServer) -> None:
    # Siblings took ~0.8 s: the last one may run until ~0.8 + 2 x 0.8 = 2.4 s, so a proposer
    # that queues behind them on one server (Ollama, llama.cpp) and ends at ~1.6 s is kept.
    server.script("first", "first answer", ttft=0.8)
    server.script("queued", "queued answer", ttft=1.6)
    state = await run(fake_context(server, ["first", "queued"], straggler_grace=0.1))
    assert by_model(state["layers"][0])["queued"]["text"] == "queued answer"


async def test_the_only_hope_of_a_layer_is_not_cut(server: FakeOpenAIServer) -> None:
    # The sibling failed: without the slow proposer the layer has no answer, so it is waited for.
    server.fail("broken", Failure(status=401, message="bad key"))
    server.script("slow", "slow answer", ttft=1.0)
    state = await run(fake_context(server, ["broken", "slow"], straggler_grace=0.1))
    assert by_model(state["layers"][0])["slow"]["text"] == "slow answer"


async def test_attempts_of_a_cut_straggler_are_counted(server: FakeOpenAIServer) -> None:
    server.script("fast", "fast answer", ttft=0.2)
    server.fail("flaky", Failure(status=503), Failure(status=503))
    server.script("flaky", "never", ttft=60)  # then hangs on its third attempt
    ctx = fake_context(server, ["fast", "flaky"], straggler_grace=0.5, retry_base_s=0.01)
    cut = by_model((await run(ctx))["layers"][0])["flaky"]
    assert cut["error"]["kind"] == "straggler" and cut["attempts"] == 3


async def test_none_turns_the_cut_off(server: FakeOpenAIServer) -> None:
    server.script("fast", "fast answer")
    server.script("slow", "slow answer", ttft=0.8)
    state = await run(fake_context(server, ["fast", "slow"], straggler_grace=None))
    assert by_model(state["layers"][0])["slow"]["text"] == "slow answer"


def test_straggler_grace_settings(tmp_path: Path) -> None:
    assert build_context({"straggler_grace": False}).straggler_grace is None  # TOML has no null
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="straggler_grace"):
            build_context({"straggler_grace": bad})


def test_the_cli_line_gives_attempts_and_real_time(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.script("fast", "fast answer")
    server.script("hung", "never", ttft=60)
    server.script("dead", "never", ttft=60)
    config = tmp_path / "c.toml"
    config.write_text(
        'proposers = ["together:fast", "together:hung", '
        '{ model = "together:dead", timeout = 0.3 }]\n'
        'aggregator = "together:agg"\nretry_base_s = 0.01\nstraggler_grace = 2\n'
    )
    env = {"TOGETHER_API_KEY": "k", "TOGETHER_API_BASE": server.base_url}
    result = run_cli("--config", str(config), "hi", env=env)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "proposals;" in line]
    # "dead" timed out three times (0.3 s each): the line says so, with the real time spent;
    # "hung" was cut 2 s after "dead" ended, its siblings being done.
    timed_out = r"dead timed out after 0\.3 s \(3 attempts, (0\.9|[1-9]\d*\.\d) s\)"
    assert re.search(timed_out, line), line
    assert re.search(
        r"hung cut as a straggler: still running \d+(\.\d)? s after the layer's other proposers "
        r"had finished \(straggler_grace\) \(1 attempt, \d+\.\d s\)",
        line,
    ), line


async def test_concurrent_runs_cut_only_their_own_straggler(server: FakeOpenAIServer) -> None:
    # 20 runs at once. Half have a hung proposer and a 0.3 s grace: each is cut by its own
    # layer. The other half have a slow one (0.6 s) and a 2 s grace: had the runs shared a
    # group, the first half's cut at ~0.35 s would have cut them too.
    server.script("fast", "fast answer", ttft=0.05)
    server.script("hung", "never", ttft=60)
    server.script("slow", "slow answer", ttft=0.6)
    hung_ctx = fake_context(server, ["fast", "hung"], straggler_grace=0.3)
    slow_ctx = fake_context(server, ["fast", "slow"], straggler_grace=2.0)
    states = await asyncio.gather(*(run(hung_ctx if i % 2 else slow_ctx) for i in range(20)))
    for i, state in enumerate(states):
        layer = by_model(state["layers"][0])
        if i % 2:
            assert layer["hung"]["error"]["kind"] == "straggler"
        else:
            assert layer["slow"]["text"] == "slow answer", layer["slow"]
    assert active_groups() == 0

"""The straggler quorum: a layer goes on once k of n proposals are in and the grace has passed.

Every test runs the real graph through the real provider clients against the fake server, so a
cancelled call is checked where it matters: the server saw the client close the request.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from conftest import fake_context, run_cli
from fake_openai import Failure, FakeOpenAIServer
from langchain_core.messages import HumanMessage

from langgraph_moa.graphs import graph
from langgraph_moa.nodes.context import Context, build_context
from langgraph_moa.nodes.errors import ConfigError
from langgraph_moa.nodes.models.quorum import active_groups

QUESTION = "What are some fun things to do in SF?"


async def run(ctx: Context) -> dict[str, Any]:
    return await graph.ainvoke({"messages": [HumanMessage(QUESTION)]}, context=ctx)


def script(server: FakeOpenAIServer, ttfts: dict[str, float]) -> None:
    for name, ttft in ttfts.items():
        server.script(name, f"reply of {name}", ttft=ttft)


def by_model(layer: list[Any]) -> dict[str, Any]:
    return {p["model"].split(":", 1)[1]: p for p in layer}


def aggregator_system(server: FakeOpenAIServer) -> str:
    (request,) = server.requests_for("agg")
    return next(m["content"] for m in request.messages if m["role"] == "system")


async def test_default_waits_for_every_proposer(server: FakeOpenAIServer) -> None:
    script(server, {"f1": 0.0, "f2": 0.0, "f3": 0.0, "slow": 0.6})
    state = await run(fake_context(server, ["f1", "f2", "f3", "slow"]))

    layer = by_model(state["layers"][0])
    assert all(p["text"] is not None and p["error"] is None for p in layer.values())
    assert layer["slow"]["latency_s"] >= 0.55
    assert "reply of slow" in aggregator_system(server)
    assert not any(r.disconnected for r in server.requests)


async def test_stragglers_are_cancelled_at_the_server_and_recorded(
    server: FakeOpenAIServer,
) -> None:
    script(server, {"f1": 0.0, "f2": 0.05, "f3": 0.1, "slow": 5.0})
    ctx = fake_context(server, ["f1", "f2", "f3", "slow"], quorum=3)
    start = time.perf_counter()
    state = await run(ctx)
    wall = time.perf_counter() - start

    assert wall < 3.0, wall  # the straggler would take 5 s
    layer = by_model(state["layers"][0])
    assert [layer[n]["text"] for n in ("f1", "f2", "f3")] == [f"reply of f{i}" for i in (1, 2, 3)]
    cut = layer["slow"]
    assert cut["text"] is None and cut["error"] is not None
    assert cut["error"]["kind"] == "cancelled"
    assert "3 of 4" in cut["error"]["message"]
    assert cut["latency_s"] < 3.0
    # Order in state is still the configured one, and the aggregator sees the three answers.
    assert [p["model"] for p in state["layers"][0]] == [
        f"together:{n}" for n in ("f1", "f2", "f3", "slow")
    ]
    system = aggregator_system(server)
    assert "reply of f3" in system and "reply of slow" not in system
    # Cancelled for real: the client closed the HTTP request before the answer was complete.
    assert server.wait_idle(5.0)
    (request,) = server.requests_for("slow")
    assert request.disconnected and request.chunks_sent == 0 and request.finish_reason is None
    assert not any(r.disconnected for r in server.requests if r.model != "slow")
    assert active_groups() == 0


async def test_grace_starts_at_the_kth_arrival_and_keeps_a_proposer_finishing_within_it(
    server: FakeOpenAIServer,
) -> None:
    # quorum=2: the 2nd success arrives at ~0.4 s, so the cut is at ~0.4 + 0.5 = 0.9 s.
    script(server, {"a": 0.0, "b": 0.4, "within": 0.6, "late": 5.0})
    ctx = fake_context(server, ["a", "b", "within", "late"], quorum=2, quorum_grace=0.5)
    state = await run(ctx)

    layer = by_model(state["layers"][0])
    assert layer["within"]["text"] == "reply of within"  # arrived inside the grace period
    assert layer["late"]["error"] is not None and layer["late"]["error"]["kind"] == "cancelled"
    # Cut after the 2nd arrival + grace (~0.9 s), not after the 1st one + grace (~0.5 s).
    assert 0.8 <= layer["late"]["latency_s"] < 3.0, layer["late"]["latency_s"]
    assert "0.5 s grace" in layer["late"]["error"]["message"]
    assert server.wait_idle(5.0)
    assert server.requests_for("late")[0].disconnected
    assert not server.requests_for("within")[0].disconnected


async def test_failures_do_not_count_toward_the_quorum(server: FakeOpenAIServer) -> None:
    script(server, {"broken": 0.0, "ok": 0.0, "second": 0.5, "slow": 5.0})
    server.fail("broken", Failure(status=400, message="bad request"))
    ctx = fake_context(server, ["broken", "ok", "second", "slow"], quorum=2)
    state = await run(ctx)

    layer = by_model(state["layers"][0])
    assert layer["broken"]["error"] is not None and layer["broken"]["error"]["kind"] == "client"
    # The failure and "ok" made two finished calls, but only one success: "second" is waited for.
    assert layer["second"]["text"] == "reply of second"
    assert layer["slow"]["error"] is not None and layer["slow"]["error"]["kind"] == "cancelled"


async def test_every_layer_has_its_own_quorum(server: FakeOpenAIServer) -> None:
    script(server, {"f1": 0.0, "f2": 0.0, "slow": 5.0})
    ctx = fake_context(server, ["f1", "f2", "slow"], quorum=2, layers=3)
    start = time.perf_counter()
    state = await run(ctx)

    assert time.perf_counter() - start < 4.0
    for layer in state["layers"]:
        kinds = {p["model"]: p["error"]["kind"] if p["error"] else None for p in layer}
        assert kinds == {"together:f1": None, "together:f2": None, "together:slow": "cancelled"}
    assert server.wait_idle(5.0)
    assert [r.disconnected for r in server.requests_for("slow")] == [True, True]
    assert active_groups() == 0


async def test_concurrent_runs_do_not_share_a_quorum(server: FakeOpenAIServer) -> None:
    # Run A's fast answers must not cut run B's proposers (and the reverse).
    script(server, {"fa": 0.0, "sa": 5.0, "fb": 0.3, "mb": 0.6})
    ctx_a = fake_context(server, ["fa", "sa"], quorum=1)
    ctx_b = fake_context(server, ["fb", "mb"])  # no quorum: waits for both
    state_a, state_b = await asyncio.gather(run(ctx_a), run(ctx_b))

    assert by_model(state_a["layers"][0])["sa"]["error"]["kind"] == "cancelled"
    assert all(p["text"] is not None for p in state_b["layers"][0])


async def test_cancelling_the_run_is_not_mistaken_for_a_quorum_cut(
    server: FakeOpenAIServer,
) -> None:
    script(server, {"fast": 0.0, "hang1": 5.0, "hang2": 5.0})
    ctx = fake_context(server, ["fast", "hang1", "hang2"], quorum=2)
    task = asyncio.ensure_future(run(ctx))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert active_groups() == 0
    assert server.wait_idle(5.0)
    assert all(r.disconnected for r in server.requests if r.model.startswith("hang"))


def test_quorum_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="quorum"):
        build_context({"quorum": 1, "min_proposals": 2})
    with pytest.raises(ConfigError, match="quorum_grace"):
        build_context({"quorum": 2, "quorum_grace": -1})
    ctx = build_context({"quorum": 3, "quorum_grace": 0.25})
    assert (ctx.quorum, ctx.quorum_grace) == (3, 0.25)
    assert Context().quorum is None  # off by default


def test_cli_takes_quorum_per_run_and_from_a_config_file(
    server: FakeOpenAIServer, tmp_path: Any
) -> None:
    script(server, {"f1": 0.0, "f2": 0.0, "slow": 5.0})
    config = tmp_path / "moa.toml"
    config.write_text(
        'proposers = ["together:f1", "together:f2", "together:slow"]\n'
        'aggregator = "together:agg"\n'
        "quorum = 1\n",
        encoding="utf-8",
    )
    env = {"TOGETHER_API_BASE": server.base_url, "TOGETHER_API_KEY": "k"}
    done = run_cli("--config", str(config), "--quorum", "2", "--json", "hello", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    kinds = [p["error"]["kind"] if p["error"] else None for p in report["layers"][0]]
    assert kinds == [None, None, "cancelled"]  # --quorum 2 overrode the file's quorum = 1
    assert report["layers"][0][2]["latency_s"] < 3.0

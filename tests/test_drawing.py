"""The graph as Studio draws it; what `make run` and `make studio` install."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
from conftest import ROOT, fake_context, spec
from fake_openai import FakeOpenAIServer
from langchain_core.messages import HumanMessage
from langgraph.graph import START, MessagesState, StateGraph

from langgraph_moa.graphs import build_moa_graph, graph
from langgraph_moa.graphs.unrolled import join_node_name, proposer_node_names
from langgraph_moa.nodes.errors import ConfigError


def drawn(compiled: Any) -> tuple[set[str], set[tuple[str, str]]]:
    g = compiled.get_graph()
    return set(g.nodes), {(e.source, e.target) for e in g.edges}


def test_the_dynamic_graph_draws_three_nodes_and_a_loop() -> None:
    nodes, edges = drawn(graph)
    assert {"begin_turn", "propose", "join", "aggregate"} <= nodes
    assert ("__start__", "begin_turn") in edges
    assert {("begin_turn", "propose"), ("propose", "join"), ("join", "propose")} <= edges
    assert {("join", "aggregate"), ("aggregate", "__end__")} <= edges


def test_a_staircase_run_is_drawn_as_proposers_beside_the_aggregator() -> None:
    """Staircase streaming (nodes/staircase.py): the proposers and the aggregator, each its own
    node, side by side between the turn's first step and END (one superstep), in Studio's drawing
    and in Mermaid's, and inside a parent graph (``xray``)."""
    nodes, edges = drawn(graph)
    stairs = {"staircase_propose", "staircase_aggregate"}
    assert nodes == {"__start__", "begin_turn", "propose", "join", "aggregate", "__end__"} | stairs
    for name in stairs:
        assert ("begin_turn", name) in edges and (name, "__end__") in edges
    assert not {(a, b) for a, b in edges if {a, b} <= stairs}  # neither waits for the other
    mermaid = graph.get_graph().draw_mermaid()
    assert "begin_turn -.-> staircase_propose;" in mermaid
    assert "begin_turn -.-> staircase_aggregate;" in mermaid

    parent = StateGraph(MessagesState)
    parent.add_node("moa", build_moa_graph().compile())
    parent.add_edge(START, "moa")
    xray = {n for n in parent.compile().get_graph(xray=1).nodes}
    assert {"moa:staircase_propose", "moa:staircase_aggregate"} <= xray


def test_the_unrolled_staircase_draws_every_proposer_beside_the_aggregator(
    server: FakeOpenAIServer,
) -> None:
    ctx = fake_context(
        server, [], layers=3, layer_proposers=[[spec(server, "a"), spec(server, "b")],
        [spec(server, "c")]], staircase=True,
    )  # fmt: skip
    nodes, edges = drawn(build_moa_graph(unroll=ctx).compile())
    columns = ["layer 1 · a", "layer 1 · b", "layer 2 · c"]
    assert nodes == {"__start__", "begin_turn", "__end__", "aggregate", *columns}  # no join
    for name in [*columns, "aggregate"]:
        assert ("begin_turn", name) in edges and (name, "__end__") in edges
    # It runs what it draws: a run that is not staircase is refused.
    with pytest.raises(ConfigError, match="unrolled for staircase MoA"):
        build_moa_graph(unroll=ctx).compile().invoke(
            {"messages": [HumanMessage("hi")]},
            context=ctx.model_copy(update={"staircase": False}),
        )


def test_the_unrolled_graph_draws_each_proposer_of_each_layer(server: FakeOpenAIServer) -> None:
    ctx = fake_context(server, ["together-a", "b", "b"], layers=3)
    nodes, edges = drawn(build_moa_graph(unroll=ctx).compile())
    names = proposer_node_names(ctx)
    assert names == [
        ["layer 1 · together-a", "layer 1 · b", "layer 1 · b #2"],
        ["layer 2 · together-a", "layer 2 · b", "layer 2 · b #2"],
    ]
    assert nodes == {"__start__", "begin_turn", "__end__", "aggregate", *names[0], *names[1]} | {
        join_node_name(1),
        join_node_name(2),
    }
    for name in names[0]:
        assert ("begin_turn", name) in edges and (name, join_node_name(1)) in edges
    for name in names[1]:
        assert (join_node_name(1), name) in edges and (name, join_node_name(2)) in edges
    assert (join_node_name(2), "aggregate") in edges and ("aggregate", "__end__") in edges


async def test_both_graphs_send_the_aggregator_the_same_request(server: FakeOpenAIServer) -> None:
    for name in ("p1", "p2", "p3"):
        server.script(name, lambda req: f"{req.model} saw {len(req.messages)} messages")
    ctx = fake_context(server, ["p1", "p2", "p3"], layers=3)
    question = {"messages": [HumanMessage("Why is the sky blue?")]}

    dynamic = await graph.ainvoke(question, context=ctx)
    (dynamic_request,) = server.requests_for("agg")
    server.reset()
    for name in ("p1", "p2", "p3"):
        server.script(name, lambda req: f"{req.model} saw {len(req.messages)} messages")
    unrolled = await build_moa_graph(unroll=ctx).compile().ainvoke(question)
    (unrolled_request,) = server.requests_for("agg")

    assert unrolled_request.messages == dynamic_request.messages
    assert "p3 saw 2 messages" in unrolled_request.messages[0]["content"]  # layer 2's answers
    assert unrolled["messages"][-1].content == dynamic["messages"][-1].content
    assert unrolled["layers"] == [
        [{**p, "latency_s": q["latency_s"]} for p, q in zip(lay, ulay, strict=True)]
        for lay, ulay in zip(dynamic["layers"], unrolled["layers"], strict=True)
    ]


async def test_the_unrolled_graph_refuses_a_context_of_another_shape(
    server: FakeOpenAIServer,
) -> None:
    unrolled = build_moa_graph(unroll=fake_context(server, ["p1", "p2"])).compile()
    with pytest.raises(ConfigError, match="not the layers or the proposer models"):
        await unrolled.ainvoke(
            {"messages": [HumanMessage("hi")]}, context=fake_context(server, ["p1"])
        )
    # The same shape with other settings is fine.
    state = await unrolled.ainvoke(
        {"messages": [HumanMessage("hi")]},
        context=fake_context(server, ["p1", "p2"], temperature=0),
    )
    assert [p["model"] for p in state["layers"][0]] == ["together:p1", "together:p2"]
    assert server.requests_for("p1")[0].body["temperature"] == 0


def _make_run_plan(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "TOGETHER_API_KEY"}
    done = subprocess.run(
        ["make", "-n", "run"], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_run_builds_the_local_model_only_without_a_key() -> None:
    without = _make_run_plan()
    assert "--extra local" in without and "C/C++ compiler" in without
    with_key = _make_run_plan(TOGETHER_API_KEY="set")
    sync = next(line for line in with_key.splitlines() if " sync " in line)
    assert "--extra local" not in sync and "--compile-bytecode" in sync


def test_make_studio_compiles_nothing_with_a_key() -> None:
    clean = {k: v for k, v in os.environ.items() if k != "TOGETHER_API_KEY"}
    done = subprocess.run(
        ["make", "-n", "studio"],
        cwd=ROOT,
        env={**clean, "TOGETHER_API_KEY": "set"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    sync = next(line for line in done.stdout.splitlines() if " sync " in line)
    assert "--extra local" not in sync and "--group studio" in sync and "--all-extras" not in sync
    assert "langgraph dev" in done.stdout

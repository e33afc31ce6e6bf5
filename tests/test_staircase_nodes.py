"""Staircase streaming as nodes of one superstep (nodes/staircase.py): every proposer and the
aggregator side by side, run every way LangGraph runs a graph: async and sync, streamed with
``stream_mode="messages"``, one task at a time (``max_concurrency=1``), inside a parent graph.

A node of the step may start only after others ended (LangGraph runs at most ``max_concurrency``
tasks at once), so each case checks the run did not wait on a node that could not run, wrote the
answer while the proposals still streamed, and paid for every proposer once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from functools import partial
from typing import Any

import pytest
from conftest import spec
from fake_openai import FakeOpenAIServer, continuing
from langgraph.graph import START, MessagesState, StateGraph

from langgraph_moa.graphs import build_moa_graph, graph
from langgraph_moa.nodes.aggregate import ANSWER_TAG
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.staircase import active_runs

ANSWER = " ".join(f"answer{i}" for i in range(60)) + "."
LAYER1 = {n: " ".join(f"{n}w{i}" for i in range(40)) for n in ("p1", "p2", "p3")}
LAYER2 = {n: " ".join(f"{n}w{i}" for i in range(40)) for n in ("q1", "q2")}
QUESTION = {"messages": [("user", "What is MoA?")]}


def script(server: FakeOpenAIServer) -> None:
    for name, text in LAYER1.items():  # ~1.6 s each: the answer starts long before they end
        server.script(name, text, ttft=0.05, token_delay=0.04)
    for name, text in LAYER2.items():
        server.script(name, continuing(text), ttft=0.01, token_delay=0.005)
    server.script("agg", continuing(ANSWER), ttft=0.01, token_delay=0.002)


def context(server: FakeOpenAIServer, *, layers: int = 2) -> Context:
    layer1 = [spec(server, n) for n in LAYER1]
    return Context(
        layers=layers,
        layer_proposers=[layer1, [spec(server, n, "vllm") for n in LAYER2]][: layers - 1],
        aggregator=spec(server, "agg", "vllm"),
        staircase=True,
        staircase_chunks=[4, 8],
        max_tokens=200,
    )


def parent_of(moa: Any) -> Any:
    parent = StateGraph(MessagesState)
    parent.add_node("moa", moa)
    parent.add_edge(START, "moa")
    return parent.compile()


Items = list[tuple[Any, dict[str, Any]]]


async def run(mode: str, ctx: Context) -> tuple[Items | None, dict[str, Any]]:
    """The answer's ``stream_mode="messages"`` items (None when not streamed), the final state."""
    one = {"max_concurrency": 1}
    if mode == "astream":
        items: Items = []
        final: dict[str, Any] = {}
        async for kind, payload in graph.astream(
            QUESTION, context=ctx, stream_mode=["messages", "values"]
        ):
            if kind == "messages":
                items.append(payload)
            else:
                final = payload
        return items, final
    if mode == "astream, max_concurrency=1":
        items = [p async for p in graph.astream(QUESTION, one, context=ctx, stream_mode="messages")]
        return items, {}
    if mode == "stream (sync)":
        return list(graph.stream(QUESTION, context=ctx, stream_mode="messages")), {}
    if mode == "stream (sync), max_concurrency=2":
        # The lowest a sync stream allows: LangGraph's stream waiter takes a worker (below).
        two = {"max_concurrency": 2}
        return list(graph.stream(QUESTION, two, context=ctx, stream_mode="messages")), {}
    if mode in ("invoke (sync), max_concurrency=1", "2 layers, invoke (sync), max_concurrency=1"):
        return None, await asyncio.to_thread(lambda: graph.invoke(QUESTION, one, context=ctx))
    if mode == "unrolled, invoke (sync), max_concurrency=1":
        unrolled = build_moa_graph(unroll=ctx).compile()
        return None, await asyncio.to_thread(unrolled.invoke, QUESTION, one)
    if mode == "subgraph, invoke (sync), max_concurrency=1":
        parent = parent_of(build_moa_graph(ctx).compile())
        return None, await asyncio.to_thread(parent.invoke, QUESTION, one)
    assert mode == "subgraph, astream, max_concurrency=1"
    parent = parent_of(build_moa_graph(ctx).compile())
    items = [
        payload
        async for _, payload in parent.astream(
            QUESTION, one, stream_mode="messages", subgraphs=True
        )
    ]
    return items, {}


MODES = [
    "astream",
    "astream, max_concurrency=1",
    "stream (sync)",
    "stream (sync), max_concurrency=2",
    "invoke (sync), max_concurrency=1",
    "2 layers, invoke (sync), max_concurrency=1",
    "unrolled, invoke (sync), max_concurrency=1",
    "subgraph, invoke (sync), max_concurrency=1",
    "subgraph, astream, max_concurrency=1",
]


# A deadlocked sync run blocks threads nothing can stop: end the whole process, with its stacks.
@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("mode", MODES)
async def test_the_answer_streams_while_the_proposals_do_however_the_graph_runs(
    server: FakeOpenAIServer, mode: str
) -> None:
    script(server)
    ctx = context(server, layers=3 if mode.startswith("2 layers") else 2)
    items, final = await run(mode, ctx)

    first = server.requests_for("agg")[0]
    # Every proposer paid once, whichever node started its call, and the answer begun while
    # every layer-1 proposer still streamed.
    assert {n: len(server.requests_for(n)) for n in LAYER1} == dict.fromkeys(LAYER1, 1)
    assert all(first.started < (r.finished or 0) for n in LAYER1 for r in server.requests_for(n))
    if items is not None:  # the answer's tokens, from the aggregator's node, tagged as ever
        answer = [(c, m) for c, m in items if m["langgraph_node"] == "staircase_aggregate"]
        assert "".join(c.text for c, _ in answer) == ANSWER
        assert {tuple(m["tags"]) for _, m in answer} == {(ANSWER_TAG,)}
        assert not [c.text for c, m in items if m["langgraph_node"] != "staircase_aggregate"]
    if final:
        assert final["messages"][-1].text == ANSWER
    if "staircase" in final:  # (a parent graph keeps only its own state: messages)
        assert len(final["staircase"]["requests"]) == len(server.requests_for("agg")) > 2
        texts = [[p["text"] for p in layer] for layer in final["layers"]]
        assert texts == [list(LAYER1.values()), list(LAYER2.values())][: ctx.layers - 1]
    assert active_runs() == 0


async def test_a_failing_aggregator_ends_every_node_of_the_step(server: FakeOpenAIServer) -> None:
    """The aggregator fails for good: the run ends at once (its proposers' calls closed), with
    the aggregator's error, sync or async, and leaves nothing behind."""
    from fake_openai import Failure

    from langgraph_moa.nodes.errors import AggregatorError

    def invoke(ctx: Context) -> Any:
        return graph.invoke(QUESTION, {"max_concurrency": 1}, context=ctx)

    for sync in (False, True):
        server.reset()
        for name, text in LAYER1.items():  # ~4 s each
            server.script(name, text, ttft=0.05, token_delay=0.1)
        server.fail("agg", Failure(status=400))
        ctx = context(server)
        with pytest.raises(AggregatorError, match="aggregator"):
            if sync:
                await asyncio.to_thread(invoke, ctx)
            else:
                await graph.ainvoke(QUESTION, context=ctx)
        await asyncio.sleep(0.5)
        assert server.in_flight() == 0
        assert all(r.disconnected for n in LAYER1 for r in server.requests_for(n))
        assert active_runs() == 0


def test_langgraph_sync_stream_cannot_run_one_task_at_a_time() -> None:
    """Why no sync ``stream`` case above runs with ``max_concurrency=1``: LangGraph's sync stream
    submits its stream waiter to the step's thread pool, whose size is ``max_concurrency``; with
    one worker the waiter takes it and no node ever runs. This hangs for a one-node graph too
    (LangGraph 1.2.22). When this test fails, LangGraph has fixed it: add the case above."""
    code = textwrap.dedent(
        """
        from langgraph.graph import START, MessagesState, StateGraph
        g = StateGraph(MessagesState)
        g.add_node("a", lambda s: {"messages": [("ai", "x")]})
        g.add_edge(START, "a")
        c = g.compile()
        print("ready", flush=True)
        list(c.stream({"messages": []}, {"max_concurrency": 1}, stream_mode="messages"))
        print("done", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=5)  # a one-node graph streams in milliseconds
    finally:
        proc.kill()
        proc.wait()


# A resumed run waits on nodes that may never start: end the whole process, with its stacks.
@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("between", [False, True], ids=["resumed at once", "after another failure"])
@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_resumed_step_asks_no_finished_proposer_again_and_leaves_no_run(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, sync: bool, between: bool
) -> None:
    """The aggregator fails for good (a 400) after p1 finished and while p2 and p3 stream; the
    thread is resumed from its checkpoint (``invoke(None, config)``, as a LangGraph server
    resumes a thread's run): the answer streams from the saved p1 and the asked-again p2, p3,
    p1 is not asked again, and no run is left. ``between``: another thread's staircase run
    failed in the meantime (and, one ended run kept here, pushed the first one out)."""
    from fake_openai import Failure
    from langgraph.checkpoint.memory import InMemorySaver

    from langgraph_moa.nodes import staircase
    from langgraph_moa.nodes.errors import AggregatorError

    monkeypatch.setattr(staircase, "_ENDED_KEPT", 1)
    saved = build_moa_graph().compile(checkpointer=InMemorySaver())
    ctx = context(server)

    async def run(thread: str, inputs: Any) -> list[Any]:
        config: Any = {"configurable": {"thread_id": thread}}
        if sync:
            stream = partial(saved.stream, inputs, config, context=ctx, stream_mode="messages")
            return await asyncio.to_thread(lambda: list(stream()))
        return [p async for p in saved.astream(inputs, config, context=ctx, stream_mode="messages")]

    def fail_next_run() -> None:
        server.reset()
        server.script("p1", LAYER1["p1"], ttft=0.01, token_delay=0.002)  # done before agg asks
        for name in ("p2", "p3"):  # still streaming when the aggregator fails (~0.4 s in)
            server.script(name, LAYER1[name], ttft=0.3, token_delay=0.02)
        server.script("agg", continuing(ANSWER), ttft=0.01, token_delay=0.002)
        server.fail("agg", Failure(status=400))

    fail_next_run()
    with pytest.raises(AggregatorError):
        await run("a", QUESTION)
    if between:
        fail_next_run()
        with pytest.raises(AggregatorError):
            await run("b", QUESTION)
    asked = {n: len(server.requests_for(n)) for n in LAYER1}

    items = await run("a", None)

    again = {n: len(server.requests_for(n)) - asked[n] for n in LAYER1}
    assert again == {"p1": 0, "p2": 1, "p3": 1}
    answer = [c.text for c, m in items if m["langgraph_node"] == "staircase_aggregate"]
    assert "".join(answer) == ANSWER
    state = (await saved.aget_state({"configurable": {"thread_id": "a"}})).values
    assert state["messages"][-1].text == ANSWER
    assert [p["text"] for p in state["layers"][0]] == list(LAYER1.values())
    assert active_runs() == 0
    await asyncio.sleep(0.2)
    assert server.in_flight() == 0


async def test_a_resumed_step_whose_layer_failed_fails_again_without_asking_anyone(
    server: FakeOpenAIServer,
) -> None:
    """Every proposer refused (a 400: not retried), so the layer failed: the proposers' nodes
    returned their failures, which LangGraph saved. A resume runs the aggregator's node alone,
    which fails the same way (as a standard run's join does) and pays nothing."""
    from fake_openai import Failure
    from langgraph.checkpoint.memory import InMemorySaver

    from langgraph_moa.nodes.errors import LayerFailedError

    saved = build_moa_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}
    for name in LAYER1:
        server.fail(name, Failure(status=400))
    ctx = context(server)
    with pytest.raises(LayerFailedError):
        await saved.ainvoke(QUESTION, config, context=ctx)
    asked = len(server.requests)
    with pytest.raises(LayerFailedError):
        await saved.ainvoke(None, config, context=ctx)
    assert len(server.requests) == asked
    assert active_runs() == 0


# LangGraph cancels the step's nodes it had not started: their coroutines were never awaited.
@pytest.mark.filterwarnings("ignore:coroutine 'arun_with_retry' was never awaited")
async def test_a_step_resumed_after_its_answer_was_saved_asks_nothing(
    server: FakeOpenAIServer,
) -> None:
    """The step fails after the aggregator's node saved the answer (one task at a time, the
    aggregator first: a callback fails the first proposer node started after it, as Ctrl-C or
    a dying worker could). A resume runs the proposer nodes alone: they ask nothing, the saved
    answer stands, and no run is left."""
    from langchain_core.callbacks import BaseCallbackHandler
    from langgraph.checkpoint.memory import InMemorySaver

    class FailFirstProposerNode(BaseCallbackHandler):
        raise_error = True

        def on_chain_start(self, serialized: Any, inputs: Any, **kw: Any) -> None:
            if (kw.get("metadata") or {}).get("langgraph_node") == "staircase_propose":
                raise RuntimeError("the step is cut")

    script(server)
    saved = build_moa_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}, "max_concurrency": 1}
    ctx = context(server)
    with pytest.raises(RuntimeError, match="the step is cut"):
        await saved.ainvoke(
            QUESTION, {**config, "callbacks": [FailFirstProposerNode()]}, context=ctx
        )
    asked = len(server.requests)
    final = await saved.ainvoke(None, config, context=ctx)
    assert final["messages"][-1].text == ANSWER
    assert len(server.requests) == asked
    assert active_runs() == 0

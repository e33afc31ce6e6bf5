"""One path for every node (graphs/adapt.py), and the sync face of the graphs.

Every node and router of every graph enters through ``adapt``: the run's context is resolved
once per node call, each node works sync and async, and a sync caller who gives up (Ctrl-C)
leaves no provider request open.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import ROOT, fake_context, spec
from fake_openai import FakeOpenAIServer
from langchain_core.messages import HumanMessage
from langchain_core.runnables import Runnable
from langgraph.graph import START, MessagesState, StateGraph

from langgraph_moa import (
    ChatMoA,
    ConfigError,
    build_moa_graph,
    cancel_on_interrupt,
    graph,
    moa_node,
)
from langgraph_moa.graphs import replay_graph
from langgraph_moa.nodes import context as context_module
from langgraph_moa.nodes.models.sync_runs import CANCELLED


@dataclass
class ParentContext:
    """A parent graph's own context, carrying MoA's settings as a plain dict in ``moa``."""

    moa: dict[str, Any]


def test_the_context_is_resolved_once_per_node_call(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[dict[str, Any]] = []
    real = context_module.build_context

    def counting(data: dict[str, Any], *args: Any) -> Any:
        built.append(data)
        return real(data, *args)

    monkeypatch.setattr(context_module, "build_context", counting)
    parent = StateGraph(MessagesState, context_schema=ParentContext)
    parent.add_node("moa", build_moa_graph().compile())
    parent.add_edge(START, "moa")
    moa = fake_context(server, ["a", "b"]).model_dump(mode="json")
    state = parent.compile().invoke(
        {"messages": [HumanMessage("hi")]}, context=ParentContext(moa=moa)
    )
    assert state["messages"][-1].content == server.requests[-1].reply
    # begin_turn, the router after it, two proposers, join, the router after join, aggregate:
    # seven node calls, seven resolutions of the dict (each node resolving it again made 14).
    assert len(built) == 7


def test_the_replay_graph_runs_sync_and_calls_only_the_aggregator(
    server: FakeOpenAIServer,
) -> None:
    server.script("agg", "the re-aggregated answer")
    ctx = fake_context(server, [], layers=2, layer_proposers=[["together:gone"]])
    proposal = {
        "layer": 1,
        "index": 0,
        "model": "together:gone",
        "text": "a stored proposal",
        "usage": None,
        "latency_s": 1.0,
        "attempts": 1,
        "error": None,
    }
    state = replay_graph.invoke(
        {
            "messages": [HumanMessage("the question")],
            "layers": [[proposal]],
            "references": ["a stored proposal"],
        },
        context=ctx,
    )
    assert state["messages"][-1].content == "the re-aggregated answer"
    (request,) = server.requests
    assert request.model == "agg" and "a stored proposal" in request.messages[0]["content"]


def test_build_moa_graph_refuses_a_context_that_contradicts_unroll(
    server: FakeOpenAIServer,
) -> None:
    ctx = fake_context(server, ["a", "b"])
    other = fake_context(server, ["c"])
    with pytest.raises(ConfigError, match="context and unroll name different settings"):
        build_moa_graph(other, unroll=ctx)
    build_moa_graph(ctx, unroll=ctx)  # the same settings twice: nothing contradicts
    build_moa_graph(unroll=ctx)


def test_moa_node_is_a_public_runnable(server: FakeOpenAIServer) -> None:
    node = moa_node(context=fake_context(server, ["a"]))
    assert isinstance(node, Runnable)
    assert type(node).__module__.startswith("langchain_core."), type(node)
    assert node.invoke({"question": "hi"})["answer"]


def _interrupt_after(seconds: float) -> threading.Timer:
    # A real SIGINT (what Ctrl-C sends): it wakes a thread blocked on a lock, as Ctrl-C does.
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.parametrize("hung", ["proposer", "aggregator"])
def test_a_sync_caller_that_gives_up_leaves_no_request_open(
    server: FakeOpenAIServer, hung: str
) -> None:
    """Ctrl-C in ``graph.invoke`` while a model is answering: the request is closed at once."""
    if hung == "proposer":
        server.script("slow", "never seen", ttft=30)
        ctx = fake_context(server, ["slow"], max_attempts=1)
    else:
        server.script("agg", "never seen", ttft=30)
        ctx = fake_context(server, [], layers=1, max_attempts=1)
    start = time.perf_counter()
    timer = _interrupt_after(1.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            graph.invoke({"messages": [HumanMessage("hi")]}, context=ctx)
    finally:
        timer.cancel()
    gave_up = time.perf_counter()
    assert gave_up - start < 15  # not the 30 s the model would take
    (request,) = server.requests_for("slow" if hung == "proposer" else "agg")
    # The provider sees its request closed within about a second of the caller giving up.
    while server.in_flight() and time.perf_counter() - gave_up < 2:
        time.sleep(0.02)
    assert server.in_flight() == 0
    assert request.disconnected


def test_sync_nodes_stream_and_keep_the_callers_context(server: FakeOpenAIServer) -> None:
    """The sync face streams the answer's tokens (the stream writer is a context variable)."""
    server.script("agg", "one two three four", token_delay=0.01)
    ctx = fake_context(server, ["a"])
    tokens = [
        chunk.content
        for chunk, meta in graph.stream(
            {"messages": [HumanMessage("hi")]}, context=ctx, stream_mode="messages"
        )
        if meta["langgraph_node"] == "aggregate" and chunk.content
    ]
    assert len(tokens) > 1 and "".join(tokens) == "one two three four"
    assert spec(server, "agg").model == "together:agg"


# A user's script: a sync graph.invoke whose first layer has three slow proposers, alone, as a
# subgraph of the user's own sync graph, or with LangGraph's max_concurrency=1; or the same with
# staircase streaming (the proposers and the aggregator, side by side in one step).
_SCRIPT = """
import sys
from langchain_core.messages import HumanMessage
from langgraph.graph import START, MessagesState, StateGraph
from langgraph_moa import Context, ModelSpec, graph

base_url, shape = sys.argv[1:]
ctx = Context(
    proposers=[ModelSpec(model=f"together:slow{i}", base_url=base_url) for i in range(3)],
    aggregator=ModelSpec(model="together:agg", base_url=base_url),
    max_attempts=1,
    staircase=shape.startswith("staircase"),
)
runnable = graph
if shape == "subgraph":
    parent = StateGraph(MessagesState)
    parent.add_node("moa", graph)
    parent.add_edge(START, "moa")
    runnable = parent.compile()
config = {"max_concurrency": 1} if shape.endswith("one at a time") else {}
runnable.invoke({"messages": [HumanMessage("hi")]}, config, context=ctx)
"""


@pytest.mark.parametrize(
    "shape", ["layer", "subgraph", "one at a time", "staircase", "staircase, one at a time"]
)
def test_ctrl_c_in_a_sync_layer_of_several_proposers_closes_their_requests(
    server: FakeOpenAIServer, shape: str
) -> None:
    """Ctrl-C while LangGraph's worker threads wait on the proposers: every request closes at once,
    the script ends with KeyboardInterrupt, and the aggregator is never called."""
    for i in range(3):
        server.script(f"slow{i}", "never seen", ttft=30)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, server.base_url, shape], env=env, cwd=ROOT
    )
    try:
        # Staircase, one at a time: the aggregator (the step's first task) starts all three.
        open_at_once = 1 if shape == "one at a time" else 3
        deadline = time.monotonic() + 60  # the child imports the package first
        while server.in_flight() < open_at_once:
            assert proc.poll() is None and time.monotonic() < deadline, server.requests
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        gave_up = time.perf_counter()
        # KeyboardInterrupt's status: Python ends by re-raising SIGINT on itself.
        assert proc.wait(15) == -signal.SIGINT
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert server.wait_idle(2)
    requests = [r for r in server.requests if r.model.startswith("slow")]
    # One at a time, the proposers still queued never start.
    assert len(requests) == open_at_once
    for request in requests:
        assert request.disconnected
        assert request.finished is not None and request.finished - gave_up < 1
    assert not server.requests_for("agg")


def _when_in_flight(server: FakeOpenAIServer, count: int, action: Any) -> threading.Thread:
    """Run ``action`` once ``count`` requests are open at the server (from another thread)."""

    def watch() -> None:
        deadline = time.monotonic() + 30
        while server.in_flight() < count and time.monotonic() < deadline:
            time.sleep(0.01)
        action()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def test_ctrl_c_during_a_sync_layer_is_the_users_handler_to_decide(
    server: FakeOpenAIServer,
) -> None:
    """A SIGINT handler of the user's that does not raise keeps the run going: nothing is
    cancelled, and after the run the handler is the user's, as it was."""
    for name in ("a", "b"):
        server.script(name, f"proposal {name}", ttft=2.0)
    ctx = fake_context(server, ["a", "b"], max_attempts=1)
    pressed: list[int] = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        handler = signal.getsignal(signal.SIGINT)
        watcher = _when_in_flight(server, 2, lambda: os.kill(os.getpid(), signal.SIGINT))
        try:
            state = graph.invoke({"messages": [HumanMessage("hi")]}, context=ctx)
        except KeyboardInterrupt:  # a failure of this test, not the end of the session
            pytest.fail("the run was cancelled though the user's handler returned")
        watcher.join()
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert pressed == [signal.SIGINT]
    assert state["messages"][-1].content == server.requests_for("agg")[0].reply
    assert not any(r.disconnected for r in server.requests)


@pytest.mark.parametrize("face", ["invoke", "stream"])
def test_ctrl_c_cancels_the_main_threads_run_not_another_threads(
    server: FakeOpenAIServer, face: str
) -> None:
    """Two sync runs with a layer each, one in the main thread (``invoke``, or ``stream`` of
    updates) and one in a thread of the user's: Ctrl-C cancels the main thread's, the other one
    still answers, and SIGINT's handler is Python's default again (so ``asyncio.run`` installs
    its own)."""
    for name in ("main0", "main1"):
        server.script(name, "never seen", ttft=30)
    for name in ("side0", "side1"):
        server.script(name, f"proposal {name}", ttft=3.0)
    server.script("side-agg", "the side answer")
    main_ctx = fake_context(server, ["main0", "main1"], max_attempts=1)
    side_ctx = fake_context(server, ["side0", "side1"], aggregator="side-agg", max_attempts=1)
    answers: list[Any] = []
    side = threading.Thread(
        target=lambda: answers.append(
            graph.invoke({"messages": [HumanMessage("hi")]}, context=side_ctx)
        )
    )
    side.start()
    watcher = _when_in_flight(server, 4, lambda: os.kill(os.getpid(), signal.SIGINT))
    try:
        with pytest.raises(KeyboardInterrupt):
            if face == "invoke":
                graph.invoke({"messages": [HumanMessage("hi")]}, context=main_ctx)
            else:
                inputs = {"messages": [HumanMessage("hi")]}
                list(graph.stream(inputs, context=main_ctx, stream_mode="updates"))
    finally:
        watcher.join()
        side.join(30)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert server.wait_idle(2)
    assert all(r.disconnected for r in server.requests if r.model.startswith("main"))
    assert not any(r.disconnected for r in server.requests if r.model.startswith("side"))
    assert answers and answers[0]["messages"][-1].content == "the side answer"
    assert not server.requests_for("agg")


def _slow_layer(server: FakeOpenAIServer, prefix: str, count: int) -> list[str]:
    names = [f"{prefix}{i}" for i in range(count)]
    for name in names:
        server.script(name, "never seen", ttft=30)
    return names


def _user_graph_with_moa() -> Any:
    """A user's sync graph whose one node is MoA (a subgraph), streamed with subgraphs=True."""
    parent = StateGraph(MessagesState)
    parent.add_node("moa", graph)
    parent.add_edge(START, "moa")
    return parent.compile()


def _sync_call(face: str, ctx: Any) -> None:
    """A sync call whose MoA layer LangGraph runs in its worker threads."""
    inputs = {"messages": [HumanMessage("hi")]}
    if face.endswith("stream messages") and "user graph" not in face:
        for _ in graph.stream(inputs, context=ctx, stream_mode="messages"):
            pass
    elif face == "user graph, stream messages":
        runnable = _user_graph_with_moa()
        for _ in runnable.stream(inputs, context=ctx, stream_mode="messages", subgraphs=True):
            pass
    elif face == "unrolled graph":  # no MoA router in the caller's thread to take SIGINT
        build_moa_graph(unroll=ctx).compile().invoke(inputs)
    elif face == "invoke":  # what MoA covers with no scope: the scope holds SIGINT instead
        graph.invoke(inputs, context=ctx)
    else:  # batch: two questions, each with its own worker thread
        graph.batch([inputs, inputs], context=ctx)


@pytest.mark.parametrize(
    "face",
    [
        "stream messages",
        "staircase, stream messages",
        "user graph, stream messages",
        "batch",
        "unrolled graph",
        "invoke",
    ],
)
@pytest.mark.parametrize("how", ["Ctrl-C", "scope.cancel()"])
def test_in_a_cancel_scope_giving_up_closes_every_request_at_once(
    server: FakeOpenAIServer, face: str, how: str
) -> None:
    """Inside ``cancel_on_interrupt()``, Ctrl-C (a real SIGINT) or ``scope.cancel()`` from a timer
    thread, while LangGraph's workers wait on slow proposers: every request closes at once,
    ``KeyboardInterrupt`` reaches the caller without waiting for the models, the aggregator is
    never called, and SIGINT's handler is Python's default again after the block."""
    names = _slow_layer(server, "slow", 2)
    ctx = fake_context(server, names, max_attempts=1, staircase=face.startswith("staircase"))
    open_at_once = 4 if face == "batch" else 2
    with cancel_on_interrupt() as scope:
        if how == "Ctrl-C":
            action: Any = lambda: os.kill(os.getpid(), signal.SIGINT)  # noqa: E731
        else:
            action = scope.cancel
        watcher = _when_in_flight(server, open_at_once, action)
        start = time.perf_counter()
        try:
            with pytest.raises(KeyboardInterrupt) as raised:
                _sync_call(face, ctx)
        finally:
            watcher.join()
        gave_up = time.perf_counter()
    assert gave_up - start < 15  # not the 30 s the proposers would take
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert scope.cancelled
    if how == "scope.cancel()":
        assert raised.value.args == (CANCELLED,)
    assert server.wait_idle(2)
    requests = server.requests
    assert len(requests) == open_at_once
    for request in requests:
        assert request.disconnected
        assert request.finished is not None and request.finished - gave_up < 1
    assert not server.requests_for("agg")


@pytest.mark.parametrize("face", ["stream", "batch"])
def test_chat_moas_own_sync_calls_need_no_scope(server: FakeOpenAIServer, face: str) -> None:
    """``ChatMoA.stream``/``batch`` from the main thread take SIGINT themselves for the call:
    Ctrl-C closes every request at once, and the handler is Python's default again after."""
    chat = ChatMoA(context=fake_context(server, _slow_layer(server, "slow", 2), max_attempts=1))
    open_at_once = 4 if face == "batch" else 2
    watcher = _when_in_flight(server, open_at_once, lambda: os.kill(os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            if face == "stream":
                for _ in chat.stream("hi"):
                    pass
            else:
                chat.batch(["hi", "hello"])
    finally:
        watcher.join()
    gave_up = time.perf_counter()
    assert gave_up - start < 15  # not the 30 s the proposers would take
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert server.wait_idle(2)
    assert len(server.requests) == open_at_once
    assert all(request.disconnected for request in server.requests)
    assert not server.requests_for("agg")


def test_closing_chat_moas_sync_stream_early_closes_the_answers_request(
    server: FakeOpenAIServer,
) -> None:
    """A caller who stops reading ``ChatMoA.stream`` after the first token and closes it: the
    aggregator's request closes then, rather than LangGraph waiting for the whole answer."""
    server.script("a", "a proposal")
    server.script("agg", " ".join(["word"] * 200), token_delay=0.1)
    chat = ChatMoA(context=fake_context(server, ["a"], max_attempts=1))
    stream = chat.stream("hi")
    assert next(stream).content
    start = time.perf_counter()
    stream.close()  # what leaving a ``with closing(...)`` or dropping the iterator does
    assert time.perf_counter() - start < 10  # not the 20 s the answer would take
    assert server.wait_idle(2)
    (request,) = server.requests_for("agg")
    assert request.disconnected


def test_a_scope_in_a_thread_of_the_users_is_cancelled_from_another(
    server: FakeOpenAIServer,
) -> None:
    """A sync stream in a thread the user started, in a scope entered there (which leaves the
    signal handlers alone: only the main thread may set them), cancelled from the main thread."""
    ctx = fake_context(server, _slow_layer(server, "slow", 2), max_attempts=1)
    scopes: list[Any] = []
    raised: list[BaseException] = []

    def user_thread() -> None:
        try:
            with cancel_on_interrupt() as scope:
                scopes.append(scope)
                _sync_call("stream messages", ctx)
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=user_thread)
    thread.start()
    _when_in_flight(server, 2, lambda: scopes[0].cancel("timed out")).join()
    thread.join(15)
    assert not thread.is_alive()  # not the 30 s the proposers would take
    assert [type(error) for error in raised] == [KeyboardInterrupt]
    assert raised[0].args == ("timed out",)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert server.wait_idle(2)
    assert all(request.disconnected for request in server.requests)
    assert not server.requests_for("agg")


def test_ctrl_c_in_a_layer_run_while_a_chat_moa_stream_is_open_cancels_both(
    server: FakeOpenAIServer,
) -> None:
    """Between the chunks of an open ``ChatMoA`` stream (which holds SIGINT), the caller runs
    ``graph.invoke`` with a layer of its own: Ctrl-C cancels that run too, not only the stream's."""
    server.script("a", "a proposal")
    server.script("agg", " ".join(["word"] * 300), token_delay=0.1)
    chat = ChatMoA(context=fake_context(server, ["a"], max_attempts=1))
    ctx = fake_context(server, _slow_layer(server, "slow", 2), aggregator="agg2", max_attempts=1)
    stream = chat.stream("hi")
    assert next(stream).content
    watcher = _when_in_flight(server, 3, lambda: os.kill(os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            graph.invoke({"messages": [HumanMessage("hi")]}, context=ctx)
    finally:
        watcher.join()
        stream.close()
    assert time.perf_counter() - start < 15  # neither the 30 s proposers nor the 30 s answer
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert server.wait_idle(2)
    assert all(r.disconnected for r in server.requests if r.model in ("slow0", "slow1", "agg"))
    assert not server.requests_for("agg2")

"""Drive the graph for one turn: the run as a stream of events, and the CLI's turn on top of it.

``run_events`` is the one place that turns the graph's stream modes into what a front end needs
(answer tokens, finished proposals, answer restarts, finished layers, the final state); the CLI
(``run_turn``) and the server (apps/serve/runs.py) both consume it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessageChunk, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StreamMode

from langgraph_moa.apps.cli.progress import Progress
from langgraph_moa.nodes.aggregate import ANSWER_TAG
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.records import usage_by_model


@dataclass(frozen=True, slots=True)
class Token:
    """A piece of the final answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class ProposalDone:
    """One proposer finished (``record`` is a ``Proposal``; ``text`` None when it failed)."""

    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AnswerRestart:
    """The answer starts over (an aggregator retry, or the fallback aggregator)."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LayerDone:
    """A proposer layer finished: its responses in the configured proposer order."""

    responses: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Finished:
    """The run's final state (``messages``, ``layers``, ``answer``)."""

    state: dict[str, Any]


RunEvent = Token | ProposalDone | AnswerRestart | LayerDone | Finished


async def run_events(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    messages: list[AnyMessage],
    ctx: Context,
    config: RunnableConfig | None = None,
    *,
    layers: bool = False,
) -> AsyncIterator[RunEvent]:
    """Run the graph on ``messages`` (the new ones, with a checkpointer; else the whole
    conversation) and yield what happens, ending with ``Finished``. ``layers``: also yield
    ``LayerDone`` (costs one more stream mode). Errors of the run (``MoAError``) propagate."""
    modes: list[StreamMode] = ["messages", "custom", "values"]
    if layers:
        modes.append("updates")
    final: dict[str, Any] = {}
    mode: str
    payload: Any
    async for mode, payload in graph.astream(
        {"messages": messages}, config, context=ctx, stream_mode=modes
    ):
        if mode == "messages":
            chunk, meta = payload
            if ANSWER_TAG in meta.get("tags", ()) and isinstance(chunk, AIMessageChunk):
                text = chunk.text
                if text:
                    yield Token(text)
        elif mode == "custom":
            event = payload.get("event")
            if event == "proposal":
                yield ProposalDone(payload)
            elif event in ("answer_retry", "answer_fallback"):
                yield AnswerRestart(payload)
        elif mode == "updates" and "join" in payload:
            value = payload["join"]["layers"]
            # join writes Overwrite([...]) for layer 1 and [...] for later layers
            yield LayerDone(getattr(value, "value", value)[-1])
        elif mode == "values":
            final = payload
    yield Finished(final)


async def run_turn(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    prompt: str,
    ctx: Context,
    progress: Progress,
    on_token: Callable[[str], None] | None,
    on_layer: Callable[[list[dict[str, Any]]], None] | None = None,
    config: RunnableConfig | None = None,
) -> dict[str, Any]:
    """Run one user turn; tokens of the final answer go to ``on_token`` as they arrive."""
    start = time.perf_counter()
    first_token: float | None = None
    streamed = False  # answer text shown since the answer last (re)started
    final: dict[str, Any] = {}
    async for event in run_events(
        graph, [HumanMessage(prompt)], ctx, config, layers=on_layer is not None
    ):
        if isinstance(event, Token):
            if first_token is None:
                first_token = time.perf_counter() - start
                progress.stop()
            if on_token is not None:
                on_token(event.text)
                streamed = True
        elif isinstance(event, ProposalDone):
            progress.proposal(event.record)
        elif isinstance(event, AnswerRestart):
            # The answer starts over (a retry, or the fallback aggregator): end the partial
            # text's line so the new answer starts on a line of its own, and say why on stderr.
            if streamed and on_token is not None:
                on_token("\n")
            progress.answer_restarted(event.payload, streamed=streamed)
            streamed = False
        elif isinstance(event, LayerDone):
            if on_layer is not None:
                on_layer(event.responses)
        else:
            final = event.state
    final["timings"] = {
        "total_s": time.perf_counter() - start,
        "first_token_s": first_token,
        "layers_s": [max((p["latency_s"] for p in lay), default=0.0) for lay in final["layers"]],
        "aggregator_s": final["answer"]["latency_s"],
    }
    final["usage"] = usage_by_model(final.get("layers", []), final.get("answer"))
    return final


def report(final: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The --json object: answer, per-layer responses, usage per model, timings."""
    return {
        "answer": final["messages"][-1].text,
        "aggregator": final["answer"]["model"],
        "fallback": final["answer"].get("fallback", False),
        "aggregator_call": final["answer"],
        "layers": final.get("layers", []),
        "usage": final["usage"],
        "timings": final["timings"],
        "settings": {
            "layers": ctx.layers,
            "proposers": [[s.model for s in ctx.proposers_of(i)] for i in range(1, ctx.layers)],
            "aggregator": ctx.aggregator.model,
        },
    }

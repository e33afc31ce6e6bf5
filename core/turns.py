"""One turn of the graph as a stream of events: what every front end needs.

``run_events`` is the one place that turns the graph's stream modes into answer tokens, finished
proposals, answer restarts and continuations, finished layers and the final state; ``moa``
(apps/chat/turn.py) and ``moa serve`` (apps/serve/runs.py) both consume it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StreamMode

from langgraph_moa.nodes.aggregate import answer_text
from langgraph_moa.nodes.context import Context


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
    """The answer starts over (an aggregator retry, or the fallback aggregator): nothing was
    shown yet, or the answer cannot be continued (a run binding tools or a response format).

    ``after_text``: some of the abandoned answer was already streamed. Text sent cannot be taken
    back, so front ends end it there (a line break, a blank line) and say why."""

    payload: dict[str, Any]
    after_text: bool


@dataclass(frozen=True, slots=True)
class AnswerResumed:
    """The answer's stream broke off and the retry (or the fallback aggregator) continues it
    where it stopped: the next tokens are the rest of the same answer, nothing to undo. Front
    ends may say so (the CLI does, on stderr, after the answer)."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LayerDone:
    """A proposer layer finished: its responses in the configured proposer order."""

    responses: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class AnswerChunkStarted:
    """Staircase streaming: the aggregator's next chunk request starts (``payload`` is its
    ``ChunkRequest`` record as far as known: index, started_s, final, proposals...)."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finished:
    """The run's final state (``messages``, ``layers``, ``answer``)."""

    state: dict[str, Any]


RunEvent = (
    Token | ProposalDone | AnswerRestart | AnswerResumed | AnswerChunkStarted | LayerDone | Finished
)


async def run_events(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    messages: list[AnyMessage],
    ctx: Context,
    config: RunnableConfig | None = None,
    *,
    layers: bool = False,
    bind: Mapping[str, Any] | None = None,
    stop: Sequence[str] = (),
) -> AsyncIterator[RunEvent]:
    """Run the graph on ``messages`` (the new ones, with a checkpointer; else the whole
    conversation) and yield what happens, ending with ``Finished`` (whose last message holds
    the aggregator's ``tool_calls``, if any). ``layers``: also yield ``LayerDone`` (costs one
    more stream mode). ``bind``: tools and response format for the aggregator
    (nodes/models/tools.py); ``stop``: its stop sequences (nodes/stops.py; the tokens yielded are
    not cut, the final answer is). Errors of the run (``MoAError``) propagate."""
    modes: list[StreamMode] = ["messages", "custom", "values"]
    if layers:
        modes.append("updates")
    final: dict[str, Any] = {}
    streamed = False  # answer text yielded since the answer last (re)started
    mode: str
    payload: Any
    async for mode, payload in graph.astream(
        {"messages": messages, "bind": dict(bind) if bind else None, "stop": list(stop) or None},
        config,
        context=ctx,
        stream_mode=modes,
    ):
        if mode == "messages":
            text = answer_text(*payload)
            if text:
                streamed = True
                yield Token(text)
        elif mode == "custom":
            event = payload.get("event")
            if event == "proposal":
                yield ProposalDone(payload)
            elif event in ("answer_retry", "answer_fallback") and payload.get("continues"):
                yield AnswerResumed(payload)
            elif event in ("answer_retry", "answer_fallback"):
                yield AnswerRestart(payload, after_text=streamed)
                streamed = False
            elif event == "answer_chunk":
                yield AnswerChunkStarted(payload)
        elif mode == "updates" and "join" in payload:
            value = payload["join"]["layers"]
            # join writes Overwrite([...]) for layer 1 and [...] for later layers
            yield LayerDone(getattr(value, "value", value)[-1])
        elif mode == "updates" and "staircase_aggregate" in payload:
            for layer in payload["staircase_aggregate"]["layers"].value:  # every layer, at the end
                yield LayerDone(layer)
        elif mode == "values":
            final = payload
    yield Finished(final)

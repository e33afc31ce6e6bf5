"""One turn in the terminal: answer tokens to stdout as they arrive, progress on stderr."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from langgraph_moa.apps.chat.progress import Progress
from langgraph_moa.core.turns import (
    AnswerRestart,
    AnswerResumed,
    Finished,
    LayerDone,
    ProposalDone,
    Token,
    run_events,
)
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.records import usage_by_model


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
    answered = False  # answer text shown since the answer last (re)started
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
                answered = True
        elif isinstance(event, ProposalDone):
            progress.proposal(event.record)
        elif isinstance(event, AnswerRestart):
            # The answer starts over (a retry, or the fallback aggregator): end the partial
            # text's line so the new answer starts on a line of its own, and say why on stderr.
            if event.after_text and on_token is not None:
                on_token("\n")
                answered = False
            progress.answer_restarted(event.payload, streamed=event.after_text and bool(on_token))
        elif isinstance(event, AnswerResumed):
            progress.answer_resumed(event.payload)
        elif isinstance(event, LayerDone):
            if on_layer is not None:
                if answered and on_token is not None:
                    # Staircase: the layers end with the answer, after its text: a blank line
                    # between them.
                    on_token("\n\n")
                    answered = False
                on_layer(event.responses)
        elif isinstance(event, Finished):
            final = event.state
    # After the answer, not inside its line: what broke off and was continued.
    progress.resumed_notes(line_open=first_token is not None and on_token is not None)
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
        # Staircase streaming: every aggregator chunk request (when, what it read, its tokens).
        "staircase": final.get("staircase"),
        "settings": {
            "layers": ctx.layers,
            "proposers": [[s.model for s in ctx.proposers_of(i)] for i in range(1, ctx.layers)],
            "aggregator": ctx.aggregator.model,
            "staircase": ctx.staircase,
        },
    }

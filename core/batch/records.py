"""The record of one item: one JSON line of a batch run's output.

    {"id", "status": "ok" | "failed", "input": <the item as given>,
     "answer": <the last turn's answer, null when failed>, "answers": [<one per turn>],
     "turns": [{"prompt", "answer", "layers": [[Proposal...]...], "aggregator": Answer,
                "seconds"}],
     "usage": {model: {calls, input_tokens, output_tokens, total_tokens}},
     "requests": <calls that reached a provider>, "cached_calls": <answered from the cache>,
     "cost_usd": <all calls at list price, null when a model has no price>,
     "spent_usd": <the calls this run paid for (cached ones are free)>,
     "seconds": <wall time>, "finished": <unix time>, "generator": <name>,
     "settings": {"layers", "proposers": [[model...] per layer], "aggregator"},
     "error": null | {"kind", "message"}}

Proposals and the aggregator's call are the graph's own records (nodes/records.py): model, text,
usage, latency, attempts (0 = answered from the call cache) and error.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from typing_extensions import TypedDict

from langgraph_moa.core.batch.cost import Prices, cost_of
from langgraph_moa.core.batch.inputs import InvalidItem, Item
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.records import Answer, Proposal, tally

ItemErrorKind = Literal["invalid", "layer", "aggregator", "provider", "config", "server", "other"]
# The record's kind for the errors a turn raises, by class name (a LangGraph server reports only
# the name): a subclass takes its nearest listed base's kind (ContextOverflowError: "provider").
ITEM_KINDS: dict[str, ItemErrorKind] = {
    "LayerFailedError": "layer",
    "AggregatorError": "aggregator",
    "ConfigError": "config",
    "ProviderError": "provider",
    "ReplayError": "invalid",  # core/batch/turns.py
}


def item_kind(cls: type[BaseException]) -> ItemErrorKind | None:
    """The record's kind for an error of class ``cls``; None for one not listed."""
    return next((ITEM_KINDS[c.__name__] for c in cls.__mro__ if c.__name__ in ITEM_KINDS), None)


class TurnResult(TypedDict):
    """What one turn of an item produced (from the local graph, a server or a replay)."""

    answer: str
    layers: list[list[Proposal]]
    aggregator: Answer


class Turn(TurnResult):
    prompt: str
    seconds: float


def settings_summary(ctx: Context) -> dict[str, Any]:
    return {
        "layers": ctx.layers,
        "proposers": [[s.model for s in ctx.proposers_of(n)] for n in range(1, ctx.layers)],
        "aggregator": ctx.aggregator.model,
    }


def _calls(turns: list[Turn]) -> list[tuple[str, dict[str, int] | None, int, bool]]:
    """(model, usage, attempts, answered) of every call of the item."""
    out: list[tuple[str, Any, int, bool]] = []
    for t in turns:
        for layer in t["layers"]:
            out += [(p["model"], p["usage"], p["attempts"], p["text"] is not None) for p in layer]
        a = t["aggregator"]
        out.append((a["model"], a["usage"], a["attempts"], True))
    return out


def _usage(calls: list[tuple[str, Any, int, bool]]) -> dict[str, dict[str, int]]:
    return tally((model, usage) for model, usage, _, _ in calls)


def build_record(
    item: Item | InvalidItem,
    turns: list[Turn],
    *,
    error: tuple[ItemErrorKind, str] | None,
    seconds: float,
    prices: Prices,
    generator: str,
    settings: dict[str, Any],
) -> dict[str, Any]:
    answers = [t["answer"] for t in turns]
    calls = _calls(turns)
    # A call answered from the cache made no request (attempts 0) and cost nothing this run.
    fresh = [c for c in calls if not (c[3] and c[2] == 0)]
    ok = error is None
    return {
        "id": item.id,
        "status": "ok" if ok else "failed",
        "input": item.source,
        "answer": answers[-1] if ok and answers else None,
        "answers": answers,
        "turns": turns,
        "usage": (usage := _usage(calls)),
        "requests": sum(c[2] for c in calls),
        "cached_calls": len(calls) - len(fresh),
        "cost_usd": cost_of(usage, prices),
        "spent_usd": cost_of(_usage(fresh), prices),
        "seconds": round(seconds, 3),
        "finished": time.time(),
        "generator": generator,
        "settings": settings,
        "error": None if error is None else {"kind": error[0], "message": error[1]},
    }

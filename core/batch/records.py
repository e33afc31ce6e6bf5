"""The record of one item: one JSON line of a batch run's output.

    {"id", "status": "ok" | "degraded" | "failed", "input": <the item as given>,
     "answer": <the last turn's answer, null when failed>, "answers": [<one per turn>],
     "turns": [{"prompt", "answer", "layers": [[Proposal...]...], "aggregator": Answer,
                "seconds"}],
     "usage": {model: {calls, input_tokens, output_tokens, total_tokens}}  <calls this run paid>,
     "requests": <requests this run made, retries included>,
     "cached_calls": <answered from the call cache>, "replayed_calls": <stored proposals reused>,
     "reused_usage": {model: {...}} <the cached and replayed calls' own usage, not paid again>,
     "cost_usd": <every call of the answer at list price, null when a model has no price>,
     "spent_usd": <the calls this run paid for>,
     "seconds": <wall time>, "finished": <unix time>, "generator": <name>,
     "settings": {"layers", "proposers": [[model...] per layer], "aggregator"},
     "error": null | {"kind", "message"},
     "missing_proposals": [{"turn", "layer", "index", "model", "kind", "message"}]}

Status: **ok** when every configured proposer answered; **degraded** when the item has an answer
but some proposer gave up (after its retries: a burst of 429s, a timeout, a straggler cut), so
the answer was aggregated from fewer proposals than configured (``missing_proposals`` says which
and why; ``min_proposals`` decides how few still make an answer); **failed** when there is no
answer (``error`` says why). A proposal cut by the layer's quorum (kind ``cancelled``) is not
missing: a quorum asks for fewer proposals on purpose.

Proposals and the aggregator's call are the graph's own records (nodes/records.py): model, text,
usage, latency, attempts (0 = answered from the call cache) and error.

Accounting (``call_kinds``, the one place it is decided): a call is **paid** when this run made
its requests, **cached** when the call cache answered it (attempts 0, with a text), **replayed**
when its turn came from a stored record (``--replay``: the stored proposals). Usage, requests
and spend count paid calls only; the others are counted on their own.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict

from langgraph_moa.core.batch.cost import Prices, cost_of
from langgraph_moa.core.batch.inputs import InvalidItem, Item
from langgraph_moa.core.batch.samples import base_id
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.records import Answer, Proposal, tally

Status = Literal["ok", "degraded", "failed"]
ANSWERED: tuple[Status, ...] = ("ok", "degraded")  # the statuses of a record with an answer
CHOSEN_CUTS = ("cancelled",)  # a quorum cut: fewer proposals by the user's choice

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
    replayed: NotRequired[bool]  # the layers are a stored run's (--replay)


class Turn(TurnResult):
    prompt: str
    seconds: float


def settings_summary(ctx: Context) -> dict[str, Any]:
    """Everything that changes an answer: what a resumed run compares (``settings_changes``)."""
    from langgraph_moa.nodes.models import settings_for

    sampling = {}
    for spec in ctx.all_models():
        s = settings_for(spec, ctx)
        sampling[spec.model] = {
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "seed": s.seed,
            "base_url": s.base_url,
        }
    return {
        "layers": ctx.layers,
        "proposers": [[s.model for s in ctx.proposers_of(n)] for n in range(1, ctx.layers)],
        "aggregator": ctx.aggregator.model,
        "fallback_aggregator": ctx.fallback_aggregator.model if ctx.fallback_aggregator else None,
        "min_proposals": ctx.min_proposals,
        "sampling": sampling,
        "aggregation_prompt": hashlib.sha256(ctx.aggregation_prompt.encode()).hexdigest()[:16],
        "tool_history": str(ctx.tool_history),
    }


def settings_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two ``settings_summary`` values, named for a person ("temperature of
    together:p1: 0.7 -> 0.2"); keys an older record lacks are not compared."""
    changes = []
    for key in old.keys() & new.keys():
        if key == "sampling":
            for model in old[key].keys() & new[key].keys():
                for field in old[key][model].keys() & new[key][model].keys():
                    was, now = old[key][model][field], new[key][model][field]
                    if was != now:
                        changes.append(f"{field} of {model}: {was} -> {now}")
            if old[key].keys() != new[key].keys() and not changes:
                changes.append("the models")
        elif old[key] != new[key]:
            changes.append(
                "the aggregation prompt"
                if key == "aggregation_prompt"
                else (f"{key}: {old[key]} -> {new[key]}")
            )
    return sorted(changes)


CallKind = Literal["paid", "cached", "replayed"]


def call_kinds(turns: Iterable[Mapping[str, Any]]) -> Iterator[tuple[Mapping[str, Any], CallKind]]:
    """Every call of an item's turns (proposals, then the aggregator's) and who paid for it."""
    for t in turns:
        stored = bool(t.get("replayed"))
        for layer in t["layers"]:
            for p in layer:
                yield p, "replayed" if stored else _kind(p)
        yield t["aggregator"], _kind(t["aggregator"])


def _kind(call: Mapping[str, Any]) -> CallKind:
    # attempts 0 with a text: the cache answered, no request was made
    return "cached" if call["attempts"] == 0 and call.get("text", "") is not None else "paid"


def missing_proposals(turns: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The proposals of an item that a configured proposer did not give, and why."""
    return [
        {
            "turn": n,
            "layer": p["layer"],
            "index": p["index"],
            "model": p["model"],
            "kind": p["error"]["kind"],
            "message": p["error"]["message"],
        }
        for n, t in enumerate(turns, 1)
        for layer in t["layers"]
        for p in layer
        if p.get("text") is None and p.get("error") and p["error"]["kind"] not in CHOSEN_CUTS
    ]


def _usage(calls: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    return tally(calls)


def _sum_cost(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


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
    calls = list(call_kinds(turns))
    paid = [c for c, kind in calls if kind == "paid"]
    reused = [c for c, kind in calls if kind != "paid"]
    ok = error is None
    missing = missing_proposals(turns) if ok else []
    status: Status = "failed" if not ok else "degraded" if missing else "ok"
    k = getattr(item, "sample", None)
    sample = {} if k is None else {"item_id": base_id(item), "sample": k}
    return {
        "id": item.id,
        **sample,
        "status": status,
        "input": item.source,
        "answer": answers[-1] if ok and answers else None,
        "answers": answers,
        "turns": turns,
        "usage": (usage := _usage(paid)),
        "requests": sum(int(c["attempts"]) for c in paid),
        "cached_calls": sum(kind == "cached" for _, kind in calls),
        "replayed_calls": sum(kind == "replayed" for _, kind in calls),
        "reused_usage": (again := _usage(reused)),
        "cost_usd": _sum_cost(cost_of(usage, prices), cost_of(again, prices)),
        "spent_usd": cost_of(usage, prices),
        "seconds": round(seconds, 3),
        "finished": time.time(),
        "generator": generator,
        "settings": settings,
        "error": None if error is None else {"kind": error[0], "message": error[1]},
        "missing_proposals": missing,
    }


def answer_usage(record: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Every call that made the record's answer, paid or reused (what the answer takes: for
    comparing systems and estimating, where who paid does not matter)."""
    total: dict[str, dict[str, int]] = {}
    for part in (record.get("usage") or {}, record.get("reused_usage") or {}):
        for model, row in part.items():
            into = total.setdefault(model, dict.fromkeys(row, 0))
            for key, value in row.items():
                into[key] = into.get(key, 0) + int(value)
    return total

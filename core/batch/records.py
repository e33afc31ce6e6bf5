"""The record of one item: one JSON line of a batch run's output.

    {"id", "status": "ok" | "degraded" | "failed", "input": <the item as given>,
     "input_digest": <a hash of what the models were asked (inputs.input_digest), null when
                      the item was malformed>,
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
     "settings": {"layers", "proposers": [[model...] per layer], "aggregator", "sampling",
                  "uses": {place: {model, temperature, max_tokens, seed, base_url}}, ...},
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
and spend count paid calls only; the others are counted on their own. A call that sent a request
is paid however it ended, a cut one too (its usage unknown: no tokens counted). A failed item's
turn that failed is in no ``turns``, but the calls it sent requests for were paid: they are
counted in its usage, requests and spend all the same (nodes/models/paid.py, by the same count of
requests sent as the turns' records: ``calls.Sent``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict

from langgraph_moa.core.batch.cost import Prices, cost_of
from langgraph_moa.core.batch.inputs import InvalidItem, Item, input_digest
from langgraph_moa.core.batch.samples import base_id
from langgraph_moa.nodes.context import Context, ModelSpec
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
    """Everything that changes an answer: what a resumed run compares (``settings_changes``).

    ``sampling`` holds each model's settings once (as records before ``uses`` did); ``uses``
    holds every place a model is called (each proposer of each layer, the aggregator, its
    fallback) with its own settings: Self-MoA calls one model at several temperatures and
    seeds, and ``sampling`` alone keeps only one of them."""
    from langgraph_moa.nodes.models import settings_for

    def of(spec: ModelSpec) -> dict[str, Any]:
        s = settings_for(spec, ctx)
        return {
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "seed": s.seed,
            "base_url": s.base_url,
        }

    sampling = {spec.model: of(spec) for spec in ctx.all_models()}
    uses: dict[str, dict[str, Any]] = {}
    for n in range(1, ctx.layers):
        for i, spec in enumerate(ctx.proposers_of(n), 1):
            uses[f"layer {n}, proposer {i}"] = {"model": spec.model, **of(spec)}
    uses["aggregator"] = {"model": ctx.aggregator.model, **of(ctx.aggregator)}
    if ctx.fallback_aggregator is not None:
        fallback = ctx.fallback_aggregator
        uses["fallback aggregator"] = {"model": fallback.model, **of(fallback)}
    return {
        "layers": ctx.layers,
        "proposers": [[s.model for s in ctx.proposers_of(n)] for n in range(1, ctx.layers)],
        "aggregator": ctx.aggregator.model,
        "fallback_aggregator": ctx.fallback_aggregator.model if ctx.fallback_aggregator else None,
        "min_proposals": ctx.min_proposals,
        # A quorum leaves the slowest proposals out; staircase aggregates unfinished ones.
        "quorum": ctx.quorum,
        "staircase": ctx.staircase,
        "staircase_chunks": list(ctx.staircase_chunks) if ctx.staircase else None,
        "sampling": sampling,
        "uses": uses,
        "aggregation_prompt": hashlib.sha256(ctx.aggregation_prompt.encode()).hexdigest()[:16],
        "tool_history": str(ctx.tool_history),
    }


def _use_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two ``uses``: a model called once is named alone ("temperature of
    together:p1"), one called several times with its place ("... (layer 1, proposer 2)"). A
    place whose model changed is said by ``proposers``/``aggregator``."""
    calls: dict[str, int] = {}
    for use in new.values():
        calls[use["model"]] = calls.get(use["model"], 0) + 1
    changes = set()
    for place in old.keys() & new.keys():
        was, now = old[place], new[place]
        if was.get("model") != now["model"]:
            continue
        where = f" ({place})" if calls[now["model"]] > 1 else ""
        for field in was.keys() & now.keys() - {"model"}:
            if was[field] != now[field]:
                changes.add(f"{field} of {now['model']}{where}: {was[field]} -> {now[field]}")
    return sorted(changes)


def settings_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two ``settings_summary`` values, named for a person ("temperature of
    together:p1: 0.7 -> 0.2"); keys an older record lacks are not compared."""
    changes = []
    # Records with ``uses`` compare each call's settings; older ones, each model's.
    per_use = "uses" in old and "uses" in new
    for key in old.keys() & new.keys():
        if key == "uses":
            changes.extend(_use_changes(old[key], new[key]))
        elif key == "staircase_chunks" and None in (old[key], new[key]):
            continue  # staircase turned on or off: its own line says so
        elif key == "sampling" and per_use:
            continue  # each use is compared; a changed model is said by proposers/aggregator
        elif key == "sampling":
            for model in old[key].keys() & new[key].keys():
                for field in old[key][model].keys() & new[key][model].keys():
                    was, now = old[key][model][field], new[key][model][field]
                    if was != now:
                        changes.append(f"{field} of {model}: {was} -> {now}")
            if old[key].keys() != new[key].keys() and not changes:
                changes.append("the models")
        elif key == "replayed_proposals" and old[key] != new[key]:
            changes.append("the proposals replayed (another --replay run file, or one changed)")
        elif old[key] != new[key]:
            changes.append(
                "the aggregation prompt"
                if key == "aggregation_prompt"
                else (f"{key}: {old[key]} -> {new[key]}")
            )
    return sorted(changes)


CallKind = Literal["paid", "cached", "replayed"]


def call_kinds(
    turns: Iterable[Mapping[str, Any]], failed_turn: Iterable[Mapping[str, Any]] = ()
) -> Iterator[tuple[Mapping[str, Any], CallKind]]:
    """Every call of an item's turns (proposals, then the aggregator's) and who paid for it, then
    the calls of the turn that failed (a record's ``failed_turn_calls``): paid, all of them."""
    for t in turns:
        stored = bool(t.get("replayed"))
        for layer in t["layers"]:
            for p in layer:
                yield p, "replayed" if stored else _kind(p)
        yield t["aggregator"], _kind(t["aggregator"])
    for call in failed_turn:
        yield call, "paid"


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
    unrecorded: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """``unrecorded``: calls paid in a turn that failed, so in none of ``turns``
    (nodes/models/paid.py)."""
    answers = [t["answer"] for t in turns]
    calls = list(call_kinds(turns, unrecorded))
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
        "input_digest": input_digest(item) if isinstance(item, Item) else None,
        "answer": answers[-1] if ok and answers else None,
        "answers": answers,
        "turns": turns,
        "failed_turn_calls": list(unrecorded),
        "usage": (usage := _usage(paid)),
        "requests": sum(int(c["attempts"]) for c in paid),
        "cached_calls": sum(kind == "cached" for _, kind in calls),
        "replayed_calls": sum(kind == "replayed" for _, kind in calls),
        "reused_usage": (again := _usage(reused)),
        "cost_usd": _sum_cost(cost_of(usage, prices), cost_of(again, prices)),
        "spent_usd": cost_of(usage, prices),
        # The prices those were counted at (a replay prices the proposals it reuses with them).
        "prices": {
            model: {"input": price[0], "output": price[1]}
            for model in {**usage, **again}
            if (price := prices.get(model)) is not None
        },
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

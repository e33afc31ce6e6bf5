"""Cost: prices per model, the cost of a record's calls, and the estimate before a run.

Prices are USD per million input and output tokens: ``ModelSpec.price`` from the config, else the
list price in nodes/models/catalog.toml (to check: providers change them).

The estimate (``moa batch --dry-run``) counts the calls (items x turns x (proposers of every
layer + the aggregator)): retries are not counted, and calls the call cache already holds are
counted as if paid (which of them a run asks again depends on the answers of earlier layers), so
with a cache that holds some it is an upper bound. The tokens are counted in one of two ways:

- **upper bound**, before anything ran: every answer is assumed ``max_tokens`` long (a model never
  writes more), so later layers and the aggregator get references that long; text is counted at
  3.5 characters per token plus 4 tokens per message (nodes/models/budget.py), more than English
  text takes with the usual tokenizers (about 4 characters per token). Real usage is at most this
  for English text (code and other scripts can take more tokens per character); answers shorter
  than ``max_tokens`` make it lower, often by half or more.
- **measured**, when the output already holds finished items: the rest is estimated from their
  mean input and output tokens per call of each model. Close when the remaining prompts are like
  the finished ones; run a few dozen items first (``--limit``) to get it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph_moa.core.batch.inputs import InvalidItem, Item
from langgraph_moa.nodes.context import Context, ModelSpec
from langgraph_moa.nodes.models import settings_for
from langgraph_moa.nodes.models.budget import MESSAGE_OVERHEAD, REQUEST_OVERHEAD, estimate_tokens
from langgraph_moa.nodes.models.catalog import known_price
from langgraph_moa.nodes.prompts import format_references

Prices = dict[str, tuple[float, float] | None]  # model -> USD per million (input, output)


def prices_of(ctx: Context) -> Prices:
    """The price of every model the run may call (None: unknown)."""
    return {spec.model: settings_for(spec, ctx).price for spec in ctx.all_models()}


def replay_prices(ctx: Context, stored: dict[str, dict[str, Any]]) -> Prices:
    """The prices of a replay: for the proposals it reuses, the prices the replayed records
    counted them at (``prices``), else their list price; for its aggregator (and fallback),
    this run's. A replay's own proposers are not its models (they are the run file's)."""
    prices: Prices = {}
    for record in stored.values():
        counted = record.get("prices")
        counted = counted if isinstance(counted, dict) else {}
        for turn in record.get("turns") or []:
            for layer in (turn.get("layers") if isinstance(turn, dict) else None) or []:
                for proposal in layer if isinstance(layer, list) else []:
                    model = proposal.get("model") if isinstance(proposal, dict) else None
                    if isinstance(model, str) and prices.get(model) is None:
                        prices[model] = _stored_price(counted.get(model)) or known_price(model)
    models = [ctx.aggregator, *([ctx.fallback_aggregator] if ctx.fallback_aggregator else [])]
    prices.update({spec.model: settings_for(spec, ctx).price for spec in models})
    return prices


def _stored_price(price: Any) -> tuple[float, float] | None:
    try:
        return (float(price["input"]), float(price["output"]))
    except (TypeError, KeyError, ValueError):
        return None


def cost_of(usage: dict[str, dict[str, int]], prices: Prices) -> float | None:
    """USD for ``usage`` (tokens per model); None when a model that used tokens has no price."""
    total = 0.0
    for model, row in usage.items():
        price = prices.get(model)
        tokens = row.get("input_tokens", 0) + row.get("output_tokens", 0)
        if price is None:
            if tokens:
                return None
            continue
        total += (
            row.get("input_tokens", 0) * price[0] + row.get("output_tokens", 0) * price[1]
        ) / 1e6
    return total


@dataclass
class ModelEstimate:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class Estimate:
    """What running the remaining items is expected to take."""

    items: int  # in the input
    done: int  # already finished in the output (skipped)
    to_run: int
    turns: int  # user turns of the items to run
    invalid: int = 0  # malformed items (--skip-invalid) not in the output yet: recorded as failed
    later: int = 0  # items past --limit: left for a later run, not estimated
    per_model: dict[str, ModelEstimate] = field(default_factory=dict)
    prices: Prices = field(default_factory=dict)
    measured_from: int = 0  # finished items the means come from; 0 = the upper bound

    @property
    def calls(self) -> int:
        return sum(m.calls for m in self.per_model.values())

    @property
    def input_tokens(self) -> int:
        return sum(m.input_tokens for m in self.per_model.values())

    @property
    def output_tokens(self) -> int:
        return sum(m.output_tokens for m in self.per_model.values())

    def cost(self, model: str | None = None) -> float | None:
        rows = self.per_model if model is None else {model: self.per_model[model]}
        usage = {
            m: {"input_tokens": r.input_tokens, "output_tokens": r.output_tokens}
            for m, r in rows.items()
        }
        return cost_of(usage, self.prices)

    @property
    def unpriced(self) -> list[str]:
        return [m for m in self.per_model if self.prices.get(m) is None]

    def as_json(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "done": self.done,
            "to_run": self.to_run,
            "invalid": self.invalid,
            "later": self.later,
            "turns": self.turns,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost(),
            "method": "measured" if self.measured_from else "upper bound",
            "measured_from": self.measured_from,
            "unpriced": self.unpriced,
            "per_model": {
                m: {**r.__dict__, "cost_usd": self.cost(m)} for m, r in self.per_model.items()
            },
        }


def _message_tokens(text: str) -> int:
    return estimate_tokens(text) + MESSAGE_OVERHEAD


def _reference_block(ctx: Context, answers: Sequence[int]) -> int:
    """Tokens of the aggregation system prompt holding references of ``answers`` tokens."""
    frame = ctx.aggregation_prompt.replace("{references}", format_references([""] * len(answers)))
    return _message_tokens(frame) + sum(answers)


def _turn_calls(ctx: Context, conversation: int) -> list[tuple[ModelSpec, int, int]]:
    """(model, input tokens, output tokens) of every call of one turn, at most."""
    calls = []
    references: list[int] = []
    for layer in range(1, ctx.layers):
        prompt = REQUEST_OVERHEAD + conversation
        if references:
            prompt += _reference_block(ctx, references)
        specs = ctx.proposers_of(layer)
        outs = [settings_for(s, ctx).max_tokens for s in specs]
        calls += [(s, prompt, out) for s, out in zip(specs, outs, strict=True)]
        references = outs
    prompt = REQUEST_OVERHEAD + conversation
    if references:
        prompt += _reference_block(ctx, references)
    calls.append((ctx.aggregator, prompt, settings_for(ctx.aggregator, ctx).max_tokens))
    return calls


def _replay_calls(
    ctx: Context, conversation: int, layers: list[list[dict[str, Any]]]
) -> list[tuple[ModelSpec, int, int]]:
    """The aggregator's call of a replayed turn, on the stored proposals (counted as text)."""
    texts = [p["text"] for p in layers[-1] if p.get("text")] if layers else []
    prompt = REQUEST_OVERHEAD + conversation
    if texts:
        prompt += _reference_block(ctx, [estimate_tokens(t) for t in texts])
    return [(ctx.aggregator, prompt, settings_for(ctx.aggregator, ctx).max_tokens)]


def estimate(
    items: Iterable[Item | InvalidItem],
    ctx: Context,
    *,
    done: set[str],
    finished: FinishedTokens | None = None,
    replay: dict[str, dict[str, Any]] | None = None,
    limit: int | None = None,
) -> Estimate:
    """The estimate for the items not in ``done``; measured from the ``finished`` records' tokens
    if they hold some.

    One pass over ``items``, keeping only sums (a streamed dataset is never held whole).
    ``replay``: the stored records of a ``--replay`` run (only the aggregator is called).
    ``limit``: only the first that many items not done run (``--limit``, as a run counts them:
    malformed items too, which it records as failed); the rest are counted as ``later``.
    """
    result = Estimate(items=0, done=0, to_run=0, turns=0, prices=prices_of(ctx))
    answer = settings_for(ctx.aggregator, ctx).max_tokens

    def add(
        calls: list[tuple[ModelSpec, int, int]], turns: int = 1, conversations: int = 0
    ) -> None:
        for spec, prompt, out in calls:
            row = result.per_model.setdefault(spec.model, ModelEstimate())
            row.calls += turns
            row.input_tokens += prompt * turns + conversations
            row.output_tokens += out * turns

    # Every turn makes the same calls, each prompt its conversation longer: the sums over the
    # turns are the turns' count and their conversations' total (the calls are added once).
    conversations = 0
    for item in items:
        result.items += 1
        if item.id in done:
            result.done += 1
            continue
        if limit is not None and result.to_run + result.invalid >= limit:
            result.later += 1
            continue
        if isinstance(item, InvalidItem):
            result.invalid += 1
            continue
        result.to_run += 1
        result.turns += len(item.turns)
        conversation = sum(_message_tokens(m["content"]) for m in item.history)
        for n, text in enumerate(item.turns):
            conversation += _message_tokens(text)
            if replay is not None:
                stored = replay[item.id]["turns"]
                layers = stored[n]["layers"] if n < len(stored) else []
                add(_replay_calls(ctx, conversation, layers))
            else:
                conversations += conversation
            conversation += answer + MESSAGE_OVERHEAD  # the answer stays in the conversation
    if replay is None and result.turns:
        add(_turn_calls(ctx, 0), result.turns, conversations)
    return _measured(result, finished or FinishedTokens())


@dataclass
class FinishedTokens:
    """The tokens per call of each model over a run file's ok records, summed as they are read
    (``add``): what a measured estimate scales to the items left."""

    ok: int = 0  # ok records added
    per_model: dict[str, ModelEstimate] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        if record.get("status") != "ok":
            return
        self.ok += 1
        for part in ("usage", "reused_usage"):  # paid and reused calls alike: what items take
            for model, row in (record.get(part) or {}).items():
                into = self.per_model.setdefault(model, ModelEstimate())
                into.calls += row["calls"]
                into.input_tokens += row["input_tokens"]
                into.output_tokens += row["output_tokens"]


def _measured(result: Estimate, finished: FinishedTokens) -> Estimate:
    """The upper bound's call counts with the finished items' mean tokens per call."""
    seen = finished.per_model
    if not finished.ok or not all(seen.get(m) and seen[m].calls for m in result.per_model):
        return result
    for model, row in result.per_model.items():
        mean = seen[model]
        row.input_tokens = round(row.calls * mean.input_tokens / mean.calls)
        row.output_tokens = round(row.calls * mean.output_tokens / mean.calls)
    result.measured_from = finished.ok
    return result

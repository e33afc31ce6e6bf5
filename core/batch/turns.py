"""Where a turn of an item runs: the MoA graph in this process, or a re-aggregation of stored
proposals (``--replay``). A LangGraph server is the third (core/batch/server.py).

Each takes the item and the conversation so far (the turn's user message last) as plain
``{"role", "content"}`` messages and returns the turn's answer, layers and aggregator call.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol, TypeGuard

from langchain_core.runnables import RunnableConfig

from langgraph_moa.core.batch.inputs import Item
from langgraph_moa.core.batch.records import TurnResult, settings_summary
from langgraph_moa.core.batch.samples import sample_context
from langgraph_moa.nodes.context import Context, build_context
from langgraph_moa.nodes.errors import MoAError
from langgraph_moa.nodes.models.callcache import CallCache, use_call_cache

Message = dict[str, str]
_Shape = tuple[tuple[str, ...], ...]  # the models of each stored layer's proposers


class Turns(Protocol):
    """Runs one turn of an item."""

    async def turn(self, item: Item, messages: list[Message], index: int) -> TurnResult: ...

    def settings_of(self, item: Item) -> dict[str, Any]:
        """The models that answer ``item`` (for its record)."""
        ...


class ReplayError(MoAError):
    """The stored record has no proposals for this turn."""


def _result(state: dict[str, Any]) -> TurnResult:
    return TurnResult(
        answer=state["messages"][-1].text, layers=state["layers"], aggregator=state["answer"]
    )


class SampleContexts:
    """The run's context for each sample of ``--samples K`` (the run's own without samples)."""

    def __init__(self, ctx: Context, samples: int = 1) -> None:
        self.ctx = ctx
        self.samples = samples
        self._contexts: dict[int, Context] = {}

    def of(self, item: Item) -> Context:
        if item.sample is None:
            return self.ctx
        if item.sample not in self._contexts:
            self._contexts[item.sample] = sample_context(self.ctx, item.sample, self.samples)
        return self._contexts[item.sample]


class GraphTurns:
    """Each turn is one run of the MoA graph in this process, with the call cache if given."""

    def __init__(
        self, ctx: Context, cache: CallCache | None = None, graph: Any = None, samples: int = 1
    ) -> None:
        from langgraph_moa.graphs import graph as moa_graph

        self.ctx = ctx
        self.cache = cache
        self.graph: Any = graph if graph is not None else moa_graph
        self.contexts = SampleContexts(ctx, samples)
        self._settings = settings_summary(ctx)

    def settings_of(self, item: Item) -> dict[str, Any]:
        return self._settings

    async def turn(self, item: Item, messages: list[Message], index: int) -> TurnResult:
        config: RunnableConfig = {"run_name": f"moa batch {item.id}"}
        with use_call_cache(self.cache, scope=item.id):
            state = await self.graph.ainvoke(
                {"messages": messages}, config, context=self.contexts.of(item)
            )
        return _result(state)


# What a replay takes from the run file it re-aggregates, never from its own settings: the
# proposers, and every setting of how their proposals were made and gathered. The one list: a flag
# or config file that sets one is refused (core/settings.py: it would be ignored), the replay's
# context keeps none of this run's (ReplayTurns._shaped), its record copies the replayed record's
# (settings_for), and docs/batch.md names them (tests/test_docs.py).
REPLAYED_SETTINGS = (
    "proposers",
    "layer_proposers",
    "layers",
    "min_proposals",
    "quorum",
    "quorum_grace",
    "layer_deadline",
    "straggler_grace",
    "staircase",
    "staircase_chunks",
)
_CALL_SETTINGS = ("temperature", "max_tokens", "seed", "base_url")


class ReplayTurns:
    """Each turn re-aggregates the proposals a previous run stored for it: only the aggregator
    (``ctx.aggregator``, with its fallback) is called."""

    def __init__(
        self, ctx: Context, stored: dict[str, dict[str, Any]], cache: CallCache | None = None
    ) -> None:
        from langgraph_moa.graphs import replay_graph

        self.ctx = ctx
        self.stored = stored
        self.cache = cache
        self.graph: Any = replay_graph
        # Per shape of the stored layers (their proposers' models), not per item: a resume reads
        # every record's settings, and building them took ~150 us each.
        self._contexts: dict[_Shape, tuple[Context, dict[str, Any]]] = {}

    def _layers(self, item: Item, index: int) -> list[list[Any]]:
        return self._layers_of(item.id, index)

    def _layers_of(self, item_id: str, index: int) -> list[list[Any]]:
        turns = self.stored[item_id].get("turns") or []
        if index >= len(turns):
            raise ReplayError(f"the replayed record has no proposals for turn {index + 1}")
        layers = turns[index].get("layers") if isinstance(turns[index], dict) else None
        if not _stored_layers(layers):
            raise ReplayError(
                f"the replayed record's turn {index + 1} holds no layers of proposals as moa "
                "batch writes them (the file was edited?)"
            )
        return layers

    def _shaped(self, layers: list[list[Any]]) -> tuple[Context, dict[str, Any]]:
        """The run's context with the stored layers' proposers (only the aggregator runs), and
        its ``settings_summary``."""
        shape = tuple(tuple(p["model"] for p in lay) for lay in layers)
        if shape not in self._contexts:
            # None of this run's replayed settings (a preset's staircase, deadlines): the run
            # file's made the proposals, and the aggregator needs only their shape.
            data = self.ctx.model_dump(exclude=set(REPLAYED_SETTINGS))
            data.update(
                layers=len(shape) + 1,
                proposers=[],
                layer_proposers=[list(models) for models in shape] or None,
            )
            ctx = build_context(data, "replay")
            self._contexts[shape] = (ctx, settings_summary(ctx))
        return self._contexts[shape]

    def settings_of(self, item: Item) -> dict[str, Any]:
        return self.settings_for(item.id)

    def settings_for(self, item_id: str) -> dict[str, Any]:
        """The settings a replay of ``item_id`` records (KeyError: not in the replayed run): the
        proposers' as the replayed record has them (its models, their temperature, seed,
        endpoint...; unknown: None), this run's aggregator, and a digest of the proposals
        replayed, so that a resume replaying another run file's is refused."""
        record = self.stored[item_id]
        mine = self._shaped(self._layers_of(item_id, 0))[1]
        stored = _mapping(record.get("settings"))
        # The aggregator's settings are this run's; how the proposals were made, the stored run's.
        found = {key: stored[key] for key in REPLAYED_SETTINGS if key in mine and key in stored}
        stored_uses, sampling = _mapping(stored.get("uses")), _mapping(stored.get("sampling"))
        uses: dict[str, Any] = {}
        for place, use in mine["uses"].items():
            if place.startswith("layer "):  # a proposer's: as the replayed run called it
                was = _mapping(stored_uses.get(place))
                if was.get("model") != use["model"]:
                    # Records before "uses" kept each model's settings once.
                    known = _mapping(sampling.get(use["model"]))
                    was = {"model": use["model"], **{k: known.get(k) for k in _CALL_SETTINGS}}
                use = was
            uses[place] = use
        return {
            **mine,
            **found,
            "uses": uses,
            # Each model's settings once, the aggregator's last (as settings_summary has them).
            "sampling": {
                u["model"]: {k: v for k, v in u.items() if k != "model"} for u in uses.values()
            },
            "replayed_proposals": _digest(record),
        }

    async def turn(self, item: Item, messages: list[Message], index: int) -> TurnResult:
        layers = self._layers(item, index)
        references = [p["text"] for p in layers[-1] if p["text"] is not None] if layers else None
        state_in = {"messages": messages, "layers": layers, "references": references}
        with use_call_cache(self.cache, scope=item.id):
            state = await self.graph.ainvoke(state_in, context=self._shaped(layers)[0])
        # The layers are the stored run's: neither paid nor made by this run.
        return TurnResult(**_result(state), replayed=True)


def _digest(record: dict[str, Any]) -> str:
    """What a record's turns hold of proposals (each one's model and text), hashed: two runs of
    the same settings give other proposals, and a replay resumed on another's is refused."""
    turns = record.get("turns")
    proposals = [
        [[[p.get("model"), p.get("text")] for p in layer] for layer in turn["layers"]]
        for turn in (turns if isinstance(turns, list) else [])
        if isinstance(turn, dict) and _stored_layers(turn.get("layers"))
    ]
    text = json.dumps(proposals, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` if a record holds a JSON object there, else an empty one (an edited file)."""
    return value if isinstance(value, dict) else {}


def _stored_layers(layers: Any) -> TypeGuard[list[list[Any]]]:
    """Whether ``layers`` is a record's list of layers: proposals with a model and a text."""
    return isinstance(layers, list) and all(
        isinstance(layer, list)
        and all(
            isinstance(p, dict)
            and isinstance(p.get("model"), str)
            and isinstance(p.get("text"), str | None)
            for p in layer
        )
        for layer in layers
    )

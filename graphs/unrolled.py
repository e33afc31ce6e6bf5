"""The same MoA drawn as the mixture it runs: one node per proposer per layer, a join per layer.

``build_moa_graph(unroll=ctx)`` wires the nodes of nodes/ with static edges for one ``Context``:
``START -> begin_turn -> layer 1 proposers -> join layer 1 -> ... -> aggregate -> END``.
Studio then draws the actual mixture. The dynamic graph (``Send`` fan-out, proposers chosen per
run) is what deployments should serve; this one is for seeing and explaining a preset.

With ``ctx.staircase``, the same nodes stand side by side instead: ``begin_turn -> every proposer
of every layer + aggregate -> END``, one superstep in which the aggregator writes while the
proposers do (nodes/staircase.py), with no join between layers.

A run of the unrolled graph uses the ``Context`` it was built for. A context passed at run time
may change any setting but the shape (layers, each layer's proposer models, staircase or not),
which the edges have fixed.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from langgraph_moa.graphs.adapt import Check, adapt
from langgraph_moa.graphs.state import MoAInput, MoAOutput, MoAState
from langgraph_moa.nodes.aggregate import aggregate
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.errors import ConfigError
from langgraph_moa.nodes.join import join
from langgraph_moa.nodes.propose import ProposeTask, advised, propose
from langgraph_moa.nodes.staircase import (
    StaircaseInput,
    staircase_aggregate,
    staircase_propose,
)
from langgraph_moa.nodes.turn import begin_turn
from langgraph_moa.nodes.untrusted import ServerRules


def _shape(ctx: Context) -> list[list[str]]:
    return [[s.model for s in ctx.proposers_of(layer)] for layer in range(1, ctx.layers)]


def _stairs(ctx: Context) -> bool:
    """Whether the graph runs ``ctx`` as staircase streaming (with proposers to stream)."""
    return ctx.staircase and ctx.proposer_layers > 0


def _short(model: str) -> str:
    """'together:Qwen/Qwen2.5-72B-Instruct-Turbo' -> 'Qwen2.5-72B-Instruct-Turbo'."""
    return model.split(":", 1)[1].rsplit("/", 1)[-1].replace("|", "/").replace(":", "/")


def proposer_node_names(ctx: Context) -> list[list[str]]:
    """Node names per proposer layer: 'layer 1 · Qwen2.5-72B-Instruct-Turbo' (' #2' on repeats)."""
    names = []
    for layer, models in enumerate(_shape(ctx), start=1):
        row: list[str] = []
        for model in models:
            name = f"layer {layer} · {_short(model)}"
            repeats = sum(1 for n in row if n == name or n.startswith(f"{name} #"))
            row.append(f"{name} #{repeats + 1}" if repeats else name)
        names.append(row)
    return names


def join_node_name(layer: int) -> str:
    return f"join layer {layer}"


def _same_shape(built: Context) -> Check:
    shape, stairs = _shape(built), _stairs(built)

    def check(ctx: Context) -> None:
        if _stairs(ctx) != stairs:
            raise ConfigError(
                f"this graph is unrolled for {'staircase' if stairs else 'standard'} MoA; a "
                f"run's context may change settings but not that (staircase={not stairs} needs "
                "the dynamic graph, or a graph unrolled for it)"
            )
        if _shape(ctx) != shape:
            raise ConfigError(
                f"this graph is unrolled for {len(shape)} proposer layer(s) of "
                f"{', '.join(shape[0]) if shape else 'no proposers'}; a run's context may change "
                "settings but not the layers or the proposer models (use the dynamic graph)"
            )

    return check


def unroll(
    builder: StateGraph[MoAState, Context, MoAInput, MoAOutput],
    ctx: Context,
    *,
    untrusted: ServerRules | None = None,
) -> None:
    """Add the unrolled mixture of ``ctx`` to ``builder`` (``untrusted``: see graphs/adapt.py)."""
    check = _same_shape(ctx)
    # The turn's input options, read in the first step (nodes/turn.py); every other node follows.
    builder.add_node(
        "begin_turn", adapt(begin_turn, ctx, check, untrusted=untrusted), input_schema=MoAInput
    )
    builder.add_edge(START, "begin_turn")
    if _stairs(ctx):
        _unroll_stairs(builder, ctx, check, untrusted)
        return

    def add_proposer(name: str, layer: int, index: int) -> None:
        async def node(state: MoAState, runtime: Runtime[Context]) -> dict[str, Any]:
            task = ProposeTask(
                layer=layer,
                index=index,
                messages=advised(state),
                references=state.get("references") if layer > 1 else None,
            )
            return await propose(task, runtime)

        builder.add_node(name, adapt(node, ctx, check, untrusted=untrusted, starts=False))

    joined, aggregated = (
        adapt(join, ctx, check, untrusted=untrusted, starts=False),
        adapt(aggregate, ctx, check, untrusted=untrusted, starts=False),
    )
    builder.add_node("aggregate", aggregated)
    previous = ["begin_turn"]
    for layer, names in enumerate(proposer_node_names(ctx), start=1):
        for index, name in enumerate(names):
            add_proposer(name, layer, index)
            for source in previous:
                builder.add_edge(source, name)
        builder.add_node(join_node_name(layer), joined)
        builder.add_edge(names, join_node_name(layer))
        previous = [join_node_name(layer)]
    for source in previous:
        builder.add_edge(source, "aggregate")
    builder.add_edge("aggregate", END)


def _unroll_stairs(
    builder: StateGraph[MoAState, Context, MoAInput, MoAOutput],
    ctx: Context,
    check: Check,
    untrusted: ServerRules | None,
) -> None:
    def unbound(state: MoAState) -> None:
        if state.get("turn_bind"):
            raise ConfigError(
                "this graph is unrolled for staircase MoA, which never binds tools or a response "
                "format: use the dynamic graph, which runs such a turn as standard MoA"
            )

    def add_proposer(name: str, layer: int, index: int) -> None:
        async def node(state: MoAState, runtime: Runtime[Context]) -> dict[str, Any]:
            unbound(state)
            messages = state["messages"]
            task = ProposeTask(layer=layer, index=index, messages=messages, references=None)
            return await staircase_propose(task, runtime)

        builder.add_node(name, adapt(node, ctx, check, untrusted=untrusted, starts=False))

    async def aggregate_node(state: MoAState, runtime: Runtime[Context]) -> dict[str, Any]:
        unbound(state)
        inputs = StaircaseInput(messages=state["messages"], stop=state.get("turn_stop"))
        return await staircase_aggregate(inputs, runtime)

    # The aggregator first: the step's first task (see graphs/moa.py).
    builder.add_node(
        "aggregate", adapt(aggregate_node, ctx, check, untrusted=untrusted, starts=False)
    )
    builder.add_edge("begin_turn", "aggregate")
    builder.add_edge("aggregate", END)
    for layer, names in enumerate(proposer_node_names(ctx), start=1):
        for index, name in enumerate(names):
            add_proposer(name, layer, index)
            builder.add_edge("begin_turn", name)
            builder.add_edge(name, END)

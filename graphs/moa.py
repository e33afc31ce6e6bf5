"""Mixture-of-Agents wiring: begin_turn -> propose* -> join -> (propose* -> join)... -> aggregate.

``begin_turn`` takes the turn's input options (nodes/turn.py). With ``Context.staircase``:
begin_turn -> staircase_aggregate + staircase_propose* -> END, one superstep
in which every proposer of every layer and the aggregator run side by side (nodes/staircase.py).

Each layer fans out one ``propose`` task per proposer with ``Send``; all tasks of a layer run in
the same superstep and ``join`` runs once they all have finished. ``build_moa_graph(unroll=ctx)``
draws the same nodes as one node per proposer per layer instead (graphs/unrolled.py).
"""

from __future__ import annotations

from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from langgraph_moa.graphs.adapt import AsyncNode, adapt
from langgraph_moa.graphs.state import MoAInput, MoAOutput, MoAState
from langgraph_moa.graphs.unrolled import unroll as add_unrolled
from langgraph_moa.nodes.aggregate import aggregate
from langgraph_moa.nodes.context import Context, load_preset
from langgraph_moa.nodes.errors import ConfigError
from langgraph_moa.nodes.join import join
from langgraph_moa.nodes.models.tools import skips_proposers
from langgraph_moa.nodes.propose import advised, propose, proposer_tasks
from langgraph_moa.nodes.staircase import staircase_aggregate, staircase_propose
from langgraph_moa.nodes.turn import begin_turn
from langgraph_moa.nodes.untrusted import ServerRules

Next = list[Send] | Literal["aggregate"]


class _SaysWhatToDo(type):
    # LangGraph's add_node, given a builder instead of a graph, raises "Expected a Runnable,
    # callable or dict. Instead got an unsupported type: <the type>": the type says what to do.
    def __repr__(cls) -> str:
        return "an uncompiled MoA graph: give add_node build_moa_graph(...).compile()"


class MoAGraphBuilder(StateGraph[MoAState, Context, MoAInput, MoAOutput], metaclass=_SaysWhatToDo):
    """What ``build_moa_graph`` returns: a ``StateGraph``, to compile."""


async def first_layer(state: MoAState, runtime: Runtime[Context]) -> Next:
    ctx = runtime.context  # resolved by adapt
    bind = state.get("turn_bind")
    if ctx.proposer_layers == 0 or skips_proposers(ctx.tool_proposers, bind):
        return "aggregate"
    if ctx.staircase and not bind:
        # Every proposer and the aggregator side by side, in one superstep (nodes/staircase.py);
        # the aggregator first, so that it runs even when LangGraph runs one task at a time. A
        # run that binds tools or a response format runs standard MoA (docs/performance.md).
        messages = state["messages"]
        return [
            Send("staircase_aggregate", {"messages": messages, "stop": state.get("turn_stop")}),
            *(
                Send("staircase_propose", task)
                for layer in range(1, ctx.layers)
                for task in proposer_tasks(ctx, layer, messages, None)
            ),
        ]
    return [Send("propose", t) for t in proposer_tasks(ctx, 1, advised(state), None)]


async def next_layer(state: MoAState, runtime: Runtime[Context]) -> Next:
    ctx = runtime.context  # resolved by adapt
    done = len(state["layers"])
    if done >= ctx.proposer_layers:
        return "aggregate"
    tasks = proposer_tasks(ctx, done + 1, advised(state), state["references"])
    return [Send("propose", t) for t in tasks]


def build_moa_graph(
    context: Context | str | None = None, *, unroll: Context | None = None, untrusted: bool = False
) -> MoAGraphBuilder:
    """The uncompiled MoA graph: compile it with your own checkpointer, store and name.

    ``context``: the settings of runs that bring none (a Context or a preset name); by default
    the default preset. ``unroll``: draw and run this Context's mixture with one node per
    proposer per layer (graphs/unrolled.py); it is then the graph's settings too, so a
    ``context`` that differs from it is refused (``ConfigError``). ``untrusted``: runs' contexts
    come from a server's clients (graphs/served.py): one that would send the server's keys to an
    endpoint of its choosing, name an endpoint the environment does not list
    (``MOA_CLIENT_ENDPOINTS``) or name the server's files is refused (nodes/untrusted.py), and so
    is one past the caps the environment sets (``MOA_MAX_CALLS``...: nodes/caps.py), both read
    here, each with an error naming what to change, before any model is called.
    """
    default = load_preset(context) if isinstance(context, str) else context
    server = ServerRules.from_env() if untrusted else None
    if unroll is not None and default is not None and default != unroll:
        raise ConfigError(
            "build_moa_graph: context and unroll name different settings; an unrolled graph "
            "runs the Context it is unrolled for: pass only unroll=ctx"
        )
    builder = MoAGraphBuilder(
        MoAState, context_schema=Context, input_schema=MoAInput, output_schema=MoAOutput
    )
    if unroll is not None:
        add_unrolled(builder, unroll, untrusted=server)
        return builder

    def node(fn: AsyncNode, starts: bool = False) -> Any:
        return adapt(fn, default, untrusted=server, starts=starts)

    builder.add_node("begin_turn", node(begin_turn, starts=True), input_schema=MoAInput)
    builder.add_node("propose", node(propose))
    builder.add_node("join", node(join))
    builder.add_node("aggregate", node(aggregate))
    builder.add_node("staircase_propose", node(staircase_propose))
    builder.add_node("staircase_aggregate", node(staircase_aggregate))
    builder.add_edge(START, "begin_turn")
    builder.add_conditional_edges(
        "begin_turn",
        node(first_layer),
        ["propose", "aggregate", "staircase_propose", "staircase_aggregate"],
    )
    builder.add_edge("propose", "join")
    builder.add_conditional_edges("join", node(next_layer), ["propose", "aggregate"])
    builder.add_edge("aggregate", END)
    builder.add_edge("staircase_propose", END)
    builder.add_edge("staircase_aggregate", END)
    return builder


graph: CompiledStateGraph[MoAState, Context, MoAInput, MoAOutput] = build_moa_graph().compile(
    name="moa"
)

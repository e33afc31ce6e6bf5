"""Re-aggregation: the aggregator alone, on proposals a run already made (``moa batch --replay``).

START -> aggregate -> END. The input carries the conversation, the stored layers and the
references (the last layer's successful answers), so no proposer is called.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from langgraph_moa.graphs.adapt import adapt
from langgraph_moa.graphs.state import MoAOutput, MoAState
from langgraph_moa.nodes.aggregate import aggregate
from langgraph_moa.nodes.context import Context


def build_replay_graph() -> StateGraph[MoAState, Context, MoAState, MoAOutput]:
    """The uncompiled re-aggregation graph."""
    builder = StateGraph(
        MoAState, context_schema=Context, input_schema=MoAState, output_schema=MoAOutput
    )
    builder.add_node("aggregate", adapt(aggregate, None))
    builder.add_edge(START, "aggregate")
    builder.add_edge("aggregate", END)
    return builder


replay_graph: CompiledStateGraph[MoAState, Context, MoAState, MoAOutput] = (
    build_replay_graph().compile(name="moa-replay")
)

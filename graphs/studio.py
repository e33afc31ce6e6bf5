"""The default preset's mixture unrolled, for LangGraph Studio (langgraph.json: "moa-unrolled").

Studio draws the dynamic graph (``moa``) as three nodes and a loop (and staircase streaming's two
nodes beside them); this one shows the mixture itself: a column of proposers per layer, a join
after each, then the aggregator. It is built for the default preset of the server's environment
(``together`` with TOGETHER_API_KEY, else ``local``).
"""

from __future__ import annotations

from langgraph.graph.state import CompiledStateGraph

from langgraph_moa.graphs.moa import build_moa_graph
from langgraph_moa.graphs.state import MoAInput, MoAOutput, MoAState
from langgraph_moa.nodes.context import Context, load_preset
from langgraph_moa.nodes.presets import default_preset_name

unrolled: CompiledStateGraph[MoAState, Context, MoAInput, MoAOutput] = build_moa_graph(
    unroll=load_preset(default_preset_name())
).compile(name="moa-unrolled")

"""The graphs langgraph.json serves, for a LangGraph server's clients (langgraph-sdk, Studio,
``moa batch --server``).

- ``graph`` (``moa``): the MoA graph, each run's context being a client's, checked as such before
  it is read (nodes/untrusted.py): a client may change the mixture, but may not send the
  server's keys to an endpoint of its choosing, name an endpoint the server's environment does
  not list (``MOA_CLIENT_ENDPOINTS``) or name the server's files, nor ask for more than the caps
  it sets (``MOA_MAX_CALLS``...: nodes/caps.py); both are read as the graphs load, and a value
  that is not valid stops the server there;
- ``unrolled`` (``moa-unrolled``): Studio draws the dynamic graph as three nodes and a loop (and
  staircase streaming's two nodes beside them); this one shows the mixture itself: a column of
  proposers per layer, a join after each, then the aggregator. It is built for the default
  preset of the server's environment (``together`` with TOGETHER_API_KEY, else ``local``).

In-process callers use ``graphs.moa.graph``, whose context is the caller's own.
"""

from __future__ import annotations

from langgraph.graph.state import CompiledStateGraph

from langgraph_moa.graphs.moa import build_moa_graph
from langgraph_moa.graphs.state import MoAInput, MoAOutput, MoAState
from langgraph_moa.nodes.context import Context, load_preset
from langgraph_moa.nodes.presets import default_preset_name

graph: CompiledStateGraph[MoAState, Context, MoAInput, MoAOutput] = build_moa_graph(
    untrusted=True
).compile(name="moa")

unrolled: CompiledStateGraph[MoAState, Context, MoAInput, MoAOutput] = build_moa_graph(
    unroll=load_preset(default_preset_name()), untrusted=True
).compile(name="moa-unrolled")

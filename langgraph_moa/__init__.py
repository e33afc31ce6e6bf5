"""Mixture-of-Agents as a LangGraph graph.

The package is laid out the way the method reads:

- ``langgraph_moa.graphs``: the wiring (``build_moa_graph``, the compiled ``graph``, its state);
- ``langgraph_moa.nodes``: the nodes (propose, join, aggregate), the prompt and the settings
  (``Context``), with the machinery of calling models in ``langgraph_moa.nodes.models``;
- ``langgraph_moa.apps``: what users run (the ``moa`` command);
- ``langgraph_moa.testing``: a fake OpenAI-compatible server for tests and benchmarks.
"""

from langgraph_moa.graphs import build_moa_graph, graph
from langgraph_moa.nodes import Context, MoAError, ModelSpec, load_preset, preset_names

__all__ = [
    "Context",
    "MoAError",
    "ModelSpec",
    "build_moa_graph",
    "graph",
    "load_preset",
    "preset_names",
]

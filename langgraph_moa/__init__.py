"""Mixture-of-Agents as a LangGraph graph.

The package is laid out the way the method reads:

- ``langgraph_moa.graphs``: the wiring (``build_moa_graph``, the compiled ``graph``, its state);
- ``langgraph_moa.nodes``: the nodes (propose, join, aggregate), the prompt and the settings
  (``Context``), with the machinery of calling models in ``langgraph_moa.nodes.models``;
- ``langgraph_moa.apps``: what users run (the ``moa`` command);
- ``langgraph_moa.testing``: a fake OpenAI-compatible server for tests and benchmarks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langgraph_moa.nodes import Context, MoAError, ModelSpec, load_preset, preset_names

if TYPE_CHECKING:
    from langgraph_moa.graphs import build_moa_graph, graph


def __getattr__(name: str) -> Any:
    # The graph on first use (PEP 562): importing it imports LangGraph (~2 s on 2 cores), which
    # `moa --help`, `moa presets` and a bad flag do not need.
    if name in ("build_moa_graph", "graph"):
        from langgraph_moa import graphs

        return getattr(graphs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Context",
    "MoAError",
    "ModelSpec",
    "build_moa_graph",
    "graph",
    "load_preset",
    "preset_names",
]

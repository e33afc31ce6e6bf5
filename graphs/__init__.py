"""Mixture-of-Agents graph wiring. Import ``build_moa_graph`` or the compiled ``graph``."""

from langgraph_moa.graphs.moa import build_moa_graph, graph

__all__ = ["build_moa_graph", "graph"]

"""Mixture-of-Agents graph wiring. Import ``build_moa_graph`` or the compiled ``graph``."""

from langgraph_moa.graphs.moa import build_moa_graph, graph
from langgraph_moa.graphs.replay import build_replay_graph, replay_graph

__all__ = ["build_moa_graph", "build_replay_graph", "graph", "replay_graph"]

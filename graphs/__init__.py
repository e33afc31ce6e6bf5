"""Mixture-of-Agents graph wiring: ``build_moa_graph``, the compiled ``graph``, and the ways to
compose it into your own agent (``moa_node``, ``moa_tool``, ``ChatMoA``, in compose.py), and
``cancel_on_interrupt``, the scope in which a sync caller's Ctrl-C or timeout cancels MoA's calls
(adapt.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langgraph_moa.graphs.adapt import cancel_on_interrupt
from langgraph_moa.graphs.moa import build_moa_graph, graph
from langgraph_moa.graphs.replay import build_replay_graph, replay_graph

if TYPE_CHECKING:
    from langgraph_moa.graphs.compose import ChatMoA, moa_node, moa_tool

__all__ = [
    "ChatMoA",
    "build_moa_graph",
    "build_replay_graph",
    "cancel_on_interrupt",
    "graph",
    "moa_node",
    "moa_tool",
    "replay_graph",
]


def __getattr__(name: str) -> Any:
    # compose.py pulls in LangChain's tools and chat-model machinery: imported on first use.
    if name in ("ChatMoA", "moa_node", "moa_tool"):
        from langgraph_moa.graphs import compose

        return getattr(compose, name)
    raise AttributeError(f"module 'langgraph_moa.graphs' has no attribute {name!r}")

"""Mixture-of-Agents graph wiring: ``build_moa_graph``, the compiled ``graph``, and the ways to
compose it into your own agent (``moa_node``, ``moa_tool``, ``ChatMoA``, in compose.py), and
``cancel_on_interrupt``, the scope in which a sync caller's Ctrl-C or timeout cancels MoA's calls
(adapt.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from langgraph_moa._lazy import lazy_names
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

# compose.py pulls in LangChain's tools and chat-model machinery: imported on first use.
__getattr__, __dir__ = lazy_names(
    __name__, dict.fromkeys(("ChatMoA", "moa_node", "moa_tool"), "langgraph_moa.graphs.compose")
)

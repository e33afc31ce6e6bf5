"""Mixture-of-Agents as a LangGraph graph.

The package is laid out the way the method reads:

- ``langgraph_moa.graphs``: the wiring (``build_moa_graph``, the compiled ``graph``, its state)
  and the ways to compose it into your own agent (``moa_node``, ``moa_tool``, ``ChatMoA``);
- ``langgraph_moa.nodes``: the nodes (propose, join, aggregate), the prompt and the settings
  (``Context``), with the machinery of calling models in ``langgraph_moa.nodes.models``;
- ``langgraph_moa.core``: what the applications share (a turn as events, settings from flags,
  the dataset runner);
- ``langgraph_moa.apps``: what users run, one package per application (``moa`` and its commands).

The names below are the public API (pinned by tests/test_release.py), with ``__version__``; they
are imported on first use, so ``import langgraph_moa.apps...`` stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langgraph_moa._lazy import lazy_names

if TYPE_CHECKING:
    from langgraph_moa._version import __version__ as __version__
    from langgraph_moa.graphs import (
        ChatMoA,
        build_moa_graph,
        cancel_on_interrupt,
        graph,
        moa_node,
        moa_tool,
    )
    from langgraph_moa.nodes import Context, MoAError, ModelSpec, load_preset, preset_names
    from langgraph_moa.nodes.errors import (
        AggregatorError,
        BindOverflowError,
        CallFailedError,
        CapabilityError,
        ConfigError,
        ContextOverflowError,
        EmptyConversationError,
        InputError,
        InvalidMessagesError,
        LayerFailedError,
        ProviderError,
        UnpairedToolCallError,
        UnsupportedContentError,
    )

_WHERE = {
    "__version__": "langgraph_moa._version",
    "ChatMoA": "langgraph_moa.graphs",
    "build_moa_graph": "langgraph_moa.graphs",
    "cancel_on_interrupt": "langgraph_moa.graphs",
    "graph": "langgraph_moa.graphs",
    "moa_node": "langgraph_moa.graphs",
    "moa_tool": "langgraph_moa.graphs",
    "Context": "langgraph_moa.nodes",
    "MoAError": "langgraph_moa.nodes",
    "ModelSpec": "langgraph_moa.nodes",
    "load_preset": "langgraph_moa.nodes",
    "preset_names": "langgraph_moa.nodes",
    "AggregatorError": "langgraph_moa.nodes.errors",
    "BindOverflowError": "langgraph_moa.nodes.errors",
    "CallFailedError": "langgraph_moa.nodes.errors",
    "CapabilityError": "langgraph_moa.nodes.errors",
    "ConfigError": "langgraph_moa.nodes.errors",
    "ContextOverflowError": "langgraph_moa.nodes.errors",
    "EmptyConversationError": "langgraph_moa.nodes.errors",
    "InputError": "langgraph_moa.nodes.errors",
    "InvalidMessagesError": "langgraph_moa.nodes.errors",
    "LayerFailedError": "langgraph_moa.nodes.errors",
    "ProviderError": "langgraph_moa.nodes.errors",
    "UnpairedToolCallError": "langgraph_moa.nodes.errors",
    "UnsupportedContentError": "langgraph_moa.nodes.errors",
}
__all__ = [
    "AggregatorError",
    "BindOverflowError",
    "CallFailedError",
    "CapabilityError",
    "ChatMoA",
    "ConfigError",
    "Context",
    "ContextOverflowError",
    "EmptyConversationError",
    "InputError",
    "InvalidMessagesError",
    "LayerFailedError",
    "MoAError",
    "ModelSpec",
    "ProviderError",
    "UnpairedToolCallError",
    "UnsupportedContentError",
    "build_moa_graph",
    "cancel_on_interrupt",
    "graph",
    "load_preset",
    "moa_node",
    "moa_tool",
    "preset_names",
]

__getattr__, __dir__ = lazy_names(__name__, _WHERE)

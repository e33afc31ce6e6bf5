"""The nodes of a Mixture-of-Agents run and what they share.

- propose.py, join.py, aggregate.py: the three nodes; prompts.py: the aggregate-and-synthesize
  prompt and how references are fenced into it; staircase.py: the two nodes of staircase
  streaming (proposers and the aggregator side by side)
- context.py: ``Context``, every run-time setting; presets.py + presets/: stored Contexts
- records.py: the plain records kept in graph state; errors.py: errors a user can act on
- models/: the machinery of calling a model (providers, clients, retries, budget, quorum)

Nothing here imports ``graphs``; the graph wiring imports these nodes.

The names below are imported on first use, as the package's own (langgraph_moa/__init__.py):
every module here is imported through this package, and ``moa --help`` needs errors.py, not
``Context`` (pydantic models, and LangChain through history.py and prompts.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langgraph_moa._lazy import lazy_names

if TYPE_CHECKING:
    from langgraph_moa.nodes.context import Context, ModelSpec, load_preset
    from langgraph_moa.nodes.errors import MoAError
    from langgraph_moa.nodes.presets import preset_names

_WHERE = {
    "Context": "langgraph_moa.nodes.context",
    "ModelSpec": "langgraph_moa.nodes.context",
    "load_preset": "langgraph_moa.nodes.context",
    "MoAError": "langgraph_moa.nodes.errors",
    "preset_names": "langgraph_moa.nodes.presets",
}
__all__ = ["Context", "MoAError", "ModelSpec", "load_preset", "preset_names"]

__getattr__, __dir__ = lazy_names(__name__, _WHERE)

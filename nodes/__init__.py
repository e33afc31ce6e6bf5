"""The nodes of a Mixture-of-Agents run and what they share.

- propose.py, join.py, aggregate.py: the three nodes; prompts.py: the aggregate-and-synthesize
  prompt and how references are fenced into it; staircase.py: the two nodes of staircase
  streaming (proposers and the aggregator side by side)
- context.py: ``Context``, every run-time setting; presets.py + presets/: stored Contexts
- records.py: the plain records kept in graph state; errors.py: errors a user can act on
- models/: the machinery of calling a model (providers, clients, retries, budget, quorum)

Nothing here imports ``graphs``; the graph wiring imports these nodes.
"""

from langgraph_moa.nodes.context import Context, ModelSpec, load_preset
from langgraph_moa.nodes.errors import MoAError
from langgraph_moa.nodes.presets import preset_names

__all__ = ["Context", "MoAError", "ModelSpec", "load_preset", "preset_names"]

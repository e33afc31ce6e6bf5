"""The work of a Mixture-of-Agents run: proposers, join, aggregator, models, prompts, settings.

Nothing here imports ``graphs``; the graph wiring imports these nodes.
"""

from langgraph_moa.nodes.context import Context, ModelSpec
from langgraph_moa.nodes.errors import MoAError
from langgraph_moa.nodes.presets import load_preset, preset_names

__all__ = ["Context", "MoAError", "ModelSpec", "load_preset", "preset_names"]

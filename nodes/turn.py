"""A turn's first step: the options its input brings (tools, stop sequences) hold for it alone.

LangGraph writes only the input keys a caller sends. Kept in the state as they are, a turn's
``bind`` and ``stop`` would outlive it on a checkpointed thread: a turn that failed before its
aggregator finished would hand them to the next turn sent without them. So the input's keys are
ephemeral (graphs/state.py: gone after this step), and this node copies them, sent or not, into
the state's ``turn_bind`` and ``turn_stop``, which the rest of the run reads. A run resumed from
its checkpoint (``invoke(None, thread)``) keeps its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.runtime import Runtime

from langgraph_moa.nodes.context import Context


async def begin_turn(state: Mapping[str, Any], runtime: Runtime[Context]) -> dict[str, Any]:
    """This turn's ``bind`` and ``stop`` from its input: None where the input has none."""
    return {"turn_bind": state.get("bind"), "turn_stop": state.get("stop")}

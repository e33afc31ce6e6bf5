"""A turn's first step: the options its input brings (tools, stop sequences) hold for it alone.

LangGraph writes only the input keys a caller sends. Kept in the state as they are, a turn's
``bind`` and ``stop`` would outlive it on a checkpointed thread: a turn that failed before its
aggregator finished would hand them to the next turn sent without them. So the input's keys are
ephemeral (graphs/state.py: gone after this step), and this node copies them, sent or not, into
the state's ``turn_bind`` and ``turn_stop``, which the rest of the run reads. A run resumed from
its checkpoint (``invoke(None, thread)``) keeps its own.

Every run passes here before any model is paid, however it was started (either graph, every
entry point): a ``bind`` the aggregator cannot honour (nodes/models/tools.py ``check_capable``),
or too large for its context window beside the conversation (nodes/models/bind_fit.py), is
refused here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.runtime import Runtime

from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.models.bind_fit import check_bind_fits
from langgraph_moa.nodes.models.tools import check_capable


async def begin_turn(state: Mapping[str, Any], runtime: Runtime[Context]) -> dict[str, Any]:
    """This turn's ``bind`` and ``stop`` from its input: None where the input has none."""
    bind = state.get("bind")
    check_capable(runtime.context, bind)
    check_bind_fits(runtime.context, state.get("messages", ()), bind)
    return {"turn_bind": bind, "turn_stop": state.get("stop")}

"""The join node: gathers a layer's responses and keeps the successful ones as references."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Overwrite
from typing_extensions import TypedDict

from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.errors import LayerFailedError
from langgraph_moa.nodes.records import Proposal


class JoinInput(TypedDict):
    proposals: list[Proposal]


async def join(state: JoinInput, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = runtime.context  # resolved by graphs/adapt.py
    layer = state["proposals"][-1]["layer"]
    # Each task of the layer wrote one record, after any left over from a turn that failed
    # before its join (a checkpointer keeps them): the layer is the last n records.
    current = state["proposals"][-len(ctx.proposers_of(layer)) :]
    # Configured proposer order, whatever order the calls finished in.
    responses = sorted(current, key=lambda p: p["index"])
    ok = [p for p in responses if p["text"] is not None]
    if len(ok) < min(ctx.min_proposals, len(responses)):
        raise LayerFailedError(layer, responses, ctx.min_proposals)
    return {
        # Layer 1 starts a new run: drop the previous turn's layers.
        "layers": Overwrite([responses]) if layer == 1 else [responses],
        "proposals": Overwrite([]),
        # Only answers that succeeded; the next calls fence them (nodes/prompts.py) after
        # fitting them to each model's context window (nodes/models/budget.py).
        "references": [p["text"] for p in ok if p["text"] is not None],
    }

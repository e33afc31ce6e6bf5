"""The proposer node: one model answering, in one layer. Many run in parallel."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AnyMessage
from langgraph.config import get_stream_writer
from langgraph.constants import TAG_NOSTREAM
from langgraph.runtime import Runtime

from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.models.budget import fit_request
from langgraph_moa.nodes.models.calls import CallFailedError, call_model
from langgraph_moa.nodes.models.providers import chat_model
from langgraph_moa.nodes.models.quorum import QuorumCancelledError, quorum_call
from langgraph_moa.nodes.presets import resolve_context
from langgraph_moa.nodes.records import ErrorInfo, Proposal, ProposeTask, usage_of


def proposer_tasks(
    ctx: Context, layer: int, messages: Sequence[AnyMessage], references: list[str] | None
) -> list[ProposeTask]:
    """One task per proposer of ``layer`` (1-based), in the configured order."""
    group = uuid.uuid4().hex  # the layer's quorum is keyed by it (nodes/quorum.py)
    return [
        ProposeTask(
            layer=layer, index=i, messages=list(messages), references=references, group=group
        )
        for i in range(len(ctx.proposers_of(layer)))
    ]


async def propose(task: ProposeTask, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask one proposer; a failure is recorded, never raised, so its siblings keep running."""
    ctx = resolve_context(runtime.context)
    spec = ctx.proposers_of(task["layer"])[task["index"]]
    record = Proposal(
        layer=task["layer"],
        index=task["index"],
        model=spec.model,
        text=None,
        usage=None,
        latency_s=0.0,
        attempts=0,
        error=None,
    )
    try:
        model = chat_model(spec, ctx)
        # Fitted to the model's context window; raises (kind "context") when nothing fits.
        request = fit_request(spec, model, ctx, task["messages"], task["references"])
        call = call_model(
            model,
            request,
            timeout=spec.timeout or ctx.timeout,
            max_attempts=ctx.max_attempts,
            tags=[TAG_NOSTREAM],  # proposer tokens stay out of stream_mode="messages"
            retry_base_s=ctx.retry_base_s,
            deadline_s=ctx.layer_deadline,
        )
        result = await quorum_call(ctx, task, call)  # a plain await unless ctx.quorum is set
    except CallFailedError as exc:
        record["latency_s"], record["attempts"] = exc.latency_s, exc.attempts
        record["error"] = ErrorInfo(kind=exc.kind, message=exc.message)
    except QuorumCancelledError as exc:
        record["latency_s"], record["attempts"] = exc.latency_s, 1
        record["error"] = ErrorInfo(kind="cancelled", message=exc.message)
    else:
        record["usage"] = usage_of(result.message)
        record["latency_s"], record["attempts"] = result.latency_s, result.attempts
        if result.text.strip():
            record["text"] = result.text
        else:
            record["error"] = ErrorInfo(kind="empty", message="answered with empty text")
    # Progress for the CLI and Studio (stream_mode="custom"); a no-op when nobody listens.
    get_stream_writer()({"event": "proposal", **record})
    return {"proposals": [record]}

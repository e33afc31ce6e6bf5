"""The proposer node: one model answering, in one layer. Many run in parallel."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AnyMessage
from langgraph.config import get_stream_writer
from langgraph.constants import TAG_NOSTREAM
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.models import CallFailedError, ask_model, settings_for
from langgraph_moa.nodes.models.calls import Sent
from langgraph_moa.nodes.models.quorum import quorum_call
from langgraph_moa.nodes.models.tools import proposer_note
from langgraph_moa.nodes.prompts import with_system
from langgraph_moa.nodes.records import Proposal, usage_of


class ProposeTask(TypedDict):
    """The private input of one proposer task (a ``Send`` payload)."""

    layer: int
    index: int  # the proposer's position in Context.proposers_of(layer)
    messages: list[AnyMessage]
    references: list[str] | None  # the previous layer's answers (join node), None in layer 1


def proposer_tasks(
    ctx: Context, layer: int, messages: Sequence[AnyMessage], references: list[str] | None
) -> list[ProposeTask]:
    """One task per proposer of ``layer`` (1-based), in the configured order."""
    return [
        ProposeTask(layer=layer, index=i, messages=list(messages), references=references)
        for i in range(len(ctx.proposers_of(layer)))
    ]


def advised(state: Mapping[str, Any]) -> list[AnyMessage]:
    """The conversation proposers get: with the tools described when the aggregator may call
    some (nodes/models/tools.py), so that they advise what to do."""
    return with_system(state["messages"], proposer_note(state.get("turn_bind")))


def _layer_run(runtime: Runtime[Context], layer: int) -> str:
    """The same key for every task of one layer of one run: the quorum's group."""
    # All tasks of a layer run in one superstep, whose checkpoint id (a fresh uuid per step of
    # every run, checkpointer or not) they share.
    info = runtime.execution_info
    return f"{info.checkpoint_id}:{layer}" if info else f"{uuid.uuid4()}:{layer}"


async def propose(task: ProposeTask, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask one proposer; a failure is recorded, never raised, so its siblings keep running."""
    ctx = runtime.context  # resolved by graphs/adapt.py
    specs = ctx.proposers_of(task["layer"])
    spec = specs[task["index"]]
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
    sent = Sent()  # the requests of a call cut in the middle of its retries were paid too
    call = ask_model(
        settings_for(spec, ctx),
        ctx,
        task["messages"],
        task["references"],
        # Never streamed: the next layer reads the answer whole, and a streamed token costs ~30x
        # the client CPU of a non-streamed one. The tag keeps the answer itself out of
        # stream_mode="messages" too.
        tags=[TAG_NOSTREAM],
        stream=False,
        deadline_s=ctx.layer_deadline,
        sent=sent,
        # The same model listed twice is two samples: the call cache keeps them apart.
        sample=specs[: task["index"]].count(spec),
    )
    try:
        # Cut by the layer's quorum or straggler grace (nodes/models/quorum.py), if at all.
        key = _layer_run(runtime, task["layer"])
        result = await quorum_call(ctx, task["layer"], key, call, lambda: sent.count)
    except CallFailedError as exc:
        record["latency_s"], record["attempts"] = exc.latency_s, exc.attempts
        record["error"] = exc.info()
    else:
        record["text"], record["usage"] = result.text, usage_of(result.message)
        record["latency_s"], record["attempts"] = result.latency_s, result.attempts
    # Progress for the CLI and Studio (stream_mode="custom"); a no-op when nobody listens.
    get_stream_writer()({"event": "proposal", **record})
    return {"proposals": [record]}

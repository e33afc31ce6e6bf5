"""The aggregator node: writes the final answer, streamed token by token."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.runtime import Runtime
from langgraph.types import Overwrite
from typing_extensions import TypedDict

from nodes.calls import CallFailedError, call_model
from nodes.context import Context
from nodes.conversation import with_system
from nodes.errors import AggregatorError
from nodes.presets import resolve_context
from nodes.providers import chat_model
from nodes.records import Answer, usage_of

# Tag on the aggregator's model call: filter stream_mode="messages" chunks on it
# (or on metadata["langgraph_node"] == "aggregate") to show only the final answer.
ANSWER_TAG = "moa:answer"


class AggregateInput(TypedDict):
    messages: list[AnyMessage]
    aggregation_prompt: str | None


async def aggregate(state: AggregateInput, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = resolve_context(runtime.context)
    spec = ctx.aggregator
    # With layers=1 there are no proposals: the aggregator answers alone.
    system = state.get("aggregation_prompt") if ctx.layers > 1 else None
    try:
        result = await call_model(
            chat_model(spec, ctx),
            with_system(state["messages"], system),
            timeout=spec.timeout or ctx.timeout,
            max_attempts=ctx.max_attempts,
            tags=[ANSWER_TAG],
        )
    except CallFailedError as exc:
        raise AggregatorError(
            f"aggregator {spec.model} failed after {exc.attempts} attempt(s): {exc.message}"
        ) from None
    if not result.text.strip():
        raise AggregatorError(f"aggregator {spec.model} answered with empty text")
    usage = usage_of(result.message)
    # Same id as the streamed chunks, so stream_mode="messages" does not emit it twice.
    answer = AIMessage(
        content=result.text,
        id=result.message.id,
        usage_metadata=result.message.usage_metadata,
        response_metadata={"model": spec.model},
    )
    update: dict[str, Any] = {
        "messages": [answer],
        "answer": Answer(
            model=spec.model,
            usage=usage,
            latency_s=result.latency_s,
            ttft_s=result.ttft_s,
            attempts=result.attempts,
        ),
        "aggregation_prompt": None,
    }
    if ctx.layers == 1:
        update["layers"] = Overwrite([])
    return update

"""The aggregator node: writes the final answer, streamed token by token to whoever reads it.

Streamed only when someone reads the tokens (``stream_mode="messages"``, as ``moa`` does); a run
nobody streams (``ainvoke``, batch) makes one plain request and pays no per-token work.

Failure policy: the aggregator's call is retried like any call (nodes/models/calls.py). A retry
after tokens were already streamed continues the answer where it broke off (provider
continuation or its fallback, nodes/models/continuation.py): stream consumers get a custom event
``{"event": "answer_retry", "continues": true, ...}`` and then the rest of the answer, in chunks
with a new message id; the answer in state is the whole text. A run that binds tools or a
response format cannot continue a cut answer: its retry starts the answer over
(``"continues": false``). When the aggregator still fails, or answers with empty text,
``Context.fallback_aggregator`` (if set) answers instead, announced by
``{"event": "answer_fallback", ...}`` (continuing what the failed aggregator streamed, if any)
and recorded in ``Answer.fallback`` and ``Answer.aggregator_failure``. Otherwise the run fails
with ``AggregatorError``; an empty answer is never returned as a success.

Tools (nodes/models/tools.py): a run with a binding asks the aggregator bound to its tools and
response format; its answer may be tool calls, kept as the answer message's ``tool_calls``. A
call of an unknown tool or with arguments that do not match the tool's schema is asked again
with the problem stated (an ``answer_retry`` event of kind ``tool_call``), up to
``Context.max_attempts`` answers; then it is a failure like any other (fallback, or
``AggregatorError``).

Stop sequences (the run's ``stop``, nodes/stops.py) go with the aggregator's requests (never
the proposers'), so its provider stops writing at them; the answer kept is cut before the first
too, whatever the provider did.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NotRequired

from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, StreamWriter
from typing_extensions import TypedDict

from langgraph_moa.nodes.context import Context, ModelSpec
from langgraph_moa.nodes.errors import AggregatorError
from langgraph_moa.nodes.models import CallFailedError, CallResult, ask_model, settings_for
from langgraph_moa.nodes.models.tools import (
    aggregator_note,
    answer_problem,
    correction,
    skips_proposers,
)
from langgraph_moa.nodes.prompts import with_system
from langgraph_moa.nodes.records import (
    Answer,
    CallFailure,
    ErrorKind,
    failure_note,
    usage_of,
)
from langgraph_moa.nodes.stops import StopAt, stops_of

# Tag on the aggregator's model call: filter stream_mode="messages" chunks on it
# (or on metadata["langgraph_node"]: "aggregate", or "staircase_aggregate" with staircase
# streaming) to show only the final answer.
ANSWER_TAG = "moa:answer"


def answer_text(chunk: Any, metadata: Mapping[str, Any]) -> str:
    """The answer's text in one ``stream_mode="messages"`` item ("" for anything else): the one
    filter every consumer of the stream uses (the CLI, the server, ChatMoA)."""
    if ANSWER_TAG in metadata.get("tags", ()) and isinstance(chunk, AIMessageChunk):
        return str(chunk.text)
    return ""


class AggregateInput(TypedDict):
    messages: list[AnyMessage]
    references: list[str] | None
    turn_bind: NotRequired[dict[str, Any] | None]
    turn_stop: NotRequired[list[str] | str | None]


async def _answer(
    spec: ModelSpec,
    ctx: Context,
    state: AggregateInput,
    writer: StreamWriter,
    prefill: str | None = None,
) -> CallResult:
    """One model's answer, or ``CallFailedError`` (an empty answer is a failure too).
    ``prefill``: text already shown that this answer continues (its result excludes it)."""

    def on_retry(
        attempt: int, kind: ErrorKind, message: str, wait_s: float, *, continues: bool = False
    ) -> None:
        writer(
            {
                "event": "answer_retry",
                "model": spec.model,
                "attempt": attempt,
                "kind": kind,
                "message": message,
                "wait_s": wait_s,
                "continues": continues,
            }
        )

    # With layers=1 there are no proposals: the aggregator answers alone.
    references = state.get("references") if ctx.layers > 1 else None
    bind = state.get("turn_bind")
    messages = with_system(state["messages"], aggregator_note(bind))
    rejected: list[UsageMetadata] = []  # answers asked again were paid for: counted
    for attempt in range(1, ctx.max_attempts + 1):
        result = await ask_model(
            settings_for(spec, ctx),
            ctx,
            messages,
            references,
            tags=[ANSWER_TAG],
            stream=True,  # token by token when someone reads them (stream_mode="messages")
            on_retry=on_retry,
            bind=bind,
            prefill=prefill,
            stop=stops_of(state.get("turn_stop")),
            checks_calls=True,  # below: a bad answer is asked again
        )
        problem = answer_problem(result.message, bind)
        if problem is None:
            if rejected and result.message.usage_metadata:
                total = functools.reduce(add_usage, rejected, result.message.usage_metadata)
                result.message = result.message.model_copy(update={"usage_metadata": total})
            return result
        if result.message.usage_metadata:
            rejected.append(result.message.usage_metadata)
        if attempt == ctx.max_attempts:
            raise CallFailedError(
                "tool_call", f"{problem} ({attempt} answers)", result.attempts, result.latency_s
            )
        on_retry(attempt, "tool_call", problem, 0.0)
        messages = [*messages, HumanMessage(correction(problem, bind))]
    raise AssertionError("unreachable")


def failed_note(spec: ModelSpec, exc: CallFailedError) -> str:
    return f"{spec.model} failed: {failure_note(exc.message, exc.attempts, exc.latency_s)}"


def call_failure(spec: ModelSpec, exc: CallFailedError) -> CallFailure:
    """The record of ``spec``'s failed call (``Answer.aggregator_failure``, ``AggregatorError``)."""
    return CallFailure(
        model=spec.model,
        error=exc.info(),
        attempts=exc.attempts,
    )


def final_message(
    text: str,
    message_id: str | None,
    usage: Any,
    model: str,
    tool_calls: list[Any] | None = None,
) -> AIMessage:
    """The answer as the conversation keeps it."""
    # Same id as the streamed chunks, so stream_mode="messages" does not emit it twice.
    return AIMessage(
        content=text,
        tool_calls=tool_calls or [],
        id=message_id,
        usage_metadata=usage,
        response_metadata={"model": model},
    )


async def aggregate(state: AggregateInput, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = runtime.context  # resolved by graphs/adapt.py
    writer = get_stream_writer()
    spec, failure, shown = ctx.aggregator, None, ""
    try:
        result = await _answer(spec, ctx, state, writer)
    except CallFailedError as exc:
        fallback = ctx.fallback_aggregator
        failure = call_failure(spec, exc)
        if fallback is None:
            raise AggregatorError(f"aggregator {failed_note(spec, exc)}", [failure]) from None
        shown = exc.shown  # streamed before it failed: the fallback continues it
        writer(
            {
                "event": "answer_fallback",
                "model": fallback.model,
                "failed_model": spec.model,
                "kind": exc.kind,
                "message": exc.message,
                "continues": bool(shown),
            }
        )
        try:
            result = await _answer(fallback, ctx, state, writer, prefill=shown or None)
        except CallFailedError as exc2:
            raise AggregatorError(
                f"aggregator {failed_note(spec, exc)}; "
                f"fallback aggregator {failed_note(fallback, exc2)}",
                [failure, call_failure(fallback, exc2)],
            ) from None
        spec = fallback
    usage = usage_of(result.message)
    answer = final_message(
        StopAt(stops_of(state.get("turn_stop"))).cut(shown + result.text),
        result.message.id,
        result.message.usage_metadata,
        spec.model,
        tool_calls=result.message.tool_calls,
    )
    update: dict[str, Any] = {
        "messages": [answer],
        "answer": Answer(
            model=spec.model,
            usage=usage,
            latency_s=result.latency_s,
            ttft_s=result.ttft_s,
            attempts=result.attempts,
            fallback=failure is not None,
            aggregator_failure=failure,
        ),
        "references": None,
        # Done with: not kept in every later checkpoint of the thread (the next turn's first
        # step writes its own).
        "turn_bind": None,
        "turn_stop": None,
        "staircase": None,  # a record of an earlier staircase turn no longer applies
    }
    if ctx.layers == 1 or skips_proposers(ctx.tool_proposers, state.get("turn_bind")):
        update["layers"] = Overwrite([])
    return update

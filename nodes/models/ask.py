"""Ask one model: the one path every proposer and the aggregator take.

Build (or reuse) the model, fit the request to its context window, answer from the call cache when
one is active (nodes/models/callcache.py), wait for the model's token budget
(nodes/models/limits.py), call it with retries. A 429 pauses the model for every caller.

Stop sequences (the aggregator's: nodes/stops.py) go in the request as LangChain's ``stop``, which
every provider's client sends as its own field (OpenAI-style: ``stop``; llama.cpp's completion
takes it too). A provider that refuses the field (OpenAI's reasoning models answer 400 with
``param: "stop"``) is asked again without it: the caller cuts the answer itself. The refusal is
remembered for the model at its endpoint (nodes/models/resources.py), so its later requests go
without ``stop`` at once instead of paying the refused round trip each time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AnyMessage
from langgraph.constants import TAG_NOSTREAM

from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.models.budget import Counter, bound_tokens, fit_request, request_tokens
from langgraph_moa.nodes.models.cache import chat_model
from langgraph_moa.nodes.models.callcache import active_call_cache, request_key
from langgraph_moa.nodes.models.calls import CallFailedError, CallResult, OnRetry, Sent, call_model
from langgraph_moa.nodes.models.continuation import (
    continuation_tokens,
    continue_request,
    resumer,
)
from langgraph_moa.nodes.models.limits import gate_for
from langgraph_moa.nodes.models.paid import note_paid
from langgraph_moa.nodes.models.resources import RESOURCES
from langgraph_moa.nodes.models.settings import ModelSettings
from langgraph_moa.nodes.models.tools import (
    bound_kwargs,
    calls_tools,
    model_messages,
    tool_call_problem,
)
from langgraph_moa.nodes.records import ErrorKind, Usage, usage_of
from langgraph_moa.nodes.stops import for_provider


async def ask_model(
    settings: ModelSettings,
    ctx: Context,
    messages: Sequence[AnyMessage],
    references: Sequence[str] | None,
    *,
    tags: list[str],
    stream: bool,
    deadline_s: float | None = None,
    on_retry: OnRetry | None = None,
    sample: int = 0,
    bind: Mapping[str, Any] | None = None,
    prefill: str | None = None,
    stop: Sequence[str] = (),
    checks_calls: bool = False,
    sent: Sent | None = None,
) -> CallResult:
    """The model's answer to ``messages``, with ``references`` in the aggregation prompt.

    ``stream``: whether the answer may be streamed. With True it streams when someone reads the
    tokens (LangGraph's ``stream_mode="messages"``) and is one plain request otherwise; with False
    it is always one plain request (a proposer's answer is read whole, by the next layer).
    ``sample`` tells identical proposers of a layer apart in the call cache. ``bind``: tools
    and a response format for the model (nodes/models/tools.py); its answer may then be tool
    calls (``result.message.tool_calls``) instead of text. ``prefill``: the answer written so
    far, to be continued (nodes/models/continuation.py). A streamed answer that may be shown
    (not tagged ``nostream``) and binds nothing is continued where it broke off, not restarted.
    ``stop``: sequences the provider stops at (at most ``MAX_STOPS`` are sent); an answer that
    is empty because it began with one is an answer, not a failure. ``checks_calls``: the caller
    checks the answer's tool calls itself (the aggregator's node, which asks again); otherwise an
    answer calling a tool where ``bind`` allows none (a proposer's, a staircase chunk's) fails
    with kind ``tool_call``: a call is no proposal, and no text. ``sent``: counts the requests
    the call sends (a caller that may cut the call reads them there).

    Raises ``CallFailedError`` when the call fails for good, answers with empty text or calls a
    tool it was not given, and ``ProviderError`` when the model cannot be built (unknown
    provider, missing key).
    """
    model = chat_model(settings, stream=stream)
    bound = bound_kwargs(model, bind, settings.model)
    stops = for_provider(stop)  # asked for: in the cache key, whether the provider takes them
    if stops and not RESOURCES.refuses_stop(settings):
        bound["stop"] = stops
    # Text turns by the context's policy (nodes/history.py), unless the model calls tools.
    conversation = model_messages(messages, ctx.tool_history, bind)
    # Fitted to the model's context window; raises (kind "context") when nothing fits. The
    # answer so far (a continuation) is added after fitting, and the bound tools and response
    # format go beside the messages: their tokens are kept free (references trimmed for them).

    def added(count: Counter) -> int:
        extra = sum(bound_tokens(bind, count).values())
        return extra + (continuation_tokens(settings, prefill, count) if prefill else 0)

    request = fit_request(
        settings, model, conversation, references, ctx.aggregation_prompt, added=added
    )
    resume = None
    if stream and bind is None and TAG_NOSTREAM not in tags:  # shown text cannot be taken back
        template = ctx.aggregation_prompt
        resume = resumer(settings, model, conversation, references, template, prefill)
    if prefill:  # in the request, so in the cache key too
        model, request = continue_request(settings, model, request, prefill)
    cache = active_call_cache()
    key = None
    if cache is not None:
        key = request_key(settings, request, sample=sample, scope=cache[1], bind=bind, stop=stops)
        found = await cache[0].lookup(key)
        if found is not None:
            return found
    sent = sent if sent is not None else Sent()
    gate = gate_for(settings)
    await gate.reserve_tokens(request_tokens(request) + settings.max_tokens)

    def retrying(
        attempt: int, kind: ErrorKind, message: str, wait_s: float, *, continues: bool = False
    ) -> None:
        if kind == "rate_limit":  # the provider said slow down: to every caller of the model
            gate.pause(wait_s)
        if on_retry is not None:
            on_retry(attempt, kind, message, wait_s, continues=continues)

    async def call(bound: Mapping[str, Any]) -> CallResult:
        return await call_model(
            model,
            request,
            timeout=settings.timeout,
            max_attempts=ctx.max_attempts,
            tags=tags,
            retry_base_s=ctx.retry_base_s,
            deadline_s=deadline_s,
            on_retry=retrying,
            bound=bound,
            resume=resume,
            sent=sent,
        )

    usage: Usage | None = None  # unknown unless it answers
    try:
        try:
            result = await call(bound)
        except CallFailedError as exc:
            refusal = _stop_refusal(exc) if "stop" in bound else None
            if refusal is None:
                raise
            if refusal == "unsupported_parameter":
                # The model takes no stop at all. Any other refusal may be of these sequences (a
                # client's, on a server): remembered, it would turn stop off for every caller.
                RESOURCES.note_refuses_stop(settings)
            bound = {k: v for k, v in bound.items() if k != "stop"}
            result = await call(bound)
            result.attempts += exc.attempts  # the refused request was sent too
        usage = usage_of(result.message)
    finally:
        # One rule however the call ends (answered, failed, cut by a quorum, cancelled): the
        # requests it sent were paid.
        note_paid(settings.model, sent.count, usage)
    calls = result.message.tool_calls or result.message.invalid_tool_calls
    if calls and not checks_calls and not calls_tools(bind):
        problem = tool_call_problem(result.message, bind or {}) or "it called a tool"
        raise CallFailedError("tool_call", problem, result.attempts, result.latency_s)
    if not result.text.strip() and not calls and not ("stop" in bound and _at_stop(result)):
        raise CallFailedError(
            "empty", "answered with empty text", result.attempts, result.latency_s
        )
    if cache is not None and key is not None:
        await cache[0].store(key, result)
    return result


def _stop_refusal(exc: CallFailedError) -> str | None:
    """The error's ``code`` ("" if none) if the provider refused the request for its ``stop``
    field (OpenAI's error shape: ``param: "stop"``; its reasoning models answer with the code
    ``unsupported_parameter``), else None."""
    cause = exc.__cause__
    if exc.kind != "client" or cause is None:
        return None
    body = getattr(cause, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    body = body if isinstance(body, dict) else {}
    if getattr(cause, "param", None) != "stop" and body.get("param") != "stop":
        return None
    return str(getattr(cause, "code", None) or body.get("code") or "")


def _at_stop(result: CallResult) -> bool:
    """Whether the provider ended the answer itself (at a stop sequence, for an empty one), not
    by its length limit or a content filter."""
    metadata = result.message.response_metadata or {}
    return metadata.get("finish_reason") == "stop" or metadata.get("stop_reason") == "stop_sequence"

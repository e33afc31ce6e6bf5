"""``GET /v1/models`` and ``POST /v1/chat/completions``: a mixture served as one OpenAI model.

Written with FastAPI and pydantic rather than ``langchain-openai-api-bridge``: the bridge builds
an agent per request from a factory and streams ``astream_events`` (every model call's tokens, the
proposers' included, and no per-run usage), and it has no answer for what a MoA server has to get
right: the answer's tokens only, usage summed over all calls, proposals as ``reasoning_content``,
OpenAI-shaped errors with the right status before and during a stream, a run cancelled when its
client goes away. Those are most of the work; the routes themselves are a few dozen lines.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from sse_starlette import EventSourceResponse, ServerSentEvent

from langgraph_moa.apps.serve.errors import OpenAIError, from_run_error
from langgraph_moa.apps.serve.registry import openai_overrides
from langgraph_moa.apps.serve.requests import check_body, content_text
from langgraph_moa.apps.serve.runs import (
    ClientGoneError,
    RunService,
    RunStream,
    proposal_text,
    run_summary,
    total_usage,
    unless_disconnected,
)
from langgraph_moa.apps.serve.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    ModelCard,
    ModelList,
    ResponseMessage,
    ToolCallDelta,
    ToolCallOut,
    Usage,
    completion_id,
    now,
)
from langgraph_moa.apps.serve.settings import DEFAULT_KEEPALIVE_S
from langgraph_moa.apps.serve.tasks import is_task
from langgraph_moa.core.turns import AnswerRestart, Finished, ProposalDone, Token
from langgraph_moa.nodes.errors import (
    BindOverflowError,
    CapabilityError,
    ConfigError,
    EmptyConversationError,
    UnpairedToolCallError,
)
from langgraph_moa.nodes.history import answerable
from langgraph_moa.nodes.models.bind_fit import check_bind_fits
from langgraph_moa.nodes.models.tools import (
    Bind,
    binding,
    check_capable,
    check_pairs,
    holds_text,
)
from langgraph_moa.nodes.stops import StopAt

# nginx's "client closed request": logged for a request whose client left before the answer.
CLIENT_GONE = 499


def openai_router(
    service: RunService,
    *,
    show_proposals: bool,
    keepalive_s: float = DEFAULT_KEEPALIVE_S,
    task_shortcut: bool = True,
    slot: Callable[..., Any],
) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(check_body)])

    @router.get("/models")
    async def models() -> ModelList:
        created = now()
        return ModelList(data=[ModelCard(id=n, created=created) for n in service.models.names()])

    @router.get("/models/{model_id:path}")
    async def model(model_id: str) -> ModelCard:
        if model_id not in service.models.names():
            raise OpenAIError(
                404,
                f"no model {model_id!r}; this server offers: {', '.join(service.models.names())}",
                param="model",
                code="model_not_found",
            )
        return ModelCard(id=model_id, created=now())

    @router.post("/chat/completions", dependencies=[Depends(slot)], response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        problem = body.unsupported()
        if problem is not None:
            raise OpenAIError(400, problem[1], param=problem[0], code="unsupported")
        messages = to_messages(body.messages)
        if body.tools or body.response_format:
            # Checking the client's JSON schemas takes ~0.35 ms of CPU per property: a 1 MiB
            # body holds some 25,000, seconds of it. In a thread, so the event loop (every other
            # client's stream) goes on meanwhile.
            bind = await asyncio.to_thread(request_binding, body)
        else:
            bind = request_binding(body)  # no schema: tool_choice alone is still checked
        max_tokens = body.max_completion_tokens or body.max_tokens
        param = "model"  # a cap the chosen model exceeds, unless the client's max_tokens does
        if max_tokens is not None and max_tokens > service.caps.tokens:
            param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        overrides = openai_overrides(body.temperature, max_tokens, body.seed, body.staircase)
        if task_shortcut and is_task(messages):
            overrides["layers"] = 1  # a title or tags: the aggregator alone, one call
        name, ctx = service.context(body.model, overrides, "request", param)
        show = show_proposals if body.show_proposals is None else body.show_proposals
        try:  # known before any call: a 400, not an error inside an already-started stream
            check_capable(ctx, bind)
            answerable(messages, ctx.tool_history)
            check_bind_fits(ctx, messages, bind)  # the run's first step checks it too
        except (CapabilityError, EmptyConversationError, BindOverflowError) as exc:
            raise from_run_error(exc) from None
        run = service.start(messages, ctx, bind, body.stop)
        if body.stream:
            # The response starts at once: headers, a comment, then a keep-alive comment every
            # keepalive_s while the mixture works, so proxies and users see the request alive.
            # A run that fails ends the stream with an error event (see _chunks).
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return EventSourceResponse(
                _chunks(
                    run,
                    name,
                    show=show,
                    include_usage=include_usage,
                    tools=bool(body.tools),
                    held=holds_text(bind),
                    stop=StopAt(body.stop),
                ),
                sep="\n",
                ping=keepalive_s,
            )
        try:
            state = await unless_disconnected(request, _final(run))
        except ClientGoneError:
            return Response(status_code=CLIENT_GONE)
        finally:
            await run.aclose()
        answer = _completion(name, state, show).model_dump(exclude_none=True)
        answer["choices"][0]["message"].setdefault("content", None)  # null with tool calls
        return JSONResponse(answer)

    return router


def request_binding(body: ChatCompletionRequest) -> Bind | None:
    """The request's tools and response format, checked (nodes/models/tools.py); a 400 names
    what is wrong."""
    try:
        return binding(
            tools=body.tools,
            tool_choice=body.tool_choice,
            parallel_tool_calls=body.parallel_tool_calls,
            response_format=body.response_format,
        )
    except ConfigError as exc:
        text = str(exc)
        param = next(
            (p for p in ("tool_choice", "response_format", "tools") if text.startswith(p)), "tools"
        )
        raise OpenAIError(400, text, param=param) from None


def to_messages(messages: list[ChatMessage]) -> list[AnyMessage]:
    """The client's conversation as LangChain messages (all of it goes to the graph)."""
    out: list[AnyMessage] = []
    for i, m in enumerate(messages):
        if m.role == "function":
            raise OpenAIError(
                400,
                "legacy 'function' messages are not supported: use tool calls and 'tool' messages",
                param=f"messages[{i}].role",
                code="unsupported",
            )
        text = content_text(m.content, f"messages[{i}].content")
        if m.role in ("system", "developer"):
            out.append(SystemMessage(text))
        elif m.role == "user":
            out.append(HumanMessage(text))
        elif m.role == "tool":
            if not m.tool_call_id:
                raise OpenAIError(
                    400, "a 'tool' message needs tool_call_id", param=f"messages[{i}].tool_call_id"
                )
            out.append(ToolMessage(text, tool_call_id=m.tool_call_id, name=m.name))
        else:
            out.append(AIMessage(text, tool_calls=_tool_calls(m.tool_calls or [], i)))
    try:
        # With tools or without, as OpenAI refuses it. The graph applies the same rule when
        # tools are bound (its aggregator is sent the calls as they are); without tools it
        # sends the models the calls as text, which no provider refuses.
        check_pairs(out)
    except UnpairedToolCallError as exc:
        raise _unpaired(exc) from None
    return out


def _unpaired(exc: UnpairedToolCallError) -> OpenAIError:
    """A 400 in OpenAI's words for a tool call no 'tool' message answers, or a 'tool' message
    that answers no call."""
    ids = ", ".join(map(repr, exc.ids))
    if exc.result:
        return OpenAIError(
            400,
            "a 'tool' message must answer a tool call of the assistant message just before it; "
            f"none has the id {ids}",
            param=f"messages[{exc.message}].tool_call_id",
        )
    if exc.between is not None:
        return OpenAIError(
            400,
            "an assistant message with tool_calls must be followed by a 'tool' message for each "
            f"call, with no other message between; messages[{exc.between}] comes before the "
            f"results of {ids}: move it after them",
            param=f"messages[{exc.between}]",
        )
    return OpenAIError(
        400,
        "an assistant message with tool_calls must be followed by a 'tool' message for each "
        f"call, with no other message between; none answers {ids}",
        param=f"messages[{exc.message}].tool_calls",
    )


def _tool_calls(calls: list[dict[str, Any]], i: int) -> list[Any]:
    """An assistant message's OpenAI tool calls as LangChain's (arguments parsed)."""
    out = []
    for n, call in enumerate(calls):
        function = call.get("function")
        arguments = function.get("arguments") if isinstance(function, dict) else None
        try:
            args = json.loads(arguments or "{}") if isinstance(arguments, str | None) else None
        except (ValueError, RecursionError):  # not JSON, or nested deeper than json parses
            args = None
        if not (
            isinstance(function, dict)
            and isinstance(function.get("name"), str)
            and isinstance(args, dict)
            and isinstance(call.get("id"), str)
        ):
            raise OpenAIError(
                400,
                "a tool call needs an id and a function with a name and JSON object arguments",
                param=f"messages[{i}].tool_calls[{n}]",
            )
        out.append({"name": function["name"], "args": args, "id": call["id"]})
    return out


def _calls_out(message: AIMessage) -> list[ToolCallOut] | None:
    calls = [
        ToolCallOut(
            id=c["id"] or f"call_{i}",
            function=FunctionCall(name=c["name"], arguments=json.dumps(c["args"])),
        )
        for i, c in enumerate(message.tool_calls)
    ]
    return calls or None


async def _final(run: RunStream) -> dict[str, Any]:
    async for event in run:
        if isinstance(event, Finished):
            return event.state
    raise AssertionError("a run ends with Finished or an error")


def _usage(state: dict[str, Any]) -> Usage:
    return Usage(**total_usage(state))


def _completion(name: str, state: dict[str, Any], show: bool) -> ChatCompletion:
    reasoning = None
    if show:
        reasoning = "".join(proposal_text(p) for layer in state.get("layers", []) for p in layer)
    last = state["messages"][-1]
    calls = _calls_out(last)
    message = ResponseMessage(
        content=last.text or (None if calls else ""),  # cut at a stop by the graph
        tool_calls=calls,
        reasoning_content=reasoning,
    )
    return ChatCompletion(
        id=completion_id(),
        created=now(),
        model=name,
        choices=[Choice(message=message, finish_reason="tool_calls" if calls else "stop")],
        usage=_usage(state),
        moa=run_summary(state),
    )


async def _chunks(
    run: RunStream,
    name: str,
    *,
    show: bool,
    include_usage: bool,
    tools: bool = False,
    held: bool = False,
    stop: StopAt | None = None,
) -> AsyncIterator[str | ServerSentEvent]:
    """The SSE ``data:`` payloads of a streamed completion, ending in ``[DONE]``; a failure ends
    the stream with an error payload (the ``openai`` SDK raises it as ``APIError``, and does not
    retry it: one request, one run). ``held``: the answer's text is sent once checked, in one
    chunk (with a response format: a JSON answer asked again must not reach the client's
    parser, as the SDK's ``stream`` helper parses all the text it got). ``stop``: the client's
    stop sequences; the text after one is not sent (the run still finishes, for its usage)."""
    cid, created = completion_id(), now()
    stop = stop or StopAt(())

    def chunk(delta: Delta, finish: Literal["stop", "tool_calls"] | None = None) -> str:
        choice = ChunkChoice(delta=delta, finish_reason=finish)
        body = ChatCompletionChunk(id=cid, created=created, model=name, choices=[choice])
        return body.model_dump_json(exclude_none=True)

    try:
        yield ServerSentEvent(comment="moa: the mixture is running")
        # With tools the answer may be calls only: content stays null then, as OpenAI sends it.
        yield chunk(Delta(role="assistant", content=None if tools else ""))
        async for event in run:
            if isinstance(event, Token):
                text = event.text + run.ready_text()
                if not held and (text := stop.feed(text)):
                    yield chunk(Delta(content=text))
            elif isinstance(event, ProposalDone):
                if show:
                    yield chunk(Delta(reasoning_content=proposal_text(event.record)))
            elif isinstance(event, AnswerRestart):
                # An answer that cannot be continued (tools or a response format bound) starts
                # over; sent text cannot be taken back, so the new one follows a blank line. A
                # broken answer that is continued (AnswerResumed) needs nothing: its rest follows.
                # The new answer is cut by the stop sequences afresh (one the old one reached
                # would otherwise end the stream before it).
                stop = StopAt(stop.stops)
                if event.after_text and not held and (text := stop.feed("\n\n")):
                    yield chunk(Delta(content=text))
            elif isinstance(event, Finished):
                answer = event.state["messages"][-1]
                rest = answer.text if held else stop.flush()  # (the graph cut it at a stop)
                if rest:
                    yield chunk(Delta(content=rest))
                # Tool calls come whole, once the aggregator's answer is checked.
                calls = _calls_out(answer) or []
                if calls:
                    deltas = [ToolCallDelta(index=i, **c.model_dump()) for i, c in enumerate(calls)]
                    yield chunk(Delta(tool_calls=deltas))
                yield chunk(Delta(), finish="tool_calls" if calls else "stop")
                if include_usage:
                    usage = ChatCompletionChunk(
                        id=cid,
                        created=created,
                        model=name,
                        choices=[],
                        usage=_usage(event.state),
                        moa=run_summary(event.state),
                    )
                    yield usage.model_dump_json(exclude_none=True)
                yield "[DONE]"
                return
    except OpenAIError as exc:
        exc.log()
        yield json.dumps(exc.body())
    finally:
        await run.aclose()

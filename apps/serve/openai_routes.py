"""``GET /v1/models`` and ``POST /v1/chat/completions``: a mixture served as one OpenAI model.

Written with FastAPI and pydantic rather than ``langchain-openai-api-bridge``: the bridge builds
an agent per request from a factory and streams ``astream_events`` (every model call's tokens, the
proposers' included, and no per-run usage), and it has no answer for what a MoA server has to get
right: the answer's tokens only, usage summed over all calls, proposals as ``reasoning_content``,
OpenAI-shaped errors with the right status before and during a stream, a run cancelled when its
client goes away. Those are most of the work; the routes themselves are a few dozen lines.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from sse_starlette import EventSourceResponse, ServerSentEvent

from langgraph_moa.apps.serve.errors import OpenAIError
from langgraph_moa.apps.serve.registry import openai_overrides
from langgraph_moa.apps.serve.requests import check_body, content_text, tool_turns_refusal
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
    ModelCard,
    ModelList,
    ResponseMessage,
    Usage,
    completion_id,
    now,
)
from langgraph_moa.apps.serve.settings import DEFAULT_KEEPALIVE_S
from langgraph_moa.apps.serve.tasks import is_task
from langgraph_moa.core.turns import AnswerRestart, Finished, ProposalDone, Token

# nginx's "client closed request": logged for a request whose client left before the answer.
CLIENT_GONE = 499


def openai_router(
    service: RunService,
    *,
    show_proposals: bool,
    keepalive_s: float = DEFAULT_KEEPALIVE_S,
    task_shortcut: bool = True,
    auth: Callable[..., Any],
    slot: Callable[..., Any],
) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(auth), Depends(check_body)])

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
        max_tokens = body.max_completion_tokens or body.max_tokens
        param = "model"  # a cap the chosen model exceeds, unless the client's max_tokens does
        if max_tokens is not None and max_tokens > service.caps.tokens:
            param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        overrides = openai_overrides(body.temperature, max_tokens, body.seed)
        if task_shortcut and is_task(messages):
            overrides["layers"] = 1  # a title or tags: the aggregator alone, one call
        name, ctx = service.context(body.model, overrides, "request", param)
        show = show_proposals if body.show_proposals is None else body.show_proposals
        run = service.start(messages, ctx)
        if body.stream:
            # The response starts at once: headers, a comment, then a keep-alive comment every
            # keepalive_s while the mixture works, so proxies and users see the request alive.
            # A run that fails ends the stream with an error event (see _chunks).
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return EventSourceResponse(
                _chunks(run, name, show=show, include_usage=include_usage),
                sep="\n",
                ping=keepalive_s,
            )
        try:
            state = await unless_disconnected(request, _final(run))
        except ClientGoneError:
            return Response(status_code=CLIENT_GONE)
        finally:
            await run.aclose()
        return JSONResponse(_completion(name, state, show).model_dump(exclude_none=True))

    return router


def to_messages(messages: list[ChatMessage]) -> list[AnyMessage]:
    """The client's conversation as LangChain messages (all of it goes to the graph)."""
    out: list[AnyMessage] = []
    for i, m in enumerate(messages):
        if m.role in ("tool", "function") or m.tool_calls:
            raise tool_turns_refusal(f"messages[{i}]")
        text = content_text(m.content, f"messages[{i}].content")
        if m.role in ("system", "developer"):
            out.append(SystemMessage(text))
        elif m.role == "user":
            out.append(HumanMessage(text))
        else:
            out.append(AIMessage(text))
    return out


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
    message = ResponseMessage(content=state["messages"][-1].text, reasoning_content=reasoning)
    return ChatCompletion(
        id=completion_id(),
        created=now(),
        model=name,
        choices=[Choice(message=message)],
        usage=_usage(state),
        moa=run_summary(state),
    )


async def _chunks(
    run: RunStream, name: str, *, show: bool, include_usage: bool
) -> AsyncIterator[str | ServerSentEvent]:
    """The SSE ``data:`` payloads of a streamed completion, ending in ``[DONE]``; a failure ends
    the stream with an error payload (the ``openai`` SDK raises it as ``APIError``, and does not
    retry it: one request, one run)."""
    cid, created = completion_id(), now()

    def chunk(delta: Delta, finish: bool = False) -> str:
        choice = ChunkChoice(delta=delta, finish_reason="stop" if finish else None)
        body = ChatCompletionChunk(id=cid, created=created, model=name, choices=[choice])
        return body.model_dump_json(exclude_none=True)

    streamed = False  # answer text sent since the answer last (re)started
    try:
        yield ServerSentEvent(comment="moa: the mixture is running")
        yield chunk(Delta(role="assistant", content=""))
        async for event in run:
            if isinstance(event, Token):
                yield chunk(Delta(content=event.text + run.ready_text()))
                streamed = True
            elif isinstance(event, ProposalDone):
                if show:
                    yield chunk(Delta(reasoning_content=proposal_text(event.record)))
            elif isinstance(event, AnswerRestart):
                # Sent text cannot be taken back: the new answer follows after a blank line.
                if streamed:
                    yield chunk(Delta(content="\n\n"))
                streamed = False
            elif isinstance(event, Finished):
                yield chunk(Delta(), finish=True)
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

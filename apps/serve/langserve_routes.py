"""``/moa/invoke``, ``/moa/batch``, ``/moa/stream`` and ``/moa/playground`` from LangServe.

LangServe (in maintenance upstream; ``langgraph.json`` with ``langgraph dev`` or LangGraph
Platform is the maintained way to deploy the graph) cannot serve the graph as it is: it passes no
``context=`` (so no run settings), and its ``/stream_events`` fails on graphs that fan out with
``Send``. So the routes serve ``MoARunnable``, a small runnable around the graph:

- its input is the conversation plus optional run settings (a preset name, ``Context`` fields),
  validated when the request is read, so bad settings are a 400 before anything streams;
- it turns the settings into ``context=`` and runs the graph through ``RunStream`` (the path the
  OpenAI routes use: same limits, same cancellation when a client goes away);
- it streams the answer's tokens only (``AIMessageChunk``), then one empty chunk carrying the
  run's summed usage; ``invoke`` returns the answer as an ``AIMessage`` with that usage.

The graph runs in a fresh context, not as a traced child of the runnable: LangServe's
``/stream_log`` (which the playground reads) would otherwise carry the graph's ``Send`` objects,
which it cannot serialise.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list
from langserve import add_routes
from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema
from sse_starlette import ServerSentEvent
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from langgraph_moa.apps.serve.errors import OpenAIError, from_run_error
from langgraph_moa.apps.serve.playground import playground_file
from langgraph_moa.apps.serve.requests import content_text, langserve_check
from langgraph_moa.apps.serve.runs import RunService, run_summary, total_usage
from langgraph_moa.core.turns import AnswerRestart, Finished, Token
from langgraph_moa.nodes.errors import EmptyConversationError
from langgraph_moa.nodes.history import answerable

PATH = "/moa"


def _no_default(schema: dict[str, Any]) -> None:
    # Nor "default": null, which the playground's form would fill in and then refuse.
    schema.pop("default", None)


class _TypeRequired:
    """Marks each message schema's ``type`` required, as validation does: the union is told
    apart by it, so a message without it is a 400. Pydantic's schema leaves it optional (it has
    a default), so the ``oneOf`` branches overlap and a message without ``type`` matches several
    at once: a schema no request can satisfy as written, on which schema-driven clients and
    fuzzers (schemathesis: health check ``filter_too_much``) reject most of what they build."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        for branch in schema.get("oneOf", ()):
            # The message's own definition (shared with the response schemas, where LangServe
            # always sends the type).
            message = handler.resolve_ref_schema(branch)
            if "type" in message.get("properties", {}):
                required = message.setdefault("required", [])
                if "type" not in required:
                    required.append("type")
        return schema


def input_type(service: RunService) -> type[BaseModel]:
    """The input schema, checking the preset and settings against this server's models."""

    class MoAInput(BaseModel):
        """A conversation for Mixture-of-Agents, with optional run settings."""

        model_config = ConfigDict(extra="forbid")

        messages: list[Annotated[AnyMessage, _TypeRequired()]] = Field(
            min_length=1, description="The conversation, newest user message last."
        )
        # Optional without "null" in the JSON schema (SkipJsonSchema, _no_default): LangServe's
        # playground cannot render a nullable field ("Unknown type: {"type":"null"}": a blank
        # page).
        preset: str | SkipJsonSchema[None] = Field(
            default=None,
            json_schema_extra=_no_default,
            description="A model of this server by the name GET /v1/models lists (a preset, or "
            "the server's config); default: the server's.",
        )
        settings: dict[str, Any] | SkipJsonSchema[None] = Field(
            default=None,
            json_schema_extra=_no_default,
            description="Context fields that change the preset's settings for this run, e.g. "
            '{"layers": 3, "temperature": 0.2} (see nodes/context.py).',
        )

        @model_validator(mode="after")
        def _known(self) -> MoAInput:
            for i, message in enumerate(self.messages):  # what /v1 refuses, refused here too
                content_text(message.content, f"messages[{i}].content")
            _, ctx = service.context(self.preset, self.settings or {}, "settings")  # or a 400
            try:
                answerable(self.messages, ctx.tool_history)
            except EmptyConversationError as exc:  # a 400 here, not mid-stream
                raise from_run_error(exc) from None
            return self

    return MoAInput


class MoARunnable(Runnable[dict[str, Any], AIMessage]):
    """The graph as LangServe can serve it: settings from the input, the answer's tokens out."""

    def __init__(self, service: RunService) -> None:
        self.service = service
        self.name = "moa"
        self._input_type = input_type(service)

    @property
    def InputType(self) -> type[BaseModel]:  # type: ignore[override]
        # A pydantic model (LangServe's input schema) for what reaches the runnable as a dict.
        return self._input_type

    @property
    def OutputType(self) -> type[AIMessage]:
        return AIMessage

    def invoke(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        raise NotImplementedError("MoARunnable runs on the server's event loop: use ainvoke")

    async def ainvoke(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        return await self._acall_with_config(self._answer, input, config)

    async def abatch(  # type: ignore[override]
        self,
        inputs: list[dict[str, Any]],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage | Exception]:
        """Every input's run at once; returns only once every run has ended.

        Without ``return_exceptions`` (LangServe's ``/batch``: ``RemoteRunnable.batch`` cannot
        ask for it) the first failure cancels the other runs: the response is that one error,
        so their answers would reach nobody, yet be paid for. LangChain's default ``abatch``
        raises the first error while the others run on (``asyncio.gather``), past the response
        and past the run slots the request held. With ``return_exceptions`` every run finishes
        and each input gets its answer or its error.
        """
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        tasks = [
            asyncio.ensure_future(self.ainvoke(i, c)) for i, c in zip(inputs, configs, strict=True)
        ]
        until = asyncio.ALL_COMPLETED if return_exceptions else asyncio.FIRST_EXCEPTION
        try:
            ended, _ = await asyncio.wait(tasks, return_when=until)
        finally:
            await _end_all(tasks)
        if return_exceptions:
            return [_outcome(t) for t in tasks]
        # A failure from before the others were cancelled: the cause, not what a cancelled
        # sibling raised on its way out (which an input-order pick could report instead).
        for task in tasks:
            if task in ended and not task.cancelled() and (error := task.exception()):
                raise error
        return [t.result() for t in tasks]

    async def astream(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessage]:
        async def one() -> AsyncIterator[dict[str, Any]]:
            yield input

        async for chunk in self._atransform_stream_with_config(one(), self._tokens, config):
            yield chunk

    def _start(self, input: dict[str, Any]) -> Any:
        messages: list[AnyMessage] = list(input["messages"])
        _, ctx = self.service.context(input.get("preset"), input.get("settings") or {}, "settings")
        return self.service.start(messages, ctx)

    async def _answer(self, input: dict[str, Any]) -> AIMessage:
        run = self._start(input)
        try:
            async for event in run:
                if isinstance(event, Finished):
                    return _message(event.state)
        finally:
            await run.aclose()
        raise AssertionError("a run ends with Finished or an error")

    async def _tokens(self, inputs: AsyncIterator[dict[str, Any]]) -> AsyncIterator[AIMessageChunk]:
        async for input in inputs:
            run = self._start(input)
            try:
                async for event in run:
                    if isinstance(event, Token):
                        yield AIMessageChunk(content=event.text + run.ready_text())
                    elif isinstance(event, AnswerRestart):
                        if event.after_text:  # as on the OpenAI route (a bound answer)
                            yield AIMessageChunk(content="\n\n")
                    elif isinstance(event, Finished):
                        final = _message(event.state)
                        yield AIMessageChunk(
                            content="",
                            usage_metadata=final.usage_metadata,
                            response_metadata=final.response_metadata,
                        )
            finally:
                await run.aclose()


async def _end_all(tasks: Sequence[asyncio.Future[AIMessage]]) -> None:
    """Cancel the runs still going and wait until each has ended (its provider calls closed),
    even if this wait is itself cancelled meanwhile (a client that left): the request's run
    slots are held until then, so they never count fewer runs than are going."""
    for task in tasks:
        task.cancel()
    pending = {t for t in tasks if not t.done()}
    interrupted = False
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError


def _outcome(task: asyncio.Future[AIMessage]) -> AIMessage | Exception:
    if task.cancelled():  # only when the whole batch was, which _end_all raised
        raise asyncio.CancelledError
    error = task.exception()
    if error is None:
        return task.result()
    return error if isinstance(error, Exception) else RuntimeError(repr(error))


def _message(state: dict[str, Any]) -> AIMessage:
    usage = total_usage(state)
    return AIMessage(
        content=state["messages"][-1].text,
        usage_metadata={
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
        },
        response_metadata={
            "model_name": (state.get("answer") or {}).get("model"),
            "moa": run_summary(state),
        },
    )


# What LangServe's /stream and /stream_log send for any failure, whatever it was (its internals:
# tests/test_private_apis.py fails if the event changes, which would bring back the bare 500).
_GENERIC_ERROR = {"status_code": 500, "message": "Internal Server Error"}


class StreamErrors:
    """Pure ASGI middleware: a LangServe stream whose run fails ends with the run's own error,
    cleanly.

    LangServe's ``/stream`` and ``/stream_log`` answer every failure with the same event,
    ``event: error`` ``{"status_code": 500, "message": "Internal Server Error"}``, then raise
    the error again, after their response has started: Starlette can only raise it on, the
    chunked body is never ended (clients see an incomplete read), and the log says only that a
    response had already started. So ``RemoteRunnable.stream`` raised a 500 where ``invoke`` of
    the same input got the 502 ``proposers_failed`` with its message.

    Here that event is held back until the error it stands for comes up; it is then replaced by
    an error event carrying the run's status, and as its message the very body ``/invoke``
    answers (``{"error": {"message", "type", "param", "code"}}``, so ``RemoteRunnable``'s
    ``HTTPStatusError`` is the same for ``invoke`` and ``stream``: ``e.response.status_code``,
    ``e.response.json()``). ``/stream_log`` first adds that body to the run's streamed output
    (a last item, ``{"error": {...}}``, not a message chunk): LangServe's playground reads only
    data events, and shows the streamed output. Then the body ends, and the error is logged
    once (a 5xx, as on ``/v1``).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path.startswith(f"{PATH}/") and path.endswith(("/stream", "/stream_log"))):
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        ended = False

        async def sent(message: Message) -> None:
            nonlocal held, ended
            if message["type"] == "http.response.body":
                if _is_generic_error(message.get("body", b"")):
                    held = message  # until the error it stands for is known
                    return
                ended = not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, receive, sent)
        except Exception as exc:
            if held is None or ended:
                raise  # not a failed run's stream: ShieldErrors answers it
            error = from_run_error(_cause(exc))
            error.log()
            events = [_error_event(error)]
            if path.endswith("/stream_log"):
                events.insert(0, _output_patch(error))
            await send({"type": "http.response.body", "body": b"".join(events), "more_body": False})
            return
        if held is not None and not ended:  # no error followed it: send it as it was
            await send(held)


def _is_generic_error(body: bytes) -> bool:
    if not body.startswith(b"event: error"):  # every chunk of every stream: the cheap test first
        return False
    lines = body.decode("utf-8", "replace").splitlines()
    if not lines or lines[0] != "event: error":
        return False
    data = "".join(line.removeprefix("data: ") for line in lines[1:] if line.startswith("data: "))
    try:
        return bool(json.loads(data) == _GENERIC_ERROR)
    except ValueError:
        return False


def _cause(exc: Exception) -> BaseException:
    """The error a stream raised, under Starlette's "response already started" RuntimeError
    (its internals: tests/test_private_apis.py fails if it stops raising it ``from`` the error)."""
    cause = exc.__cause__
    if type(exc) is RuntimeError and isinstance(cause, Exception):
        return cause
    return exc


def _error_event(error: OpenAIError) -> bytes:
    data = {"status_code": error.status, "message": json.dumps(error.body())}
    return ServerSentEvent(event="error", data=json.dumps(data)).encode()


def _output_patch(error: OpenAIError) -> bytes:
    patch = {"ops": [{"op": "add", "path": "/streamed_output/-", "value": error.body()}]}
    return ServerSentEvent(event="data", data=json.dumps(patch)).encode()


def add_moa_routes(app: FastAPI, service: RunService, *, slot: Callable[..., Any]) -> None:
    runnable = MoARunnable(service)
    add_routes(
        app,
        runnable,
        path=PATH,
        # /stream_events fails on graphs with Send (langserve#721); the rest is what the issue
        # and the playground need.
        enabled_endpoints=(
            "invoke",
            "batch",
            "stream",
            "stream_log",
            "playground",
            "input_schema",
            "output_schema",
            "config_schema",
        ),
        dependencies=[
            Depends(playground_file),
            Depends(langserve_check(runnable.InputType)),
            Depends(slot),
        ],
    )

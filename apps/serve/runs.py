"""Runs of the graph on behalf of HTTP requests, and what every route needs to know about them.

A ``RunStream`` runs the graph (through ``core.turns.run_events``, the driver the CLI uses) in a
task of its own and hands its events over a bounded queue. Closing it cancels the task, which
cancels the graph's running nodes and so closes their open HTTP requests to the providers: a
client that goes away stops the providers' generation (and billing). The run lives in its own task
so that the route can wait for its first event before choosing the HTTP status, and then stream
the rest from the response's task (an async generator must not move between tasks: LangGraph
keeps per-run context variables).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

from langchain_core.messages import AnyMessage
from starlette.requests import Request

from langgraph_moa.apps.serve import caps
from langgraph_moa.apps.serve.errors import OpenAIError, from_run_error
from langgraph_moa.apps.serve.registry import ModelRegistry, with_overrides
from langgraph_moa.apps.serve.settings import DEFAULT_MAX_RUN_S
from langgraph_moa.core.settings import preflight
from langgraph_moa.core.turns import Finished, RunEvent, Token, run_events
from langgraph_moa.graphs import graph
from langgraph_moa.nodes import records
from langgraph_moa.nodes.caps import Caps
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.errors import MoAError

T = TypeVar("T")
# Events buffered between the run and a slow client; past it the run waits for the client.
QUEUE_SIZE = 256


class RunStream:
    """One run in its own task; iterate it for its events (it ends after ``Finished``).

    An error of the run is raised by the iteration as an ``OpenAIError`` (status and message
    chosen by ``errors.from_run_error``).
    """

    def __init__(
        self,
        messages: list[AnyMessage],
        ctx: Context,
        live: set[RunStream],
        max_run_s: float = DEFAULT_MAX_RUN_S,
        bind: Mapping[str, Any] | None = None,
        stop: Sequence[str] = (),
    ) -> None:
        self._queue: asyncio.Queue[RunEvent | BaseException] = asyncio.Queue(QUEUE_SIZE)
        self._held: RunEvent | BaseException | None = None  # read by ready_text, not yet given
        self._done = False
        self._live = live
        live.add(self)
        # A fresh context: the run is nobody's child run (see langserve_routes.py) and inherits
        # nothing from the request that started it.
        self._task = asyncio.create_task(
            self._pump(messages, ctx, max_run_s, bind, stop), context=contextvars.Context()
        )

    async def _pump(
        self,
        messages: list[AnyMessage],
        ctx: Context,
        max_run_s: float,
        bind: Mapping[str, Any] | None,
        stop: Sequence[str],
    ) -> None:
        deadline = asyncio.timeout(max_run_s)
        try:
            async with deadline:
                async for event in run_events(graph, messages, ctx, bind=bind, stop=stop):
                    await self._queue.put(event)
        except TimeoutError as exc:
            if not deadline.expired():
                await self._queue.put(exc)
                return
            late = OpenAIError(
                504,
                f"the run took longer than this server's limit of {max_run_s:g} s (moa serve "
                "--max-run-time) and was stopped: a provider is not answering",
                code="run_timeout",
            )
            await self._queue.put(late)
        except Exception as exc:  # handed to the reader, who answers it
            await self._queue.put(exc)

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> RunEvent:
        if self._done:
            raise StopAsyncIteration
        if self._held is not None:
            item, self._held = self._held, None
        else:
            item = await self._queue.get()
        if isinstance(item, BaseException):
            self._done = True
            raise from_run_error(item)
        if isinstance(item, Finished):
            self._done = True
        return item

    def ready_text(self) -> str:
        """The answer text of the ``Token`` events already waiting, without waiting for more.

        A client (or a server) that falls behind the model then gets the backlog in one chunk
        instead of one chunk per token, so neither side spends its CPU on a queue of tiny
        chunks; one that keeps up still gets every token as soon as it comes.
        """
        parts: list[str] = []
        while self._held is None and not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, Token):
                parts.append(item.text)
            else:
                self._held = item
        return "".join(parts)

    async def aclose(self) -> None:
        """Cancel the run if it is still going and wait until its calls are closed."""
        self._live.discard(self)
        if not self._task.done():
            self._task.cancel()
            # asyncio.wait, not gather: a caller cancelled while it waits (anyio re-cancels its
            # tasks until they finish) must not cancel the run again, which would cut short
            # LangGraph's own clean-up and leave the node's provider call running.
            await asyncio.wait({self._task})


class RunService:
    """Starts runs for the routes: the models on offer and the runs in flight."""

    def __init__(
        self, models: ModelRegistry, caps: Caps | None = None, max_run_s: float = DEFAULT_MAX_RUN_S
    ) -> None:
        self.models = models
        self.caps = caps or Caps()
        self.max_run_s = max_run_s
        self.live: set[RunStream] = set()

    def context(
        self, model: str | None, overrides: dict[str, Any], source: str, param: str | None = None
    ) -> tuple[str, Context]:
        """The run's settings: the model's with the request's ``overrides``, within the caps (a
        400 naming ``param``, default ``source``, past one)."""
        name, base = self.models.context(model)
        ctx = with_overrides(base, overrides, source)
        caps.check(ctx, self.caps, param or source)
        return name, ctx

    def start(
        self,
        messages: list[AnyMessage],
        ctx: Context,
        bind: Mapping[str, Any] | None = None,
        stop: Sequence[str] = (),
    ) -> RunStream:
        """The run of ``messages``; ``bind`` and ``stop`` are the aggregator's (tools and
        response format, stop sequences)."""
        try:
            preflight(ctx)  # an unknown provider or a key the server lacks: before any call
        except MoAError as exc:
            raise from_run_error(exc) from None
        return RunStream(messages, ctx, self.live, self.max_run_s, bind, stop)

    async def close_all(self) -> None:
        """Cancel every run still in flight (server shutdown, after the grace period)."""
        await asyncio.gather(*(run.aclose() for run in list(self.live)))


def total_usage(state: Mapping[str, Any]) -> dict[str, int]:
    """Tokens of every call of the run: all proposers of every layer and the aggregator."""
    usage = records.total_usage(state.get("layers", []), state.get("answer"))
    return {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["input_tokens"] + usage["output_tokens"],
    }


def run_summary(state: Mapping[str, Any]) -> dict[str, Any]:
    """MoA's own part of a response: who wrote the answer, and calls and tokens per model."""
    answer = state.get("answer") or {}
    return {
        "aggregator": answer.get("model"),
        "fallback": bool(answer.get("fallback")),
        "usage_by_model": records.usage_by_model(state.get("layers", []), state.get("answer")),
    }


def proposal_text(record: Mapping[str, Any]) -> str:
    """One finished proposer call as reasoning text."""
    head = f"[layer {record['layer']} · {record['model']} · {record['latency_s']:.1f} s]"
    error = record.get("error") or {}
    body = record["text"] if record.get("text") is not None else f"(failed: {error.get('message')})"
    return f"{head}\n{body}\n\n"


class ClientGoneError(Exception):
    """The client disconnected while the route was waiting."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``await work``, unless the client disconnects first (then ``ClientGoneError``).

    Starlette notices a disconnect only when it next sends; a MoA run may send nothing for the
    seconds its proposers take, so the route listens for the disconnect message itself.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watch.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise ClientGoneError


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass

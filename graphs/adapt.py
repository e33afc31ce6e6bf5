"""How the nodes are put into a graph: the run's settings resolved once, and a sync face.

Every node and router of the MoA graph is added through ``adapt``, which

- resolves the run's context once per call (``resolve_context``): a ``Context``, a dict of its
  fields, a parent graph's own context carrying MoA settings in a ``moa`` field, or nothing, in
  which case the graph's own defaults apply (``build_moa_graph(context=...)``, else the default
  preset). So MoA runs as a subgraph of a parent whose context has nothing to do with it;
- gives the async node a synchronous twin, so ``invoke``/``stream``/``batch`` work as well as
  their async forms. The twin runs the async node on one background event loop shared by the
  process (``_portal``), with the caller's context variables (LangGraph's stream writer and
  callbacks), so streaming works from sync callers too and the per-loop model cache stays warm.
  Written here because no library does both: anyio's blocking portal does not carry the
  caller's context variables into the task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from langgraph._internal._runnable import RunnableCallable
from langgraph.runtime import Runtime

from langgraph_moa.nodes.context import Context, resolve_context

AsyncNode = Callable[[Any, Runtime[Context]], Awaitable[Any]]
# Checks a run's resolved context before the node sees it (the unrolled graph's shape check).
Check = Callable[[Context], None]

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _portal() -> asyncio.AbstractEventLoop:
    """The background event loop sync callers' nodes run on (started on first use)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="moa-sync", daemon=True).start()
        return _loop


def run_sync(coroutine: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``coroutine()`` on the portal loop with this thread's context variables; wait."""
    loop, context = _portal(), contextvars.copy_context()
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def finish(task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            done.cancel()
        elif (error := task.exception()) is not None:
            done.set_exception(error)
        else:
            done.set_result(task.result())

    def start() -> None:
        loop.create_task(_call(coroutine), context=context).add_done_callback(finish)

    loop.call_soon_threadsafe(start)
    return done.result()


async def _call(coroutine: Callable[[], Awaitable[Any]]) -> Any:
    return await coroutine()


def adapt(node: AsyncNode, default: Context | None, check: Check | None = None) -> Any:
    """``node`` as a graph node or router: context resolved, usable sync and async."""

    async def afunc(state: Any, runtime: Runtime[Context]) -> Any:
        ctx = resolve_context(runtime.context, default)
        if check is not None:
            check(ctx)
        return await node(state, runtime.override(context=ctx))

    def func(state: Any, runtime: Runtime[Context]) -> Any:
        return run_sync(lambda: afunc(state, runtime))

    # LangGraph passes ``runtime`` to a node whose signature asks for it.
    func.__signature__ = afunc.__signature__ = inspect.signature(node)  # type: ignore[attr-defined]
    return RunnableCallable(func, afunc, name=node.__name__)

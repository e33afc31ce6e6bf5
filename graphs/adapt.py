"""How the nodes are put into a graph: the run's settings resolved once, and a sync face.

Every node and router of the MoA graph is added through ``adapt``, which

- resolves the run's context once per call (``resolve_context``): a ``Context``, a dict of its
  fields, a parent graph's own context carrying MoA settings in a ``moa`` field, or nothing, in
  which case the graph's own defaults apply (``build_moa_graph(context=...)``, else the default
  preset). So MoA runs as a subgraph of a parent whose context has nothing to do with it;
- refuses a ``moa batch --server`` run the server started again on its own, before any model
  is paid (graphs/retried.py);
- gives the async node a synchronous twin, so ``invoke``/``stream``/``batch`` work as well as
  their async forms. The twin runs the async node on one background event loop shared by the
  process (``RESOURCES.portal()``, nodes/models/resources.py) with the stdlib's
  ``asyncio.run_coroutine_threadsafe``, which carries the caller's context variables (LangGraph's
  stream writer and callbacks) into the task, so streaming works from sync callers too and the
  per-loop clients stay warm. When the waiting thread gives up (Ctrl-C, an exception raised into
  it), the task is cancelled and its provider requests closed before the error goes on, as
  ``ainvoke`` does when it is cancelled. That thread is the caller's own when a step has one task
  (the aggregator, join, a one-proposer layer). The tasks of a wider layer wait in LangGraph's
  worker threads, which nothing interrupts: LangGraph's sync runner waits for them to end before
  it re-raises (there is no hook to cancel them), so to cancel a run mid-layer, run it with
  ``ainvoke``/``astream``.

Nodes and routers read the resolved ``Context`` from ``runtime.context``: they never resolve it
again, so every node of every graph (graphs/moa.py, unrolled.py, replay.py) is added through here.

``RunnableCallable`` is LangGraph's own node wrapper (``langgraph._internal``): the one place the
project uses it, because it is what gives a node both a sync and an async function and still
passes it ``runtime``; tests/test_private_apis.py fails if it changes. It never reaches users.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from langgraph._internal._runnable import RunnableCallable
from langgraph.runtime import Runtime

from langgraph_moa.graphs.retried import refuse_retried_batch_run
from langgraph_moa.nodes.context import Context, resolve_context
from langgraph_moa.nodes.models.resources import RESOURCES

AsyncNode = Callable[[Any, Runtime[Context]], Awaitable[Any]]
# Checks a run's resolved context before the node sees it (the unrolled graph's shape check).
Check = Callable[[Context], None]

T = TypeVar("T")
# How long a sync caller that gave up waits for its cancelled task to close its requests.
CLOSE_WAIT_S = 5.0


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the portal loop with this thread's context variables; wait.

    If the wait ends with an exception (the caller gave up), the task is cancelled, and the
    exception goes on once the task has finished (its requests closed) or ``CLOSE_WAIT_S`` passed.
    """
    finished = threading.Event()
    future = asyncio.run_coroutine_threadsafe(_watched(coroutine, finished), RESOURCES.portal())
    try:
        return future.result()
    except BaseException:
        if future.cancel():
            finished.wait(CLOSE_WAIT_S)
        raise


async def _watched(coroutine: Coroutine[Any, Any, T], finished: threading.Event) -> T:
    try:
        return await coroutine
    finally:
        finished.set()


def adapt(node: AsyncNode, default: Context | None, check: Check | None = None) -> Any:
    """``node`` as a graph node or router: context resolved, usable sync and async."""

    async def afunc(state: Any, runtime: Runtime[Context]) -> Any:
        refuse_retried_batch_run()
        ctx = resolve_context(runtime.context, default)
        if check is not None:
            check(ctx)
        return await node(state, runtime.override(context=ctx))

    def func(state: Any, runtime: Runtime[Context]) -> Any:
        return run_sync(afunc(state, runtime))

    # LangGraph passes ``runtime`` to a node whose signature asks for it.
    func.__signature__ = afunc.__signature__ = inspect.signature(node)  # type: ignore[attr-defined]
    return RunnableCallable(func, afunc, name=node.__name__)

"""How the nodes are put into a graph: the run's settings resolved once, and a sync face.

Every node and router of the MoA graph is added through ``adapt``, which

- resolves the run's context once per call (``resolve_context``): a ``Context``, a dict of its
  fields, a parent graph's own context carrying MoA settings in a ``moa`` field, or nothing, in
  which case the graph's own defaults apply (``build_moa_graph(context=...)``, else the default
  preset). So MoA runs as a subgraph of a parent whose context has nothing to do with it;
- refuses a ``moa batch --server`` run the server started again on its own; on a server, a
  client's context that chooses what only the server may or asks for more than its caps; and,
  in the nodes that start a run (``starts``: those reached from START), a conversation that
  gives the models nothing to answer (``EmptyConversationError``) or holds what they are not
  sent (``UnsupportedContentError``), tool calls and results the aggregator's provider would
  refuse unpaired (``UnpairedToolCallError``), stop sequences of the wrong shape and a client's
  ``bind`` the aggregator would refuse, before any model is paid
  (graphs/retried.py, nodes/untrusted.py, nodes/caps.py, nodes/history.py, nodes/stops.py); and,
  in the nodes after it, the turn's ``turn_bind`` and ``turn_stop`` unless they are what the
  first step checked (a ``Command`` may write them and go past it: ``_check_turn``);
- gives the async node a synchronous twin, so ``invoke``/``stream``/``batch`` work as well as
  their async forms. The twin runs the async node on one background event loop shared by the
  process (``RESOURCES.portal()``, nodes/models/resources.py) with the stdlib's
  ``asyncio.run_coroutine_threadsafe``, which carries the caller's context variables (LangGraph's
  stream writer and callbacks) into the task, so streaming works from sync callers too and the
  per-loop clients stay warm. When the waiting thread gives up (Ctrl-C, an exception raised into
  it), the task is cancelled and its provider requests closed before the error goes on, as
  ``ainvoke`` does when it is cancelled. That thread is the caller's own when LangGraph runs a
  step's one task in it (the aggregator, join, a one-proposer layer). A layer of several
  proposers is waited on in LangGraph's worker threads, which LangGraph waits for before a
  ``KeyboardInterrupt`` goes on: so when a router run in the main thread hands such a layer to
  them, it hands SIGINT to ``RESOURCES.sync_runs`` (nodes/models/sync_runs.py), and Ctrl-C
  cancels the run's tasks. Where no MoA node runs in the main thread (token streaming,
  ``batch``...), the caller opts in: ``cancel_on_interrupt()`` is a scope (a context variable
  LangGraph's workers inherit) whose tasks Ctrl-C or ``scope.cancel()`` cancels; ``cancellable``
  gives MoA's own sync streams (``ChatMoA.stream``) one. What is covered: docs/composition.md,
  "Sync and async".

Nodes and routers read the resolved ``Context`` from ``runtime.context``: they never resolve it
again, so every node of every graph (graphs/moa.py, unrolled.py, replay.py) is added through here.

``RunnableCallable`` is LangGraph's own node wrapper (``langgraph._internal``): the one place the
project uses it, because it is what gives a node both a sync and an async function and still
passes it ``runtime``; tests/test_private_apis.py fails if it changes. It never reaches users.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from langgraph._internal._runnable import RunnableCallable
from langgraph.runtime import RunControl, Runtime

from langgraph_moa.graphs.retried import refuse_retried_batch_run
from langgraph_moa.nodes import caps
from langgraph_moa.nodes.caps import RAISED_BY_ENV
from langgraph_moa.nodes.context import Context, resolve_context
from langgraph_moa.nodes.errors import ClientSettingError, ConfigError
from langgraph_moa.nodes.history import answerable
from langgraph_moa.nodes.models.resources import RESOURCES
from langgraph_moa.nodes.models.sync_runs import CLOSED, CancelScope, cancelled
from langgraph_moa.nodes.models.tools import bind_problem, calls_tools, check_pairs
from langgraph_moa.nodes.resumed import nested
from langgraph_moa.nodes.stops import stops_of
from langgraph_moa.nodes.untrusted import ServerRules, bind_checked, check_bind, check_context

AsyncNode = Callable[[Any, Runtime[Context]], Awaitable[Any]]
# Checks a run's resolved context before the node sees it (the unrolled graph's shape check).
Check = Callable[[Context], None]

T = TypeVar("T")
# How long a sync caller that gave up waits for its cancelled task to close its requests.
CLOSE_WAIT_S = 5.0


def run_sync(coroutine: Coroutine[Any, Any, T], run: RunControl | None = None) -> T:
    """Run ``coroutine`` on the portal loop with this thread's context variables; wait.

    If the wait ends with an exception (this thread gave up, or Ctrl-C or ``scope.cancel()``
    cancelled ``run``'s or the caller's scope's tasks from another thread), the task is cancelled,
    and the exception goes on once the task has finished (its requests closed) or ``CLOSE_WAIT_S``
    passed. Once ``run`` or the scope is cancelled, their tasks do not start:
    ``KeyboardInterrupt`` with the reason (not retried, like the caller's own).
    """
    runs = RESOURCES.sync_runs
    finished = threading.Event()

    def submit() -> Future[T]:
        return asyncio.run_coroutine_threadsafe(_watched(coroutine, finished), RESOURCES.portal())

    future = runs.start(run, submit)
    if isinstance(future, str):
        coroutine.close()
        raise KeyboardInterrupt(future)
    try:
        return future.result()
    except BaseException as error:
        if future.cancel():
            finished.wait(CLOSE_WAIT_S)
        if (reason := cancelled(run)) and not isinstance(error, KeyboardInterrupt):
            raise KeyboardInterrupt(reason) from error
        raise
    finally:
        runs.finished(future)


def cancel_on_interrupt() -> CancelScope:
    """A scope whose sync MoA runs Ctrl-C (in the main thread) or ``scope.cancel()`` cancels.

    ``with cancel_on_interrupt() as scope:`` around sync calls of a graph holding MoA (``stream``
    in any mode, ``batch``, MoA inside your own graph, the unrolled graph...): their provider
    requests close and ``KeyboardInterrupt`` goes on at once, instead of after the slow models
    answer. In the main thread the block holds SIGINT, chained to the handler that was there
    (which still decides what Ctrl-C means) and restored at the end. ``scope.cancel()`` from any
    thread cancels the same way. See docs/composition.md, "Sync and async".
    """
    return RESOURCES.sync_runs.scope()


async def _watched(coroutine: Coroutine[Any, Any, T], finished: threading.Event) -> T:
    try:
        return await coroutine
    finally:
        finished.set()


def cancellable(items: Iterator[T]) -> Iterator[T]:
    """``items``, a sync stream of MoA runs, stepped in a ``cancel_on_interrupt()`` scope of its
    own: Ctrl-C in the main thread, or closing the stream before its end, cancels its MoA calls.

    The scope's context variable is set in a copy of the caller's context that only the stream's
    steps run in (LangGraph's workers copy it from there), so it never leaks into the caller's
    code between items, as one set in a generator's body would.
    """
    scope = cancel_on_interrupt()
    context = contextvars.copy_context()
    context.run(scope.__enter__)
    try:
        while True:
            try:
                item = context.run(next, items)
            except StopIteration:
                return
            yield item
    except BaseException:
        # Ctrl-C (already cancelled), the stream's own error, or the caller closing it early
        # (GeneratorExit): LangGraph would wait for the models in flight to answer.
        scope.cancel(CLOSED)
        raise
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            context.run(close)
        context.run(scope.__exit__, None, None, None)


def _hands_off(result: Any) -> bool:
    """A router's result that starts several tasks: LangGraph runs them in its worker threads."""
    return isinstance(result, list) and len(result) > 1


async def _check_turn(state: Mapping[str, Any], untrusted: ServerRules | None) -> None:
    """The turn's options where a later node reads them (``turn_bind``, ``turn_stop``): the first
    step writes them from the input it checked, but a ``Command`` may write them too and go past
    it (``goto="aggregate"``), so what was not checked is checked here, as the first step checks
    the input's ``bind`` and ``stop``, before any model is paid."""
    bind = state.get("turn_bind")
    if bind is not None and untrusted is None:
        if (problem := bind_problem(bind)) is not None:
            raise ConfigError(f"turn_{problem[0]}: {problem[1]}")
    elif bind is not None and not bind_checked(bind, digest=False):  # the first step's: at once
        try:  # its digest, or a check, takes a while for large schemas: off the event loop
            await asyncio.to_thread(_check_unchecked, bind)
        except ClientSettingError as exc:
            raise ClientSettingError(f"turn_{exc.field}", exc.problem) from None
    try:
        stops_of(state.get("turn_stop"))
    except ConfigError as exc:
        raise ConfigError(f"turn_{exc}") from None


def _check_unchecked(bind: Any) -> None:
    if not bind_checked(bind):  # the one the first step checked is not checked again
        check_bind(bind)


def adapt(
    node: AsyncNode,
    default: Context | None,
    check: Check | None = None,
    *,
    untrusted: ServerRules | None = None,
    starts: bool = True,
) -> Any:
    """``node`` as a graph node or router: context resolved, usable sync and async.
    ``untrusted``: the context is a server's client's, checked before it is read against these
    rules, which the server's environment set (nodes/untrusted.py: the endpoints it may name;
    nodes/caps.py: what it may cost). ``starts``: a run's first step runs it, so it checks the
    run's input; later nodes get the input it passed."""

    async def afunc(state: Any, runtime: Runtime[Context]) -> Any:
        refuse_retried_batch_run()
        if untrusted is not None:
            # In every node: a thread's run resumed from its checkpoint brings a new context
            # without passing START. Cheap, unlike the bind's schemas.
            check_context(runtime.context, untrusted.endpoints)
        ctx = resolve_context(runtime.context, default, parents=nested(runtime))
        if untrusted is not None:
            caps.check(ctx, untrusted.caps, RAISED_BY_ENV)
        if starts and isinstance(state, Mapping):
            if untrusted is not None and state.get("bind") is not None:
                # A large tool schema takes a while to check: not on the server's event loop.
                await asyncio.to_thread(check_bind, state["bind"])
            elif (problem := bind_problem(state.get("bind"))) is not None:
                raise ConfigError(": ".join(problem))  # the schemas: when bound
            answerable(state.get("messages", ()), ctx.tool_history)
            if calls_tools(state.get("bind")):  # the aggregator is sent the calls as they are
                check_pairs(state.get("messages", ()))
            stops_of(state.get("stop"))  # a wrong shape fails here, not at the aggregator
        elif isinstance(state, Mapping):
            await _check_turn(state, untrusted)
        if check is not None:
            check(ctx)
        return await node(state, runtime.override(context=ctx))

    def func(state: Any, runtime: Runtime[Context]) -> Any:
        runs = RESOURCES.sync_runs
        runs.take_back()  # from the main thread, which waits on this node itself
        result = run_sync(afunc(state, runtime), runtime.control)
        if _hands_off(result):
            runs.hand_off(runtime.control)  # from the main thread: Ctrl-C cancels the layer
        return result

    # LangGraph passes ``runtime`` to a node whose signature asks for it.
    func.__signature__ = afunc.__signature__ = inspect.signature(node)  # type: ignore[attr-defined]
    return RunnableCallable(func, afunc, name=node.__name__)

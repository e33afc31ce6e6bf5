"""Sync callers' MoA tasks in flight, and how a sync caller gives up on them (Ctrl-C, a timeout).

A sync ``graph.invoke`` runs each MoA node's coroutine on the portal loop and waits for it in the
thread LangGraph gives the node (``run_sync``, graphs/adapt.py). When that is the caller's thread,
Ctrl-C ends the wait there and ``run_sync`` cancels the task. Often LangGraph's worker threads wait
instead (a layer of several proposers; every node when streaming ``"messages"``, under ``batch``,
in a step shared with other nodes): Ctrl-C raises in the main thread, and LangGraph's sync runner
(``BackgroundExecutor.__exit__``) then waits for its workers before the exception goes on, with no
hook to stop them. Nothing of LangGraph's private API is used here. So the tasks are cancelled
from here, by owner: each task in flight is recorded under its run (LangGraph's
``runtime.control``, one ``RunControl`` per run, shared by its subgraphs) and under the caller's
``CancelScope``s, if any (a context variable: LangGraph and langchain-core copy the caller's
context into their worker threads, so the tasks of a scope's runs see it).

Cancelling an owner (``interrupt``) marks it, so that its tasks not started yet
(``max_concurrency``, later steps) never start, then cancels its tasks in flight: each closes its
requests, and the thread waiting on it raises ``KeyboardInterrupt`` once it has. A run is marked by
``request_drain(INTERRUPTED)``, so LangGraph starts no further step of it either.

Who cancels:

- **A run, implicitly.** When the main thread hands a layer to the workers (a MoA router it ran
  returned several destinations), it hands SIGINT to a ``_HandOff`` chained to the handler that
  was there, until it next runs a MoA node itself (join, after the layer) or Ctrl-C comes.
- **A scope, on request.** ``cancel_on_interrupt()`` (``SyncRuns.scope``) entered in the main
  thread hands SIGINT to a ``_HandOff`` for its whole duration; ``scope.cancel()`` works from any
  thread (a timeout, a watchdog). Only the caller may hand SIGINT over for good: a library that
  kept a handler would change Ctrl-C for every ``asyncio.run`` in the process (which installs its
  own only over Python's default).

Either way the handler that was there keeps deciding what Ctrl-C means: if it raises
(``KeyboardInterrupt``, Python's default), the owner is cancelled before the exception goes on; if
it returns, nothing is. Handlers set outside Python, ``SIG_IGN`` and ``SIG_DFL`` are left alone
(Ctrl-C then never reaches Python code, or ends the process and its connections with it). The
handler that was there is put back when the hand-off ends (the layer, the scope) or Ctrl-C comes;
a handler the user sets in between is never replaced. When no MoA step of the run follows in the
main thread (a staircase step, the run's last; a layer that fails: an error escaping a proposer),
SIGINT stays handed off until the main thread's next sync MoA node or Ctrl-C,
harmlessly but for one thing: ``asyncio.run`` started meanwhile in the main thread sees a handler
that is not Python's default and does not install its own (Ctrl-C then raises in the loop, as
before Python 3.11). ``ainvoke``/``astream`` never come here: they cancel on their own.
"""

from __future__ import annotations

import contextvars
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import FrameType, TracebackType
from typing import Any, TypeVar

from langgraph.runtime import RunControl

T = TypeVar("T")

INTERRUPTED = "moa: the sync caller gave up (Ctrl-C)"
"""The drain reason of a run Ctrl-C interrupted, and the reason of a scope it cancelled."""
CANCELLED = "moa: the run was cancelled (CancelScope.cancel)"
"""The reason of a scope cancelled by ``cancel()`` with no reason of its own."""
CLOSED = "moa: the sync stream was closed before its end"
"""The reason of a MoA stream's own scope cancelled by its caller closing it (or by an error)."""


class CancelScope:
    """The sync MoA runs started inside a ``with`` block, which Ctrl-C or ``cancel()`` cancels.

    Enter it in the thread that makes the sync calls (``cancel_on_interrupt()``); in the main
    thread it also takes SIGINT for the block's duration, chained to the handler that was there.
    A scope is used once. Scopes nest: cancelling one cancels the scopes entered inside it.
    """

    def __init__(self, runs: SyncRuns) -> None:
        self._runs = runs
        self._parent: CancelScope | None = None
        self._token: contextvars.Token[CancelScope | None] | None = None
        self._handler: _HandOff | None = None
        self.reason: str | None = None
        """Why the scope was cancelled (``INTERRUPTED`` for Ctrl-C), or None while it is not."""

    @property
    def cancelled(self) -> bool:
        """Whether this scope, or one it was entered in, was cancelled."""
        return self.cancelled_by() is not None

    def cancelled_by(self) -> str | None:
        """The reason of the innermost of this scope and those it was entered in that was
        cancelled, or None."""
        return next((s.reason for s in self.owners() if s.reason is not None), None)

    def owners(self) -> tuple[CancelScope, ...]:
        """This scope and the scopes it was entered in."""
        chain: list[CancelScope] = []
        scope: CancelScope | None = self
        while scope is not None:
            chain.append(scope)
            scope = scope._parent
        return tuple(chain)

    def cancel(self, reason: str = CANCELLED) -> None:
        """Cancel the scope's MoA tasks in flight (their requests close) and start no more of
        them: the sync calls waiting on them raise ``KeyboardInterrupt(reason)``. Any thread."""
        self._runs.interrupt(self, reason)

    def __enter__(self) -> CancelScope:
        if self._token is not None or self.reason is not None:
            raise RuntimeError("a CancelScope is entered once")
        self._parent = _SCOPE.get()
        self._token = _SCOPE.set(self)
        if threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGINT)
            if callable(current):
                self._handler = _HandOff(self._runs, current, self)
                signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        handler, self._handler = self._handler, None
        if handler is not None and threading.current_thread() is threading.main_thread():
            previous = handler.previous
            if signal.getsignal(signal.SIGINT) is handler:  # else the user's since: kept
                signal.signal(signal.SIGINT, previous)
        if self._token is not None:
            _SCOPE.reset(self._token)


_SCOPE: contextvars.ContextVar[CancelScope | None] = contextvars.ContextVar(
    "moa_cancel_scope", default=None
)

Owner = RunControl | CancelScope


class SyncRuns:
    """The sync face's tasks in flight, by owner, and the SIGINT hand-off (see above)."""

    def __init__(self) -> None:
        # Re-entrant: the SIGINT hand-off runs in the main thread, which may hold it then.
        self._lock = threading.RLock()
        self._in_flight: dict[Future[Any], tuple[Owner, ...]] = {}

    def scope(self) -> CancelScope:
        """A new scope for the caller to enter (``cancel_on_interrupt``)."""
        return CancelScope(self)

    def start(self, run: RunControl | None, submit: Callable[[], Future[T]]) -> Future[T] | str:
        """``submit()``'s future, kept while in flight under ``run`` and the caller's scopes; or,
        submitting nothing, why not: the reason an owner was cancelled. The check and the record
        are one step for ``interrupt``."""
        scope = _SCOPE.get()
        owners = (() if run is None else (run,)) + (() if scope is None else scope.owners())
        with self._lock:
            if reason := cancelled(run):
                return reason
            future = submit()
            self._in_flight[future] = owners
            return future

    def finished(self, future: Future[Any]) -> None:
        with self._lock:
            self._in_flight.pop(future, None)

    def interrupt(self, owner: Owner, reason: str = INTERRUPTED) -> None:
        """Mark ``owner`` cancelled and cancel its tasks in flight (each closes its requests)."""
        with self._lock:
            if isinstance(owner, RunControl):
                owner.request_drain(reason)
            elif owner.reason is None:
                owner.reason = reason
            cancelled = [
                future
                for future, owners in self._in_flight.items()
                if any(of is owner for of in owners)
            ]
        for future in cancelled:
            future.cancel()

    def hand_off(self, run: RunControl | None) -> None:
        """From the main thread: LangGraph's workers are about to run MoA tasks of ``run``."""
        if run is None or threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGINT)
        if isinstance(current, _HandOff) and isinstance(current.owner, RunControl):
            current.owner = run
        elif isinstance(current, _HandOff) and _in_scope(current.owner):
            pass  # the caller's scope holds SIGINT: the run's tasks are the scope's too
        elif callable(current):
            # Python's default, the user's, or another scope's (a ChatMoA stream left open).
            signal.signal(signal.SIGINT, _HandOff(self, current, run))

    def take_back(self) -> None:
        """From the main thread, which now waits on a MoA task itself: SIGINT as it was, unless
        a scope holds it."""
        if threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGINT)
        if isinstance(current, _HandOff) and isinstance(current.owner, RunControl):
            signal.signal(signal.SIGINT, current.previous)


def _in_scope(owner: Owner) -> bool:
    """Whether the caller's tasks are ``owner``'s (the scope it entered, or one inside it)."""
    scope = _SCOPE.get()
    return scope is not None and any(of is owner for of in scope.owners())


def cancelled(run: RunControl | None) -> str | None:
    """Why the caller's sync MoA tasks of ``run`` may not go on: the reason Ctrl-C or ``cancel()``
    gave for ``run`` or the caller's scope, or None."""
    if run is not None and run.drain_reason == INTERRUPTED:
        return INTERRUPTED
    scope = _SCOPE.get()
    return None if scope is None else scope.cancelled_by()


Handler = Callable[[int, FrameType | None], Any]


class _HandOff:
    """SIGINT's handler while the main thread's MoA tasks of ``owner`` run in other threads."""

    def __init__(self, runs: SyncRuns, previous: Handler, owner: Owner) -> None:
        self.runs, self.previous, self.owner = runs, previous, owner

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        previous, owner = self.previous, self.owner
        try:
            previous(signum, frame)  # what Ctrl-C means is the previous handler's to say
        except BaseException:
            # The main thread gives up: cancel the owner's tasks before the exception goes on.
            if signal.getsignal(signal.SIGINT) is self:
                signal.signal(signal.SIGINT, previous)
            self.runs.interrupt(owner)
            raise

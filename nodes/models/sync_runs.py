"""Sync callers' MoA tasks in flight, and Ctrl-C while LangGraph's worker threads wait on them.

A sync ``graph.invoke`` runs each MoA node's coroutine on the portal loop and waits for it in the
thread LangGraph gives the node (``run_sync``, graphs/adapt.py). When that is the caller's thread,
Ctrl-C ends the wait there and ``run_sync`` cancels the task. A layer of several proposers is
waited on in LangGraph's worker threads instead: Ctrl-C raises in the main thread, and LangGraph's
sync runner (``BackgroundExecutor.__exit__``) then waits for its workers before the exception goes
on, with no hook to stop them. Nothing of LangGraph's private API is used here.

So when the main thread hands a layer to the workers (a MoA router it ran returned several
destinations), it hands SIGINT to a ``_HandOff`` chained to the handler that was there, which
keeps deciding what Ctrl-C means: if it raises (``KeyboardInterrupt``, Python's default), the
run's tasks in flight are cancelled (each closes its requests, and the worker waiting on it raises
once it has) and the run is marked interrupted, so that its tasks not started yet
(``max_concurrency``) never start, before the exception goes on; if it returns, nothing is
cancelled. Handlers set outside Python, ``SIG_IGN`` and ``SIG_DFL`` are left alone (Ctrl-C then
never reaches Python code, or ends the process and its connections with it).

The main thread takes SIGINT back, as it was, when it next runs a MoA node (join, after the
layer), which it waits on itself, and once Ctrl-C interrupted the run. A handler the user sets in
between is never replaced. If the layer fails instead (an error escaping a proposer), SIGINT stays
handed off until the main thread's next sync MoA node or Ctrl-C, harmlessly but for one thing:
``asyncio.run`` started meanwhile in the main thread sees a handler that is not Python's default
and does not install its own (Ctrl-C then raises in the loop, as before Python 3.11).

A run is LangGraph's ``runtime.control`` (public since 1.2): one ``RunControl`` per run, shared by
its subgraphs. Marked interrupted is ``request_drain(INTERRUPTED)`` on it, so LangGraph starts no
further step of it either. Only runs the main thread waits on are cancelled; runs in other threads
are not. ``ainvoke``/``astream`` never come here: they cancel on their own.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import FrameType
from typing import Any, TypeVar

from langgraph.runtime import RunControl

T = TypeVar("T")

INTERRUPTED = "moa: the sync caller gave up (Ctrl-C)"
"""The drain reason of a run Ctrl-C interrupted."""


class SyncRuns:
    """The sync face's tasks in flight, by run, and the SIGINT hand-off (see above)."""

    def __init__(self) -> None:
        # Re-entrant: the SIGINT hand-off runs in the main thread, which may hold it then.
        self._lock = threading.RLock()
        self._in_flight: dict[Future[Any], RunControl | None] = {}

    def start(self, run: RunControl | None, submit: Callable[[], Future[T]]) -> Future[T] | None:
        """``submit()``'s future, kept while in flight; None, submitting nothing, once Ctrl-C
        interrupted ``run``. The check and the record are one step for ``interrupt``."""
        with self._lock:
            if interrupted(run):
                return None
            future = submit()
            self._in_flight[future] = run
            return future

    def finished(self, future: Future[Any]) -> None:
        with self._lock:
            self._in_flight.pop(future, None)

    def interrupt(self, run: RunControl) -> None:
        """Mark ``run`` interrupted and cancel its tasks in flight (each closes its requests)."""
        with self._lock:
            run.request_drain(INTERRUPTED)
            cancelled = [future for future, of in self._in_flight.items() if of is run]
        for future in cancelled:
            future.cancel()

    def hand_off(self, run: RunControl | None) -> None:
        """From the main thread: LangGraph's workers are about to run MoA tasks of ``run``."""
        if run is None or threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGINT)
        if isinstance(current, _HandOff):
            current.run = run
        elif callable(current):
            signal.signal(signal.SIGINT, _HandOff(self, current, run))

    def take_back(self) -> None:
        """From the main thread, which now waits on a MoA task itself: SIGINT as it was."""
        if threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGINT)
        if isinstance(current, _HandOff):
            signal.signal(signal.SIGINT, current.previous)


def interrupted(run: RunControl | None) -> bool:
    """Whether Ctrl-C interrupted ``run``."""
    return run is not None and run.drain_reason == INTERRUPTED


Handler = Callable[[int, FrameType | None], Any]


class _HandOff:
    """SIGINT's handler while LangGraph's workers run MoA tasks of ``run``."""

    def __init__(self, runs: SyncRuns, previous: Handler, run: RunControl) -> None:
        self.runs, self.previous, self.run = runs, previous, run

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        previous, run = self.previous, self.run
        try:
            previous(signum, frame)  # what Ctrl-C means is the previous handler's to say
        except BaseException:
            # The main thread gives up on the run: cancel it before the exception goes on.
            if signal.getsignal(signal.SIGINT) is self:
                signal.signal(signal.SIGINT, previous)
            self.runs.interrupt(run)
            raise

"""Ctrl-C in ``moa chat``: it cancels what the chat is waiting for, not the whole program.

``asyncio.run`` turns the first Ctrl-C into a cancellation of the main task (the whole chat) and
any later one into a ``KeyboardInterrupt`` raised wherever the code happens to be. A chat wants
Ctrl-C to cancel the answer being written and keep the session, and, at the idle prompt, to leave
at once. So while a chat runs, SIGINT is taken by the event loop and cancels the one step awaited
through ``CtrlC.step``: cancelling a turn's task closes its HTTP requests (as the straggler cut
does) and stops a local model within one token.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")


class Interrupted(Exception):
    """Ctrl-C cancelled the step being awaited."""


class CtrlC:
    """Routes SIGINT to the step awaited through ``step``; outside a step Ctrl-C is ignored.

    Where the event loop cannot take signals (not the main thread, Windows), Ctrl-C keeps its
    default effect.
    """

    def __init__(self) -> None:
        self._step: asyncio.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> Self:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, self._pressed)
        except (NotImplementedError, RuntimeError, ValueError):
            return self
        self._loop = loop
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGINT)
            self._loop = None

    def _pressed(self) -> None:
        if self._step is not None and not self._step.done():
            self._step.cancel()

    async def step(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``; raise ``Interrupted`` if Ctrl-C cancelled it."""
        task = asyncio.ensure_future(awaitable)
        self._step = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the chat itself is being cancelled: not a Ctrl-C of ours
            raise Interrupted from None
        finally:
            self._step = None

"""Texts being written, read while they grow: what staircase streaming passes between its calls.

A ``Growing`` is one model's answer as it streams (a proposal, or an answer written chunk by
chunk); ``Collector`` is the LangChain callback handler that feeds it one streamed piece at a
time. Per piece the work is a list append and an integer compare (no task, no event, no copy of
the text): a waiter names the piece count it needs and is woken once, when it is reached. The
text is joined only when a request is built from it.

``Collector`` is a ``_StreamingCallbackHandler`` (a private class of langchain-core, used here
only; tests/test_staircase.py fails when it stops working): a chat model called with one attached
streams its answer (``BaseChatModel._should_stream``), which a staircase proposer must do whether
or not anyone reads the run's tokens.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers._streaming import _StreamingCallbackHandler

T = TypeVar("T")

# About a token each: a word or a run of punctuation, with the whitespace before it. The pieces
# join back to the text exactly.
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s]+)|\s+")


def pieces_of(text: str) -> list[str]:
    """``text`` cut as a model would have streamed it (roughly a token a piece)."""
    return _PIECE.findall(text)


class Growing:
    """A text being written: its pieces so far, whether it is done, and whether it failed."""

    __slots__ = ("_asked", "_parts", "_replay", "_waiters", "done", "failed", "first_at", "pieces")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self.pieces = 0  # streamed pieces (tokens) so far
        self.done = False
        self.failed = False
        self.first_at: float | None = None  # perf_counter of the first piece
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._replay: list[str] = []  # pieces of a whole text not handed out yet (reversed)
        self._asked = 0  # the most pieces a reader has waited for

    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def add(self, piece: str, count: int = 1) -> None:
        """One streamed piece (or ``count`` pieces' worth of text at once)."""
        if self.first_at is None:
            self.first_at = time.perf_counter()
        self._parts.append(piece)
        self.pieces += count
        if self._waiters:
            self._wake(lambda at: self.pieces >= at)

    def cut_to(self, pieces: int, text: str) -> None:
        """Back to an earlier state (an attempt that restarts from there)."""
        self._parts[:] = [text] if text else []
        self.pieces = pieces

    def finish(self, *, failed: bool = False, text: str | None = None) -> None:
        """Done (``text``: the answer as the call returned it, when it differs from the pieces)."""
        if text is not None:
            self._parts[:] = [text]
        self.done, self.failed = True, failed
        self._wake(lambda at: True)

    def replay(self, text: str) -> None:
        """A whole text to hand out piece by piece, as readers ask for it (``grown_to``); done
        once every piece is out."""
        self._replay = pieces_of(text)[::-1]
        self._pull(self._asked)  # what readers already wait for
        if not self._replay:
            self.finish()

    async def grown_to(self, pieces: int) -> None:
        """Return once the text has ``pieces`` pieces or is done."""
        self._asked = max(self._asked, pieces)
        self._pull(pieces)
        await self._until(pieces)

    async def ended(self) -> None:
        """Return once the text is done (without asking a replay for more)."""
        await self._until(2**62)

    def _pull(self, pieces: int) -> None:
        if not self._replay:
            return
        while self._replay and self.pieces < pieces:
            self.add(self._replay.pop())
        if not self._replay:
            self.finish()

    async def _until(self, pieces: int) -> None:
        if self.done or self.pieces >= pieces:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((pieces, waiter))
        await waiter

    def _wake(self, ready: Any) -> None:
        keep = []
        for at, waiter in self._waiters:
            if ready(at):
                if not waiter.done():
                    waiter.set_result(None)
            else:
                keep.append((at, waiter))
        self._waiters = keep


class Collector(BaseCallbackHandler, _StreamingCallbackHandler[Any]):
    """Feeds a model call's streamed pieces into ``growing`` (and makes the call stream).

    Each request of the call starts from where ``growing`` stood when the collector was made: a
    retried attempt replaces the pieces of the failed one instead of adding to them.
    """

    run_inline = True  # called in the streaming task: no executor hop per piece

    def __init__(self, growing: Growing) -> None:
        self.growing = growing
        self._at = (growing.pieces, growing.text())

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.growing.cut_to(*self._at)

    def on_llm_new_token(self, token: str | list[str | dict[str, Any]], **kwargs: Any) -> None:
        if token and isinstance(token, str):
            self.growing.add(token)

    # The _StreamingCallbackHandler interface: runnables' streams pass through untouched.
    def tap_output_aiter(self, run_id: Any, output: AsyncIterator[T]) -> AsyncIterator[T]:
        return output

    def tap_output_iter(self, run_id: Any, output: Iterator[T]) -> Iterator[T]:
        return output

"""Straggler quorum: a proposer layer may go on once ``k`` of its ``n`` proposals are in.

Off by default (``Context.quorum=None``: every layer waits for all its proposers). With
``quorum=k`` the ``k``-th successful proposal of a layer starts a grace period
(``Context.quorum_grace`` seconds); when it ends, the proposer calls still running are cancelled
and recorded as failures of kind ``"cancelled"``. Cancelling a call cancels its streaming HTTP
request: the client closes the response, so the provider stops generating (and billing) it.

A LangGraph superstep waits for every one of its tasks, so the proposer tasks must end
themselves. Each task of a layer joins the layer's group (keyed by the checkpoint id of the
superstep the layer runs in, which all its tasks share, and the layer number) and runs its model
call inside an ``asyncio.timeout`` scope with no deadline; the ``k``-th success gives every scope
still open the deadline "now + grace". ``asyncio.timeout`` turns the cancellation into an error of
this task only and leaves a cancellation from outside (the caller cancelling the run) untouched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.models.calls import CallResult


class QuorumCancelledError(Exception):
    """The call was cut: the layer had its quorum and the grace period had passed."""

    def __init__(self, message: str, latency_s: float) -> None:
        super().__init__(message)
        self.message = message
        self.latency_s = latency_s


class _Group:
    """The proposer tasks of one layer of one run."""

    __slots__ = ("deadline", "open", "running", "successes")

    def __init__(self) -> None:
        self.running = 0  # calls of the layer running now
        self.successes = 0
        self.deadline: float | None = None  # loop time at which the calls still open are cut
        self.open: set[asyncio.Timeout] = set()


_GROUPS: dict[str, _Group] = {}


def active_groups() -> int:
    """Layers with a quorum in flight (for tests and the memory benchmark: 0 when idle)."""
    return len(_GROUPS)


def _quorum_of(ctx: Context, layer: int) -> tuple[int, int] | None:
    """(k, n) when ``layer`` runs under a quorum that can cut anything, else None."""
    if ctx.quorum is None:
        return None
    size = len(ctx.proposers_of(layer))
    return (ctx.quorum, size) if ctx.quorum < size else None


async def quorum_call(
    ctx: Context, layer: int, key: str, call: Awaitable[CallResult]
) -> CallResult:
    """Await one proposer's call as a member of its layer's quorum (plainly when there is none).

    ``key`` names the layer's run, the same for every task of the layer. Raises
    ``QuorumCancelledError`` when the call was cut.
    """
    quorum = _quorum_of(ctx, layer)
    if quorum is None:
        return await call
    k, size = quorum
    group = _GROUPS.get(key)
    if group is None:
        group = _GROUPS[key] = _Group()
    group.running += 1
    start = time.perf_counter()
    try:
        async with asyncio.timeout(group.deadline) as scope:
            group.open.add(scope)
            try:
                result = await call
            finally:
                group.open.discard(scope)
    except TimeoutError:
        if not scope.expired():
            raise
        raise QuorumCancelledError(
            f"cancelled: {k} of {size} proposals were in and the "
            f"{ctx.quorum_grace:g} s grace period had passed",
            time.perf_counter() - start,
        ) from None
    else:
        if result.text.strip():
            group.successes += 1
            if group.successes == k:
                group.deadline = asyncio.get_running_loop().time() + ctx.quorum_grace
                for other in group.open:
                    other.reschedule(group.deadline)
        return result
    finally:
        # The last call of the layer to end takes the group with it: nothing stays per query.
        # (A task that failed before its call never joined; one that joins after all the others
        # ended starts a fresh group and is not cut.)
        group.running -= 1
        if group.running == 0 and _GROUPS.get(key) is group:
            del _GROUPS[key]

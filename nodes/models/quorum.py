"""Cutting a proposer layer's stragglers: the quorum (opt-in) and the straggler grace (default).

A LangGraph superstep waits for every one of its tasks, so the proposer tasks must end themselves.
Each task of a layer joins the layer's group (keyed by the checkpoint id of the superstep the
layer runs in, which all its tasks share, and the layer number) and runs its model call inside an
``asyncio.timeout`` scope with no deadline. Two rules may give every scope still open a deadline;
when it passes, the calls still running are cancelled and recorded as failures. Cancelling a call
cancels its HTTP request: the client closes the response, so the provider stops generating (and
billing) it. ``asyncio.timeout`` turns the cancellation into an error of this task only and leaves
a cancellation from outside (the caller cancelling the run) untouched.

- Quorum (``Context.quorum=k``, off by default): the ``k``-th successful proposal starts a grace
  period of ``Context.quorum_grace`` seconds; the calls still running then are cut, kind
  ``"cancelled"``.
- Straggler grace (``Context.straggler_grace``, 30 s by default): once every proposer of the layer
  but one has finished, and at least ``min_proposals`` of them answered, the last one may run
  ``straggler_grace`` seconds more, or as long again as twice the time its siblings took if that
  is longer (a call that queued behind its siblings on one server then still finishes). Then it is
  cut, kind ``"straggler"``. One hung provider so costs a bounded time instead of
  ``timeout x max_attempts`` (6 minutes with the defaults).

The earlier of the two deadlines wins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.errors import CallFailedError
from langgraph_moa.nodes.models.calls import CallResult
from langgraph_moa.nodes.models.resources import RESOURCES
from langgraph_moa.nodes.records import ErrorKind


class _Group:
    """The proposer tasks of one layer of one run."""

    __slots__ = ("deadline", "finished", "kind", "open", "running", "started", "successes", "why")

    def __init__(self, started: float) -> None:
        self.running = 0  # calls of the layer running now
        self.finished = 0  # calls that ended on their own (answered or failed), not cut
        self.successes = 0
        self.started = started  # loop time at which the layer's first call started
        self.deadline: float | None = None  # loop time at which the calls still open are cut
        self.kind: ErrorKind = "cancelled"  # and how, and why, they are recorded
        self.why = ""
        self.open: set[asyncio.Timeout] = set()

    def cut_at(self, when: float, kind: ErrorKind, why: str) -> None:
        if self.deadline is not None and self.deadline <= when:
            return
        self.deadline, self.kind, self.why = when, kind, why
        for scope in self.open:
            scope.reschedule(when)


# The groups of the layers in flight, by layer run: kept by the process's owner of such state.
_GROUPS: dict[str, _Group] = RESOURCES.layers


def active_groups() -> int:
    """Layers with calls in flight under a rule (tests, memory benchmark: 0 when idle)."""
    return len(_GROUPS)


def _seconds(value: float) -> str:
    return format(round(value, 1), "g")


def _applies(ctx: Context, size: int) -> bool:
    """Whether any rule can cut a call of a layer of ``size`` proposers."""
    quorum = ctx.quorum is not None and ctx.quorum < size
    return quorum or (ctx.straggler_grace is not None and size > 1)


def _finished(group: _Group, ctx: Context, size: int, ok: bool) -> None:
    """A call ended on its own: start whichever rule it completes."""
    group.finished += 1
    group.successes += ok
    now = asyncio.get_running_loop().time()
    k = ctx.quorum
    if ok and k is not None and k < size and group.successes == k:
        group.cut_at(
            now + ctx.quorum_grace,
            "cancelled",
            f"cancelled: {k} of {size} proposals were in and the {ctx.quorum_grace:g} s grace "
            "period had passed",
        )
    grace = ctx.straggler_grace
    if grace is not None and group.finished == size - 1 and group.successes >= ctx.min_proposals:
        extra = max(grace, 2 * (now - group.started))
        group.cut_at(
            now + extra,
            "straggler",
            f"cut as a straggler: still running {_seconds(extra)} s after the layer's other "
            "proposers had finished (straggler_grace)",
        )


async def quorum_call(
    ctx: Context, layer: int, key: str, call: Awaitable[CallResult], attempts: Callable[[], int]
) -> CallResult:
    """Await one proposer's call as a member of its layer's group (plainly when no rule applies).

    ``key`` names the layer's run, the same for every task of the layer. Raises
    ``CallFailedError`` (kind ``"cancelled"`` or ``"straggler"``, with ``attempts()`` attempts:
    the requests the call had sent, ``Sent``) when the call was cut.
    """
    size = len(ctx.proposers_of(layer))
    if not _applies(ctx, size):
        return await call
    group = _GROUPS.get(key)
    if group is None:
        group = _GROUPS[key] = _Group(asyncio.get_running_loop().time())
    group.running += 1
    start = time.perf_counter()
    try:
        async with asyncio.timeout(group.deadline) as scope:
            group.open.add(scope)
            try:
                result = await call
            except Exception:
                _finished(group, ctx, size, ok=False)
                raise
            finally:
                group.open.discard(scope)
    except TimeoutError:
        if not scope.expired():
            raise
        raise CallFailedError(
            group.kind, group.why, attempts(), time.perf_counter() - start
        ) from None
    else:
        _finished(group, ctx, size, ok=bool(result.text.strip()))
        return result
    finally:
        # The last call of the layer to end takes the group with it: nothing stays per query.
        # (A task that failed before its call never joined; one that joins after all the others
        # ended starts a fresh group and is not cut.)
        group.running -= 1
        if group.running == 0 and _GROUPS.get(key) is group:
            del _GROUPS[key]

"""The model calls a block paid for, noted as each one ends (nodes/models/ask.py: every call that
sent a request, however it ended).

A run's records hold its calls (proposals, the aggregator's answer), but a run that fails leaves
no records of the calls it paid before it failed: ``moa batch``'s failed item paid its proposers
all the same, and its spend must say so. ``paid_calls()`` collects them for the caller that sets
it (a context variable, so every task of the run, LangGraph's included, adds to the same list);
outside such a block nothing is kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from langgraph_moa.nodes.records import Usage

_PAID: ContextVar[list[dict[str, Any]] | None] = ContextVar("moa_paid_calls", default=None)


@contextlib.contextmanager
def paid_calls() -> Iterator[list[dict[str, Any]]]:
    """A list of the calls that sent requests inside the block, in a call record's shape
    (``model``, ``usage``, ``attempts``; ``text`` None: nothing of it was kept)."""
    calls: list[dict[str, Any]] = []
    token = _PAID.set(calls)
    try:
        yield calls
    finally:
        _PAID.reset(token)


def note_paid(model: str, attempts: int, usage: Usage | None) -> None:
    """A call of ``model`` ended after sending ``attempts`` requests, however it ended (answered,
    failed, cut by a quorum, cancelled); ``usage`` None when it did not answer."""
    calls = _PAID.get()
    if calls is not None and attempts > 0:
        calls.append({"model": model, "usage": usage, "attempts": attempts, "text": None})

"""The graph's state: the conversation plus per-layer response lists.

``messages`` follows ``MessagesState``, so the graph drops into any parent graph that keeps
``messages``. Everything else is plain JSON-serialisable data (see nodes/records.py).
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired

from langchain_core.messages import AnyMessage, convert_to_messages
from langgraph.channels import EphemeralValue
from langgraph.graph.message import Messages, add_messages
from pydantic import ValidationError
from typing_extensions import TypedDict

from langgraph_moa.nodes.errors import InvalidMessagesError
from langgraph_moa.nodes.records import Answer, Proposal, Staircase

_UNREADABLE = (ValueError, TypeError, KeyError, NotImplementedError)


def conversation(left: Messages, right: Messages) -> Messages:
    """``add_messages``, with ``InvalidMessagesError`` for an input it cannot read: LangGraph's
    reducer answered ``{"messages": null}`` with "Must specify non-null arguments for both 'left'
    and 'right'", LangChain an item that is no message with a type or a key, naming neither."""
    if right is None:
        raise InvalidMessagesError(None, "is null: send a list of messages")
    try:
        return add_messages(left, right)
    except _UNREADABLE:
        items = right if isinstance(right, list) else [right]
        for i, item in enumerate(items):
            try:
                convert_to_messages([item])
            except _UNREADABLE as exc:
                if not isinstance(right, list):
                    reason = f"is neither a list of messages nor one: {_reason(exc)}"
                    raise InvalidMessagesError(None, reason) from None
                raise InvalidMessagesError(i, f"is not a message: {_reason(exc)}") from None
        raise  # every item is a message: add_messages' own error (a RemoveMessage of no id...)


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"it has no {exc.args[0]!r}"
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{first['loc'][0]}: {first['msg']}"
    return str(exc).splitlines()[0]  # without LangChain's troubleshooting link


class MoAInput(TypedDict):
    """What callers send: the conversation, newest user message last, and optionally the tools
    and response format the aggregator is bound to (nodes/models/tools.py) and stop sequences
    its answer ends before (a string or a list: nodes/stops.py). ``bind`` and ``stop`` hold for
    the turn that sends them: the first step reads them (nodes/turn.py), then they are gone."""

    messages: Annotated[list[AnyMessage], conversation]
    bind: NotRequired[Annotated[dict[str, Any] | None, EphemeralValue]]
    stop: NotRequired[Annotated[list[str] | str | None, EphemeralValue]]


class MoAOutput(TypedDict):
    """What callers get back."""

    messages: Annotated[list[AnyMessage], conversation]
    layers: list[list[Proposal]]
    answer: Answer
    # A staircase run's aggregator requests and their cost (None for standard MoA).
    staircase: Staircase | None


class MoAState(TypedDict):
    messages: Annotated[list[AnyMessage], conversation]
    # Proposals of the layer in flight, one write per proposer task; the join node empties it.
    proposals: Annotated[list[Proposal], operator.add]
    # One list per finished proposer layer, each in the configured proposer order.
    layers: Annotated[list[list[Proposal]], operator.add]
    # The last layer's successful answers, kept by the join node for the next step's prompt.
    references: list[str] | None
    # The final aggregator call (model, usage, timings).
    answer: Answer
    # This turn's tools and response format (plain JSON), as its input sent them or None: the
    # turn's first step writes them every turn (nodes/turn.py).
    turn_bind: dict[str, Any] | None
    # This turn's stop sequences, the same way: sent with the aggregator's requests only, and its
    # answer cut before the first (nodes/stops.py).
    turn_stop: list[str] | str | None
    # With Context.staircase: every aggregator chunk request (nodes/staircase.py); else None.
    staircase: Staircase | None

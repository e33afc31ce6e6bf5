"""The graph's state: the conversation plus per-layer response lists.

``messages`` follows ``MessagesState``, so the graph drops into any parent graph that keeps
``messages``. Everything else is plain JSON-serialisable data (see nodes/records.py).
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.channels import EphemeralValue
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from langgraph_moa.nodes.records import Answer, Proposal, Staircase


class MoAInput(TypedDict):
    """What callers send: the conversation, newest user message last, and optionally the tools
    and response format the aggregator is bound to (nodes/models/tools.py) and stop sequences
    its answer ends before (a string or a list: nodes/stops.py). ``bind`` and ``stop`` hold for
    the turn that sends them: the first step reads them (nodes/turn.py), then they are gone."""

    messages: Annotated[list[AnyMessage], add_messages]
    bind: NotRequired[Annotated[dict[str, Any] | None, EphemeralValue]]
    stop: NotRequired[Annotated[list[str] | str | None, EphemeralValue]]


class MoAOutput(TypedDict):
    """What callers get back."""

    messages: Annotated[list[AnyMessage], add_messages]
    layers: list[list[Proposal]]
    answer: Answer
    # A staircase run's aggregator requests and their cost (None for standard MoA).
    staircase: Staircase | None


class MoAState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
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

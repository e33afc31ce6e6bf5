"""Whether a turn's bound tools and response format leave the aggregator room to answer.

The aggregator's requests carry them whole (nodes/models/tools.py ``bound_kwargs``), and
providers count them as prompt. Tools or a response format too large for its context window
beside the conversation and the answer would be found only by the aggregator's call, after every
proposer was paid; so the turn's first step (nodes/turn.py) refuses them with
``BindOverflowError``, whatever started the run (ChatMoA, a graph run's ``bind``, a LangGraph
server run's; LangServe's input binds nothing); moa serve's /v1 runs the same check before it
starts the run, to answer its 400 (``context_length_exceeded``). What does fit leaves less room
for the references, which the aggregator's context budget trims (nodes/models/budget.py).

Measured as the budget measures prompts, by the estimate, with the references at their floor
(the aggregation prompt around them, each cut to ``[truncated]``): the least the aggregator
sends. A local model without a declared window is not checked: its window is known only once it
is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AnyMessage

from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.errors import BindOverflowError
from langgraph_moa.nodes.models.budget import (
    TRUNCATED,
    bound_tokens,
    context_window,
    request_tokens,
)
from langgraph_moa.nodes.models.settings import settings_for
from langgraph_moa.nodes.models.tools import aggregator_note, model_messages, skips_proposers
from langgraph_moa.nodes.prompts import aggregation_system_prompt, with_system


def check_bind_fits(
    ctx: Context, messages: Sequence[AnyMessage], bind: Mapping[str, Any] | None
) -> None:
    """``BindOverflowError`` naming the larger part when ``bind``'s tools and response format,
    the conversation (as the aggregator is sent it, its note of the binding and the aggregation
    prompt included) and the answer's ``max_tokens`` exceed the aggregator's context window."""
    parts = bound_tokens(bind)
    if not parts:
        return
    settings = settings_for(ctx.aggregator, ctx)
    if settings.window is None and settings.provider == "local":
        return
    window = context_window(settings)
    sent = model_messages(with_system(messages, aggregator_note(bind)), ctx.tool_history, bind)
    if ctx.proposer_layers and not skips_proposers(ctx.tool_proposers, bind):
        floor = [TRUNCATED] * len(ctx.proposers_of(ctx.proposer_layers))
        sent = with_system(sent, aggregation_system_prompt(ctx.aggregation_prompt, floor))
    conversation = request_tokens(sent)
    if conversation + sum(parts.values()) + settings.max_tokens <= window:
        return
    part = max(parts, key=lambda p: parts[p])
    raise BindOverflowError(
        part, parts[part], conversation, settings.max_tokens, settings.model, window
    )

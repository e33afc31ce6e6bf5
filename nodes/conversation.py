"""Putting the aggregation prompt in front of the user's conversation."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import AnyMessage, SystemMessage


def with_system(messages: Sequence[AnyMessage], system: str | None) -> list[AnyMessage]:
    """The conversation with ``system`` as its system prompt.

    A system message the user already has is kept and the aggregation prompt appended to it:
    several providers reject more than one system message.
    """
    if not system:
        return list(messages)
    if messages and isinstance(messages[0], SystemMessage):
        first = messages[0]
        return [SystemMessage(f"{first.text}\n\n{system}"), *messages[1:]]
    return [SystemMessage(system), *messages]

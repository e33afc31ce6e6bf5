"""Chat UIs' background tasks, answered by one model instead of the whole mixture.

After each answer Open WebUI asks the chat's model for a title, tags and follow-up suggestions
(and search queries), each a whole MoA run by default: 16 provider calls for a chat's first
message with 3 proposers. Its task prompts (the ``DEFAULT_*_PROMPT_TEMPLATE`` values in Open
WebUI's config) all begin with ``### Task:``; such a request runs the aggregator alone
(``layers=1``), one call. A user message that starts the same way gets the same treatment
(docs/serving.md says so); ``moa serve --no-task-shortcut`` turns it off.
"""

from __future__ import annotations

from langchain_core.messages import AnyMessage, HumanMessage

TASK_PREFIX = "### Task:"


def is_task(messages: list[AnyMessage]) -> bool:
    """Whether the conversation's last message is a chat UI's background task prompt."""
    last = messages[-1] if messages else None
    return isinstance(last, HumanMessage) and last.text.lstrip().startswith(TASK_PREFIX)

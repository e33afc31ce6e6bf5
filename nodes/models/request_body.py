"""Chat messages handed to the OpenAI SDK as the JSON they already are.

Before each request the ``openai`` SDK walks its arguments against their TypedDicts, to rename
aliased keys and format dates and files. Chat messages have no such fields, so the walk never
changes them, but it tries each message against every type of the message union and each content
part against its own: about a tenth of ``moa batch``'s client CPU per item (docs/performance.md).
The SDK's documented ``extra_body`` is merged into the JSON body after that walk, as it is, so
the messages travel there (with an empty ``messages`` argument it replaces): the server receives
the same body either way (tests/test_clients.py compares them).
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel


class _MessagesAsBody:
    """An OpenAI SDK ``chat.completions`` that sends ``messages`` through ``extra_body``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def with_raw_response(self) -> _MessagesAsBody:
        # The non-streamed path goes through ``with_raw_response.create``.
        return _MessagesAsBody(self._inner.with_raw_response)

    async def create(self, **kwargs: Any) -> Any:
        if isinstance(kwargs.get("messages"), list):
            body = {**(kwargs.get("extra_body") or {}), "messages": kwargs["messages"]}
            kwargs.update(messages=[], extra_body=body)
        return await self._inner.create(**kwargs)


def messages_as_body(model: BaseChatModel) -> None:
    """Make an OpenAI-style model send its messages untouched by the SDK (``async_client``)."""
    inner = getattr(model, "async_client", None)
    if inner is not None and hasattr(inner, "create") and not isinstance(inner, _MessagesAsBody):
        model.async_client = _MessagesAsBody(inner)  # type: ignore[attr-defined]

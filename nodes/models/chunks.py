"""Streamed chunks handed to LangChain as the JSON dicts they arrive as.

For each streamed chunk the OpenAI SDK builds a ``ChatCompletionChunk`` (its ``construct``
walks the model's type hints field by field: ~150 us a chunk on a 2-core machine, about half of
what a streamed token costs the client), and langchain-openai turns it straight back into a dict
(``chunk.model_dump()``) before reading it; it takes a dict as it is. So the streams of
OpenAI-style models (ChatTogether, ChatOpenAI) are told to hand over the parsed JSON instead:
the SDK still sends the request, decodes the server-sent events, parses the JSON and raises its
errors; only the per-chunk object is skipped.

This sets the stream's ``_cast_to``, a private attribute of the SDK's ``AsyncStream``: the one
setting that picks what a chunk becomes (``object`` means "the parsed JSON"). If a later SDK
renames it, the assignment does nothing and the chunks are objects again: slower, never wrong
(tests/test_private_apis.py and tests/test_streaming.py check that the dicts arrive).
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel


class _PlainChunks:
    """An OpenAI SDK ``chat.completions`` whose streams yield plain dicts."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def create(self, **kwargs: Any) -> Any:
        response = await self._inner.create(**kwargs)
        if kwargs.get("stream") and hasattr(response, "_cast_to"):
            response._cast_to = object  # read when iteration starts (see above)
        return response


def plain_stream_chunks(model: BaseChatModel) -> None:
    """Make an OpenAI-style model's streams yield dicts (its ``async_client`` is wrapped)."""
    inner = getattr(model, "async_client", None)
    if inner is not None and hasattr(inner, "create") and not isinstance(inner, _PlainChunks):
        model.async_client = _PlainChunks(inner)  # type: ignore[attr-defined]

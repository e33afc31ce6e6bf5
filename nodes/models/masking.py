"""Keeping API keys out of the errors a provider client raises.

A provider may quote the rejected key in its error body. The SDK's exception carries that text,
and LangChain hands the exception to every callback (tracers such as LangSmith record it) before
our call loop sees it, so the text is masked where the SDK raises it: the model's
``async_client`` is wrapped. (``redact`` masks everything else the project shows.)
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.language_models import BaseChatModel

from langgraph_moa.nodes.models.redact import redact


class _MaskedCompletions:
    """An OpenAI SDK ``chat.completions`` whose API errors have any API key masked."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def with_raw_response(self) -> _MaskedCompletions:
        # The non-streamed path goes through ``with_raw_response.create``.
        return _MaskedCompletions(self._inner.with_raw_response)

    async def create(self, **kwargs: Any) -> Any:
        try:
            return await self._inner.create(**kwargs)
        except Exception as exc:
            _mask_exception(exc)
            raise


class _MaskedResponse:
    """An HTTP response whose body reads with any API key masked (LangChain records it)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def text(self) -> str:
        return redact(str(self._inner.text))

    @property
    def content(self) -> bytes:
        return self.text.encode()

    def json(self) -> Any:
        return _masked(self._inner.json())


def _masked(value: Any) -> Any:
    return json.loads(redact(json.dumps(value)))


def _mask_exception(exc: BaseException) -> None:
    exc.args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
    for name in ("message", "body"):
        value = getattr(exc, name, None)
        if isinstance(value, str):
            setattr(exc, name, redact(value))
        elif isinstance(value, dict | list):
            setattr(exc, name, _masked(value))
    response = getattr(exc, "response", None)
    if response is not None and not isinstance(response, _MaskedResponse):
        exc.response = _MaskedResponse(response)  # type: ignore[attr-defined]


def mask_keys_in_api_errors(model: BaseChatModel) -> None:
    """Wrap an OpenAI-style client (ChatOpenAI, ChatTogether): both call ``async_client.create``
    (streamed) or ``async_client.with_raw_response.create`` (not streamed)."""
    inner = getattr(model, "async_client", None)
    if inner is not None and hasattr(inner, "create") and not isinstance(inner, _MaskedCompletions):
        model.async_client = _MaskedCompletions(inner)  # type: ignore[attr-defined]

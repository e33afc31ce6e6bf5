"""One model call: streamed, timed, retried when retrying can help, classified when it fails.

This is the project's only retry layer (clients are built with ``max_retries=0``). It is
hand-written rather than tenacity because each wait depends on the error (``Retry-After``) and
the attempt count is part of the result that lands in graph state.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, AnyMessage
from langchain_core.runnables import RunnableConfig

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 20.0
RETRY_AFTER_CAP_S = 60.0
NOT_RETRIED = {400, 401, 403, 404, 422}


class StreamBrokenError(Exception):
    """The stream ended before the model said it was done."""


@dataclass
class CallResult:
    text: str
    message: AIMessageChunk
    attempts: int
    latency_s: float
    ttft_s: float | None


@dataclass
class CallFailedError(Exception):
    kind: str
    message: str
    attempts: int
    latency_s: float

    def __str__(self) -> str:
        return self.message


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (``Retry-After`` as seconds or an HTTP date)."""
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def classify(exc: BaseException) -> tuple[str, bool]:
    """(kind, retryable) for a failed attempt."""
    status = _status(exc)
    if status is not None:
        if status == 429:
            return "rate_limit", True
        if status >= 500 or status in (408, 409):
            return "server", True
        return "client", status not in NOT_RETRIED
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return "timeout", True
    if isinstance(exc, StreamBrokenError):
        return "stream", True
    if "Connection" in type(exc).__name__ or "RemoteProtocol" in type(exc).__name__:
        return "connection", True
    return "other", False


def describe(kind: str, exc: BaseException, timeout: float) -> str:
    if kind == "timeout":
        return f"timed out after {timeout:g} s"
    status = _status(exc)
    body = getattr(exc, "body", None)
    detail = body.get("message") if isinstance(body, dict) else None
    text = str(detail or exc).strip().splitlines()[0] if str(detail or exc).strip() else kind
    return f"HTTP {status}: {text}" if status else text[:300]


def _reports_finish(model: BaseChatModel) -> bool:
    # OpenAI-style streams end with a finish_reason; without it the stream was cut short.
    from langchain_openai.chat_models.base import BaseChatOpenAI

    return isinstance(model, BaseChatOpenAI)


def _finished(model: BaseChatModel, message: AIMessageChunk) -> bool:
    if not _reports_finish(model):
        return True
    return bool((message.response_metadata or {}).get("finish_reason"))


async def _attempt(
    model: BaseChatModel, messages: Sequence[AnyMessage], config: RunnableConfig
) -> tuple[AIMessageChunk, float | None]:
    start = time.perf_counter()
    ttft: float | None = None
    total: AIMessageChunk | None = None
    async for chunk in model.astream(list(messages), config):
        if ttft is None and chunk.content:
            ttft = time.perf_counter() - start
        total = chunk if total is None else total + chunk
    if total is None or not _finished(model, total):
        raise StreamBrokenError("the stream ended before the answer was complete")
    return total, ttft


async def call_model(
    model: BaseChatModel,
    messages: Sequence[AnyMessage],
    *,
    timeout: float,
    max_attempts: int,
    tags: list[str] | None = None,
) -> CallResult:
    """Stream one answer from ``model``; retry transient failures; raise ``CallFailedError``."""
    config: RunnableConfig = {"tags": tags or []}
    start = time.perf_counter()
    for attempt in range(1, max_attempts + 1):
        try:
            async with asyncio.timeout(timeout):
                message, ttft = await _attempt(model, messages, config)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            kind, retryable = classify(exc)
            if not retryable or attempt == max_attempts:
                raise CallFailedError(
                    kind, describe(kind, exc, timeout), attempt, time.perf_counter() - start
                ) from exc
            wait = retry_after_s(exc)
            if wait is None:
                backoff = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
                wait = backoff * random.uniform(0.5, 1.0)  # jitter spreads retries of a layer
            await asyncio.sleep(min(wait, RETRY_AFTER_CAP_S))
            continue
        return CallResult(
            text=_text(message),
            message=message,
            attempts=attempt,
            latency_s=time.perf_counter() - start,
            ttft_s=ttft,
        )
    raise AssertionError("unreachable")


def _text(message: AIMessageChunk) -> str:
    content: Any = message.content
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)

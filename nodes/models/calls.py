"""One model call: timed, retried when retrying can help, classified when it fails.

Streamed only when someone reads the tokens. The call is ``model.ainvoke``: LangChain streams it
when a streaming consumer is attached (LangGraph's ``stream_mode="messages"`` handler) and the
model allows it (``disable_streaming`` unset; proposers get a copy that sets it, see
nodes/models/cache.py), and otherwise makes one non-streamed request. A streamed token costs the
client ~0.3 ms of CPU through the SDK and LangChain; a whole 500-token answer not streamed costs
about as much as a handful of streamed tokens (docs/performance.md).

This is the project's only retry layer (clients are built with ``max_retries=0`` and the graph's
nodes have no retry policy), so ``max_attempts`` is the number of requests a call really makes.
It is hand-written rather than tenacity because each wait depends on the error (``Retry-After``)
and the attempt count is part of the result that lands in graph state.

Retried: HTTP 429 (waiting what ``Retry-After`` asks, seconds or HTTP date, when it is at most
``RETRY_AFTER_CAP_S``), 408, 409 and 5xx, connection errors, timeouts, and a stream that ends or
breaks before the model said it was done. What "broken" means depends on how the call went:

- streamed: the connection broke after answer text had arrived (kind ``stream``), or the stream
  ended without a ``finish_reason`` (kind ``stream``);
- not streamed: the answer arrives whole or not at all. A connection cut before the response was
  complete is a connection error (kind ``connection``, retried like one); a complete response
  without a ``finish_reason`` is an unfinished answer (kind ``stream``, retried).

A streamed answer that broke after text was shown is continued, not started over, when the caller
says how (``resume``, built by ``ask_model`` for answers someone reads:
nodes/models/continuation.py): the next attempt asks the model to continue the text every
failed attempt streamed, and the result's text is all of it.

Never retried: every other 4xx (400 bad request or
context too long, 401 bad key, 403, 404 unknown model, 413, 422), and a response larger than the
request's ``max_tokens`` allows (kind ``too_large``: the provider ignored it, and would again;
nodes/models/http.py cuts it): the call fails at once.
Other waits are exponential backoff with jitter: ``retry_base_s * 2**(n-1)``, times a random
factor in [0.5, 1], capped at ``BACKOFF_CAP_S``.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.runnables.config import merge_configs

from langgraph_moa.nodes.errors import CallFailedError, ContextOverflowError
from langgraph_moa.nodes.models.http import ResponseTooLargeError, answer_bound
from langgraph_moa.nodes.models.redact import redact
from langgraph_moa.nodes.models.tool_arguments import read_whole
from langgraph_moa.nodes.records import ErrorKind

__all__ = [
    "LONE_SURROGATE",
    "SURROGATE_ESCAPE",
    "CallFailedError",
    "CallResult",
    "OnRetry",
    "Resume",
    "Sent",
    "call_model",
    "classify",
    "describe",
]

# Half a UTF-16 pair, which UTF-8 cannot encode (core/batch/outputs.py writes it as U+FFFD too).
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# The one way JSON text (a str: UTF-8 decoded strictly cannot hold one) spells a lone surrogate:
# searching for it is far cheaper than encoding each string parsed from the text.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 20.0
# A longer Retry-After fails the call at once: waiting minutes inside one answer helps nobody.
RETRY_AFTER_CAP_S = 60.0
RETRIED_STATUS = {408, 409, 429}  # and every 5xx
# Failures worth another request: the rest (a client error, an overlong prompt...) fail again.
RETRIED_KINDS: frozenset[ErrorKind] = frozenset(
    {"rate_limit", "server", "connection", "timeout", "stream"}
)
STATUS_HINT = {
    400: "request rejected (e.g. the prompt is longer than the model's context window)",
    401: "authentication failed: check the API key",
    403: "permission denied for this model or key",
    404: "unknown model or endpoint",
    413: "request too large",
    422: "request rejected as invalid",
    429: "rate limited",
}


class StreamBrokenError(Exception):
    """The answer ended before the model said it was done (no ``finish_reason``)."""


@dataclass
class CallResult:
    text: str
    message: AIMessage
    attempts: int
    latency_s: float
    # Time to the first answer text the caller could see, from the start of the attempt that
    # answered: the first streamed token, or the whole answer when the call was not streamed.
    ttft_s: float | None


class OnRetry(Protocol):
    """Called before each retry with the failed attempt's number, its kind and message, and the
    seconds to wait; ``continues``: the next attempt continues the answer text shown so far
    (``resume``) instead of starting over."""

    def __call__(
        self, attempt: int, kind: ErrorKind, message: str, wait_s: float, *, continues: bool = False
    ) -> None: ...


class Sent:
    """The requests a call has sent so far. A call that is cancelled (cut by a layer's quorum, or
    its run stopped) returns no count of its own, yet its requests were paid: its caller reads
    them here."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


# The model and request that continue an answer broken off: given the text streamed so far (every
# failed attempt's, in order) and its pieces (tokens).
Resume = Callable[[str, int], tuple[BaseChatModel, Sequence[AnyMessage]]]


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def retry_wait_s(attempt: int, retry_base_s: float, asked: float | None) -> float:
    """How long to wait before retrying after ``attempt``: what the server asked for, else an
    exponential backoff with jitter (which spreads the retries of a layer)."""
    if asked is not None:
        return asked
    return min(BACKOFF_CAP_S, retry_base_s * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (``Retry-After`` as seconds or an HTTP date, or
    OpenAI's ``retry-after-ms``)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) if response is not None else None
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
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


def _aiohttp_cause(exc: BaseException) -> BaseException | None:
    """The aiohttp error under the SDK's, for a call sent over aiohttp (``Resources.owned_loop``).

    The SDK's aiohttp adapter reports every lost connection (refused, dropped before the
    response) as a connect timeout; the aiohttp error it was raised from says which it was.
    """
    cause = exc.__cause__
    while cause is not None:
        if type(cause).__module__.startswith("aiohttp"):
            return cause
        cause = cause.__cause__
    return None


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__
    return False


def classify(exc: BaseException, *, streamed: bool = False) -> tuple[ErrorKind, bool]:
    """(kind, retryable) for a failed attempt; ``streamed``: answer text had arrived."""
    kind = _kind(exc, streamed)
    return kind, kind in RETRIED_KINDS


def _kind(exc: BaseException, streamed: bool) -> ErrorKind:
    status = _status(exc)
    if status is not None:
        if status == 429:
            return "rate_limit"
        if status >= 500 or status in RETRIED_STATUS:
            return "server"
        return "client"  # 400, 401, 403, 404, 413, 422...: the same request fails again
    if _caused_by(exc, ResponseTooLargeError):
        return "too_large"
    cause = _aiohttp_cause(exc)
    if cause is not None and not isinstance(cause, TimeoutError):
        return "stream" if streamed else "connection"
    if isinstance(exc, ContextOverflowError):
        return "context"
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return "timeout"
    if isinstance(exc, StreamBrokenError):
        return "stream"
    if "Connection" in name or "RemoteProtocol" in name or "ReadError" in name:
        # A connection cut in the middle of an answer is a broken stream.
        return "stream" if streamed else "connection"
    return "other"


def describe(kind: ErrorKind, exc: BaseException, timeout: float) -> str:
    """One short line for records and error messages, with any API key masked."""
    if kind == "timeout":
        return f"timed out after {timeout:g} s"
    status = _status(exc)
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    detail = body.get("message") if isinstance(body, dict) else None
    text = str(detail or exc).strip()
    text = text.splitlines()[0][:300] if text else kind
    if kind == "stream" and not isinstance(exc, StreamBrokenError):
        text = f"the stream broke off before the answer was complete ({text})"
    if status:
        hint = STATUS_HINT.get(status) or ("server error" if status >= 500 else "client error")
        text = f"HTTP {status} {hint}: {text}"
    return redact(text)


def _reports_finish(model: BaseChatModel) -> bool:
    # OpenAI-style streams end with a finish_reason; without it the stream was cut short.
    from langchain_openai.chat_models.base import BaseChatOpenAI

    return isinstance(model, BaseChatOpenAI)


def _finished(model: BaseChatModel, message: BaseMessage) -> bool:
    if not _reports_finish(model):
        return True
    return bool((message.response_metadata or {}).get("finish_reason"))


class _Watch(BaseCallbackHandler):
    """Notes the tokens of a streamed attempt: when the first text came, and how many.

    A callback handler because ``ainvoke`` streams inside LangChain; it runs inline (no thread,
    no task), which costs a few microseconds a token, and nothing when the call is not streamed.
    """

    run_inline = True

    def __init__(self, start: float) -> None:
        self.start = start
        self.chunks = 0
        self.first_s: float | None = None
        self.parts: list[str] = []  # the text streamed (what a reader was shown)
        # The streamed tool calls as they came, by index: id, name and argument text.
        self.calls: dict[Any, list[str]] = {}

    def on_llm_new_token(self, token: str | list[str | dict[str, Any]], **kwargs: Any) -> None:
        if token:
            self.chunks += 1
            if isinstance(token, str):
                self.parts.append(token)
            if self.first_s is None:
                self.first_s = time.perf_counter() - self.start
        message = getattr(kwargs.get("chunk"), "message", None)
        for part in getattr(message, "tool_call_chunks", None) or ():
            call = self.calls.setdefault(part.get("index"), ["", "", ""])
            call[0] = call[0] or part.get("id") or ""
            call[1] += part.get("name") or ""
            call[2] += part.get("args") or ""


async def _attempt(
    model: BaseChatModel,
    messages: Sequence[AnyMessage],
    tags: list[str],
    watch: _Watch,
    bound: Mapping[str, Any],
) -> AIMessage:
    config: RunnableConfig = {"tags": tags}
    if model.disable_streaming is not True:  # it may stream: watch its tokens
        # The node's config (LangGraph's callbacks, with the stream_mode="messages" handler
        # when someone streams) with the watcher added. Only here: it costs ~0.1 ms a call.
        config = merge_configs(ensure_config(config), {"callbacks": [watch]})
    message = await model.ainvoke(list(messages), config, **bound)
    if not _finished(model, message):
        raise StreamBrokenError("the answer ended before the model said it was done")
    if watch.calls:
        return read_whole(message, watch.calls)  # the rule of nodes/models/tool_arguments.py
    return message


async def call_model(
    model: BaseChatModel,
    messages: Sequence[AnyMessage],
    *,
    timeout: float,
    max_attempts: int,
    tags: list[str] | None = None,
    retry_base_s: float = BACKOFF_BASE_S,
    deadline_s: float | None = None,
    on_retry: OnRetry | None = None,
    bound: Mapping[str, Any] | None = None,
    resume: Resume | None = None,
    sent: Sent | None = None,
) -> CallResult:
    """One answer from ``model`` (streamed only when someone reads the tokens, see above);
    retry transient failures; raise ``CallFailedError``.

    ``timeout`` bounds each attempt; ``deadline_s`` (optional) bounds the whole call, attempts
    and waits included: no retry starts that could not finish before it. ``bound``: request
    arguments for the model (tools, response format: nodes/models/tools.py). ``resume``: how
    to continue a streamed answer that broke after text was shown (see above); without it the
    answer starts over. ``sent``: counts each request as it is sent.
    """
    start = time.perf_counter()
    ends = start + deadline_s if deadline_s is not None else None
    shown, pieces = "", 0  # text streamed by failed attempts, which the next one continues
    asked_model, request = model, messages
    for attempt in range(1, max_attempts + 1):
        limit, by_deadline = timeout, False
        if ends is not None and ends - time.perf_counter() < timeout:
            limit, by_deadline = max(0.0, ends - time.perf_counter()), True
        watch = _Watch(time.perf_counter())
        if sent is not None:
            sent.count += 1
        try:
            # Its response may be as large as its max_tokens allows, no larger (http.py).
            with answer_bound(getattr(asked_model, "max_tokens", None)):
                async with asyncio.timeout(limit):
                    message = await _attempt(asked_model, request, tags or [], watch, bound or {})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            elapsed = time.perf_counter() - start
            kind, retryable = classify(exc, streamed=watch.chunks > 0)
            if resume is not None:
                shown, pieces = shown + "".join(watch.parts), pieces + watch.chunks
            if kind == "timeout" and by_deadline:
                raise CallFailedError(
                    "deadline",
                    f"missed the layer deadline of {deadline_s:g} s",
                    attempt,
                    elapsed,
                    shown,
                ) from exc
            message_ = describe(kind, exc, timeout)
            asked = retry_after_s(exc)
            if not retryable or attempt == max_attempts:
                raise CallFailedError(kind, message_, attempt, elapsed, shown, asked) from exc
            if asked is not None and asked > RETRY_AFTER_CAP_S:
                raise CallFailedError(
                    kind,
                    f"{message_} (the server asked to wait {asked:.0f} s, more than the "
                    f"{RETRY_AFTER_CAP_S:.0f} s this call waits)",
                    attempt,
                    elapsed,
                    shown,
                    asked,
                ) from exc
            wait = retry_wait_s(attempt, retry_base_s, asked)
            if ends is not None and time.perf_counter() + wait >= ends:
                raise CallFailedError(
                    kind,
                    f"{message_} (no time left to retry before the layer deadline of "
                    f"{deadline_s:g} s)",
                    attempt,
                    elapsed,
                    shown,
                    asked,
                ) from exc
            if resume is not None and shown:
                try:
                    asked_model, request = resume(shown, pieces)
                except CallFailedError as failed:  # the continuation does not fit the window
                    raise CallFailedError(
                        failed.kind, failed.message, attempt, elapsed, shown
                    ) from exc
            if on_retry is not None:
                on_retry(attempt, kind, message_, wait, continues=bool(shown))
            await asyncio.sleep(wait)
            continue
        end = time.perf_counter()
        if shown:  # a continuation: the answer is the text shown and the rest
            message = message.model_copy(update={"content": shown + _text(message)})
        if LONE_SURROGATE.search(_text(message)):
            # Half a UTF-16 pair (a provider's JSON "\ud83d"): no request holding it, no record,
            # can be encoded as UTF-8. Kept as U+FFFD, as a UTF-8 reader shows a broken byte.
            message = message.model_copy(update={"content": _whole(message.content)})
        return CallResult(
            text=_text(message),
            message=message,
            attempts=attempt,
            latency_s=end - start,
            ttft_s=watch.first_s if watch.first_s is not None else end - watch.start,
        )
    raise AssertionError("unreachable")


def _whole(content: Any) -> Any:
    """``content`` (a string or a list of parts) with each lone surrogate made U+FFFD."""
    if isinstance(content, str):
        return LONE_SURROGATE.sub("\ufffd", content)
    if isinstance(content, list):
        return [
            {**p, "text": _whole(p["text"])} if isinstance(p, dict) and "text" in p else _whole(p)
            for p in content
        ]
    return content


def _text(message: BaseMessage) -> str:
    content: Any = message.content
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)

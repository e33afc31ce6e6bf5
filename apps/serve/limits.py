"""Limits: runs in flight (429 with ``Retry-After`` when full) and the request body size (413).

Runs in flight: a FastAPI dependency with ``yield`` on every run route (OpenAI and LangServe). Its
exit runs after the response has been sent, streams included, so a slot is held exactly as long
as its run streams; a LangServe batch takes one slot per input (``MoARunnable.abatch`` returns
only once every run of the batch has ended). At the limit a request is refused
at once rather than queued: the client (the ``openai`` SDK retries 429s, honouring
``Retry-After``) or its load balancer decides whether to wait or go elsewhere.

Body size: pure ASGI middleware, because FastAPI reads the body before any dependency runs; it
refuses a declared ``Content-Length`` over the limit before reading anything and cuts a chunked
body as soon as it passes the limit. Not FastAPI's ``max_body_size``: Starlette's limiter behind
it answers a declared over-limit body with its own plain-text 413, replacing whatever the app's
handlers send, so clients would not get OpenAI's error shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from langgraph_moa.apps.serve.errors import OpenAIError

# Retry-After of a 429, in seconds. A MoA run takes seconds to tens of seconds, so with dozens of
# runs in flight a slot frees every second or less; a longer wait would only idle the server.
RETRY_AFTER_S = 1


class RunSlots:
    """A counter of runs in flight, bounded by ``limit``. One event loop: no lock needed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def acquire(self, n: int = 1) -> None:
        if n > self.limit:
            raise OpenAIError(
                400,
                f"a batch of {n} runs exceeds the server's limit of {self.limit} runs in flight; "
                "send smaller batches",
                param="inputs",
            )
        if self.in_use + n > self.limit:
            raise OpenAIError(
                429,
                f"the server is at its limit of {self.limit} runs in flight; retry after "
                f"{RETRY_AFTER_S} s",
                code="too_many_runs",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.in_use += n

    def release(self, n: int = 1) -> None:
        self.in_use -= n


def run_slot(slots: RunSlots) -> Callable[[Request], AsyncIterator[None]]:
    """The dependency: a POST (a run) holds a slot until its response is done; other methods
    (LangServe's playground and schemas) pass."""

    async def hold(request: Request) -> AsyncIterator[None]:
        if request.method != "POST":
            yield
            return
        n = await _batch_size(request) if request.url.path.endswith("/batch") else 1
        slots.acquire(n)
        try:
            yield
        finally:
            slots.release(n)

    return hold


async def _batch_size(request: Request) -> int:
    try:
        body: Any = await request.json()  # cached on the request: LangServe reads it again
    except ValueError:
        return 1  # LangServe answers the malformed body
    inputs = body.get("inputs") if isinstance(body, dict) else None
    return max(1, len(inputs)) if isinstance(inputs, list) else 1


class BodyTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"the request body is larger than the server's limit of {limit} bytes"
        )


class BodyLimit:
    """Pure ASGI middleware: 413 for a request body over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = OpenAIError(413, BodyTooLargeError(self.max_bytes).detail)
            await error.response()(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # An HTTPException, so FastAPI passes it on as it is (it turns other errors
                    # raised while reading a body into a 400) and the handler answers 413.
                    raise BodyTooLargeError(self.max_bytes)
            return message

        await self.app(scope, counted, send)

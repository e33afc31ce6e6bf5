"""The HTTP clients of every OpenAI-style chat model (ChatTogether, ChatOpenAI), as the SDK makes
them, with one TLS context for all.

They follow no redirect: a provider's API answers a POST where it is asked, and a redirect would
take the request (and its prompt) to a host nobody chose, past the endpoints a server lets its
clients name (nodes/untrusted.py).

Otherwise each model builds two to four clients of its own, each loading the CA store (~50 ms,
several times that on a busy machine: a 5-model preset took over a second to build) into C memory
that is not given back (~0.5 MB per client: RSS grew by ~16 MB per ``asyncio.run``). Which
clients exist, and for how long (one sync client per process, one async client per event loop),
is decided by their owner, nodes/models/resources.py.

**No answer larger than its max_tokens allows.** Nothing else bounds what a provider sends: one
that ignores ``max_tokens`` and streams without end (or sends an endless JSON body) would fill
the process's memory before any timeout ends the call (3 GB in 10 s, measured). So the async
clients read every response body through ``bound_response`` (a response event hook, httpx's
public API: it runs before the body is read, and the stream it wraps is the one the body is read
from): past ``response_limit(max_tokens)`` bytes the response is closed and the call fails with
``ResponseTooLargeError`` (kind ``too_large``, never retried: the provider would do it again).
The call loop says which ``max_tokens`` the request asked for (``answer_bound``,
nodes/models/calls.py). The clients ask for uncompressed responses (``Accept-Encoding:
identity``), so the bytes counted are the answer's: a compressed one could unpack to a thousand
times its size; one compressed anyway is refused the same way. docs/reliability.md explains the
bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import importlib
from collections.abc import AsyncIterator, Iterator
from typing import Any


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def http_library() -> Any:
    """The HTTP library the openai SDK is built on (httpx today), whichever it is.

    Found through the SDK's own client class, whose direct base is that library's client: the
    SDK exports no name for it. tests/test_private_apis.py fails when that changes.
    """
    import openai

    base = openai.DefaultAsyncHttpxClient.__mro__[1]
    return importlib.import_module(base.__module__.split(".")[0])


def new_tls_context() -> Any:
    """A TLS context with the SDK's HTTP library's trust store (built once per process)."""
    return http_library().create_ssl_context()


def new_sync_client(tls: Any) -> Any:
    import openai

    return openai.DefaultHttpxClient(verify=tls, follow_redirects=False)


def new_async_client(tls: Any, *, aiohttp: bool = False) -> Any:
    """The SDK's async client; ``aiohttp``: with the SDK's aiohttp transport (``openai[aiohttp]``),
    whose session must be closed before its event loop (``Resources.owned_loop``). Every
    response is read within its bound (``bound_response``)."""
    import openai

    options: dict[str, Any] = {
        "verify": tls,
        "follow_redirects": False,
        "headers": {"Accept-Encoding": "identity"},
        "event_hooks": {"response": [bound_response]},
    }
    if aiohttp:
        return openai.DefaultAioHttpClient(**options)
    return openai.DefaultAsyncHttpxClient(**options)


# --- the size of an answer ---------------------------------------------------------------------

# A streamed token costs 200 to 450 bytes of server-sent event (OpenAI's chunk ~220, Together's
# ~350 with its token ids and usage), a non-streamed one far less: 2 KiB a token is several
# times what any provider sends. The base covers the rest of a response (an error page of a
# proxy, keep-alive comments while the request waits in a queue). The cap bounds a call whose
# max_tokens is huge, or unknown.
RESPONSE_BASE_BYTES = 256 * 1024
RESPONSE_BYTES_PER_TOKEN = 2 * 1024
RESPONSE_MAX_BYTES = 64 * 1024 * 1024

_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("moa_limit", default=None)


def response_limit(max_tokens: int | None) -> int:
    """The most bytes a response to a request for ``max_tokens`` may have (its body, as sent)."""
    if not max_tokens or max_tokens < 0:
        return RESPONSE_MAX_BYTES
    return min(RESPONSE_MAX_BYTES, RESPONSE_BASE_BYTES + max_tokens * RESPONSE_BYTES_PER_TOKEN)


@contextlib.contextmanager
def answer_bound(max_tokens: int | None) -> Iterator[None]:
    """Responses to the requests sent in the block are bounded by ``max_tokens``."""
    token = _LIMIT.set(response_limit(max_tokens))
    try:
        yield
    finally:
        _LIMIT.reset(token)


class ResponseTooLargeError(Exception):
    """A provider's response went past the bound of its request's ``max_tokens`` (the provider
    ignored it), or came compressed, which nothing bounds: the call was cut. ``limit``: bytes."""

    def __init__(self, limit: int, encoding: str | None = None) -> None:
        size = f"{limit / 1024 / 1024:.1f} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"
        if encoding is None:
            message = (
                f"the response went past {size}, more than its max_tokens allows: the provider "
                "ignored max_tokens, and the call was cut"
            )
        else:
            message = (
                f"the response came compressed (Content-Encoding: {encoding[:40]}) though asked "
                "not to be: its size could not be bounded, and the call was cut"
            )
        super().__init__(message)
        self.limit, self.encoding = limit, encoding


async def bound_response(response: Any) -> None:
    """The response event hook of the async clients: ``response`` is read within the bound of the
    request being sent (``answer_bound``; ``RESPONSE_MAX_BYTES`` outside any)."""
    limit = _LIMIT.get() or RESPONSE_MAX_BYTES
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise ResponseTooLargeError(limit, encoding)
    response.stream = _bounded_stream()(response.stream, limit)


@functools.cache
def _bounded_stream() -> type:
    """A byte stream of the SDK's HTTP library that ends in ``ResponseTooLargeError`` past its
    limit (built once: the library is found at run time, ``http_library``)."""

    class Bounded(http_library().AsyncByteStream):  # type: ignore[misc]
        def __init__(self, inner: Any, limit: int) -> None:
            self._inner, self._limit = inner, limit

        async def __aiter__(self) -> AsyncIterator[bytes]:
            seen = 0
            async for chunk in self._inner:
                seen += len(chunk)
                if seen > self._limit:
                    raise ResponseTooLargeError(self._limit)
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    return Bounded


def shared_http_clients() -> dict[str, Any]:
    """``http_client`` and ``http_async_client`` arguments for an OpenAI-style chat model."""
    from langgraph_moa.nodes.models.resources import RESOURCES

    return RESOURCES.http_clients()


def cached_loops() -> int:
    """Event loops holding clients (for tests and the memory benchmark)."""
    from langgraph_moa.nodes.models.resources import RESOURCES

    return RESOURCES.loops()

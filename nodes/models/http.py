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
the process's memory before any timeout ends the call (3 GB in 10 s, measured). So every client
(async and sync) reads every response body through a response event hook (``bound_response``,
``bound_sync_response``; the hooks are httpx's public API, run before the body is read): it swaps
the response's ``stream`` (not public: tests/test_private_apis.py fails if the body stops being
read from it) for one that counts. Past ``response_limit(max_tokens)`` bytes an answer is closed
and the call fails with ``ResponseTooLargeError`` (kind ``too_large``, never retried: the
provider would do it again). The call loop says which ``max_tokens`` the request asked for
(``answer_bound``, nodes/models/calls.py). The clients ask for uncompressed responses
(``Accept-Encoding: identity``), so the bytes counted are the answer's: a compressed one could
unpack to a thousand times its size; an answer compressed anyway is refused the same way.

An error reply (status 400 or more) is not an answer: the call fails with its status (retried
or not as that status is), and its text, read for the message, is cut at the bound. One
compressed anyway (a proxy's gzip 502 page) is decoded here, within the bound (gzip and deflate;
any other coding leaves the message empty), so that its status, not its encoding, decides.
docs/reliability.md explains the bound.

**No key in an error's text.** A provider may quote the rejected key in its error reply, and the
SDK's exception carries that text to LangChain's callbacks (tracers such as LangSmith record it)
before our call loop sees it. So an error reply is read whole (it is bounded) and every secret
of the environment masked in it before the SDK reads it: whichever SDK method made the call
(``create``, ``parse``, the beta stream a response format takes). A JSON reply is masked as the
SDK will read it, decoded (``redact_data``): a key written with escapes (``sk-a\\/b``,
``\\u0073k-...``) is plain only then. A streamed answer (200, ``text/event-stream``) may carry an
error too: the SDK raises on any event whose JSON has an ``error`` key (openai/_streaming.py), so
such events are masked the same way (``_Events``); the others pass unchanged. So is a JSON answer
(200) with an ``error`` key, which langchain-openai raises as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import importlib
import importlib.util
import json
import os
import re
import urllib.request
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langgraph_moa.nodes.errors import ProxyError
from langgraph_moa.nodes.models.redact import redact, redact_data


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


def new_sync_client(tls: Any, proxy: str | None = None) -> Any:
    """The SDK's sync client; every response is read within its bound (``bound_sync_response``).
    ``proxy``: every request through it (else the environment's: HTTPS_PROXY, NO_PROXY...)."""
    import openai

    return openai.DefaultHttpxClient(**_options(tls, bound_sync_response, proxy))


def new_async_client(tls: Any, *, aiohttp: bool = False, proxy: str | None = None) -> Any:
    """The SDK's async client; ``aiohttp``: with the SDK's aiohttp transport (``openai[aiohttp]``),
    whose session must be closed before its event loop (``Resources.owned_loop``). Every
    response is read within its bound (``bound_response``). ``proxy``: as ``new_sync_client``."""
    import openai

    options = _options(tls, bound_response, proxy)
    if aiohttp:
        return openai.DefaultAioHttpClient(**options)
    return openai.DefaultAsyncHttpxClient(**options)


def _options(tls: Any, hook: Callable[[Any], Any], proxy: str | None) -> dict[str, Any]:
    if proxy is None:  # the client reads the environment's as it is built
        check_environment_proxies()
    return {
        "verify": tls,
        "follow_redirects": False,
        "headers": {"Accept-Encoding": "identity"},
        "event_hooks": {"response": [hook]},
        **({"proxy": proxy} if proxy else {}),
    }


# --- proxies -----------------------------------------------------------------------------------

# What the HTTP library sends through; socks5 only with the socksio package (not a dependency).
_PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
_PROXY_FIX = "set it to http://host:port, or unset it"


def check_proxy(variable: str, value: str, url: str | None = None) -> None:
    """Raise ``ProxyError`` if the HTTP library cannot send through ``url`` (the proxy
    ``variable`` gives as ``value``), before it refuses as a client is built: with a message
    that names neither the variable nor what to do, and quotes the proxy's user name."""
    library = http_library()
    try:
        parsed = library.URL(url or value)
    except library.InvalidURL as exc:
        # Its reason may quote a part of a password holding "/" ("Invalid port: 'p'").
        reason = "" if "@" in value else f" ({exc})"
        raise ProxyError(variable, value, f"not a valid URL{reason}; {_PROXY_FIX}") from None
    if parsed.scheme not in _PROXY_SCHEMES:
        problem = "not an http://, https:// or socks5:// proxy URL"
        raise ProxyError(variable, value, f"{problem}; {_PROXY_FIX}")
    if not parsed.host:
        raise ProxyError(variable, value, f"names no host; {_PROXY_FIX}")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ProxyError(
            variable, value, f"port {parsed.port} out of range (1-65535); {_PROXY_FIX}"
        )
    if parsed.scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
        problem = "a SOCKS proxy needs the socksio package: pip install socksio, or use an http://"
        raise ProxyError(variable, value, f"{problem} proxy")


def check_environment_proxies() -> None:
    """``check_proxy`` for each proxy of the environment, read as the HTTP library reads them
    (urllib's ``getproxies``: HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, the lower-case name first; a
    value without a scheme is an http:// one)."""
    found = urllib.request.getproxies()
    for scheme in ("http", "https", "all"):
        if value := found.get(scheme):
            names = (f"{scheme}_proxy", f"{scheme.upper()}_PROXY")
            name = next((n for n in names if os.environ.get(n) == value), f"the {scheme} proxy")
            check_proxy(name, value, value if "://" in value else f"http://{value}")


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
    response.stream = _bounded_streams()[1](response.stream, _meter(response), _mask(response))


def bound_sync_response(response: Any) -> None:
    """``bound_response`` for the sync client."""
    response.stream = _bounded_streams()[0](response.stream, _meter(response), _mask(response))


def _meter(response: Any) -> _Meter:
    limit = _LIMIT.get() or RESPONSE_MAX_BYTES
    error = response.status_code >= 400
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return _Meter(limit, error)
    if not error:
        raise ResponseTooLargeError(limit, encoding)
    del response.headers["content-encoding"]  # decoded by the meter: the library must not again
    return _Meter(limit, error, encoding)


# Decoded here (zlib's header detection: gzip's and zlib's, which is what servers send as deflate).
_ZLIB_CODINGS = ("gzip", "x-gzip", "deflate")


class _Meter:
    """A response body's bytes as read (decoded first when ``encoding`` is given): past ``limit``
    an answer fails (``ResponseTooLargeError``), an error reply ends (its status is the failure).
    """

    def __init__(self, limit: int, error: bool, encoding: str = "") -> None:
        self._limit, self._left, self._error = limit, limit, error
        self._unzip = zlib.decompressobj(32 + zlib.MAX_WBITS) if encoding in _ZLIB_CODINGS else None
        self.done = bool(encoding) and self._unzip is None  # a coding not decoded: no text

    def take(self, chunk: bytes) -> bytes:
        if self.done:
            return b""
        if self._unzip is not None:
            try:  # at most one byte past the bound, however much the chunk unpacks to
                chunk = self._unzip.decompress(chunk, self._left + 1)
            except zlib.error:
                self.done = True
                return b""
        if len(chunk) > self._left:
            if not self._error:
                raise ResponseTooLargeError(self._limit)
            self.done = True
            return chunk[: self._left]
        self._left -= len(chunk)
        return chunk


# --- no key in an error ------------------------------------------------------------------------


def _masked(body: bytes) -> bytes:
    """An error's text with every secret masked: in its JSON, decoded, when it is JSON (the SDK
    decodes it), else in its text (not UTF-8, it would still be shown as text)."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return redact(text).encode()
    masked = redact_data(data)
    return body if masked == data else json.dumps(masked, ensure_ascii=False).encode()


class _Whole:
    """An error reply, or a JSON answer (``answer``: masked only if it is an error, which
    langchain-openai raises with its ``error`` as it is): read whole, as the SDK reads it."""

    def __init__(self, *, answer: bool = False) -> None:
        self._pieces: list[bytes] = []
        self._answer = answer

    def feed(self, piece: bytes) -> bytes:
        self._pieces.append(piece)
        return b""

    def finish(self) -> bytes:
        body = b"".join(self._pieces)
        return _masked(body) if not self._answer or _is_error(body) else body


def _is_error(data: bytes) -> bool:
    """Whether JSON ``data`` has an ``error`` key (a byte search first: answers pass untouched)."""
    if not _MAYBE_ERROR.search(data):
        return False
    try:
        decoded = json.loads(data)
    except (ValueError, RecursionError):
        return False
    return isinstance(decoded, dict) and "error" in decoded


# Runs of line ends: two or more line ends (CR LF, CR or LF) end an SSE event.
_LINE_ENDS = re.compile(rb"[\r\n]{2,}")
# What an event's JSON key "error" is written with: the word, or an escape of one of its letters.
_MAYBE_ERROR = re.compile(rb"error|\\u00(?:65|72|6[fF])")


class _Events:
    """A streamed answer, handed on an event at a time (the SDK acts on none before its blank
    line) so that a key split across chunks is whole when masked. Events that may be errors
    (``_MAYBE_ERROR``: a byte search, the rest pass untouched) are read as the SDK reads them."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, piece: bytes) -> bytes:
        held = self._held + piece
        end = 0
        for run in _LINE_ENDS.finditer(held):
            if run.group() != b"\r\n":  # one line end alone
                end = run.end()
        self._held = held[end:]
        return _masked_events(held[:end])

    def finish(self) -> bytes:
        held, self._held = self._held, b""
        return _masked_events(held)


def _masked_events(events: bytes) -> bytes:
    if not _MAYBE_ERROR.search(events):
        return events
    out: list[bytes] = []
    event: list[bytes] = []
    for line in events.splitlines(keepends=True):  # CR LF, CR, LF: the SDK's line ends
        if line.strip(b"\r\n"):
            event.append(line)
        else:
            out.extend(_masked_event(event))
            out.append(line)
            event = []
    out.extend(_masked_event(event))  # the stream's end, not ended by a blank line
    return b"".join(out)


def _masked_event(lines: list[bytes]) -> list[bytes]:
    """An event's lines, its data masked if the SDK would raise it as an error (named ``error``,
    or its data JSON with an ``error`` key)."""
    fields = [line.rstrip(b"\r\n").partition(b":") for line in lines]
    data = b"\n".join(value.removeprefix(b" ") for name, _, value in fields if name == b"data")
    named = any(name == b"event" and value.strip() == b"error" for name, _, value in fields)
    if not named and not _is_error(data):
        return lines
    kept = [line for line, (name, _, _) in zip(lines, fields, strict=True) if name != b"data"]
    return [*kept, *(b"data: " + part + b"\n" for part in _masked(data).split(b"\n"))]


def _mask(response: Any) -> _Whole | _Events | None:
    """How ``response``'s body is masked before the SDK reads it (None: not at all)."""
    if response.status_code >= 400:
        return _Whole()
    kind = response.headers.get("content-type", "").lower()
    if "text/event-stream" in kind:
        return _Events()
    if "application/json" in kind:
        return _Whole(answer=True)
    return None


@functools.cache
def _bounded_streams() -> tuple[type, type]:
    """Byte streams (sync, async) of the SDK's HTTP library, read through a ``_Meter`` (built
    once: the library is found at run time, ``http_library``)."""
    library = http_library()

    class Bounded(library.SyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, meter: _Meter, mask: _Whole | _Events | None) -> None:
            self._inner, self._meter, self._mask = inner, meter, mask

        def __iter__(self) -> Iterator[bytes]:
            mask = self._mask
            if mask is None:
                yield from self._pieces()
                return
            for piece in self._pieces():  # masked where the keys it may quote are whole
                if masked := mask.feed(piece):
                    yield masked
            if masked := mask.finish():
                yield masked

        def _pieces(self) -> Iterator[bytes]:
            for chunk in self._inner:
                if piece := self._meter.take(chunk):
                    yield piece
                if self._meter.done:
                    return  # the rest is not read

        def close(self) -> None:
            self._inner.close()

    class AsyncBounded(library.AsyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, meter: _Meter, mask: _Whole | _Events | None) -> None:
            self._inner, self._meter, self._mask = inner, meter, mask

        async def __aiter__(self) -> AsyncIterator[bytes]:
            mask = self._mask
            if mask is None:
                async for piece in self._pieces():
                    yield piece
                return
            async for piece in self._pieces():
                if masked := mask.feed(piece):
                    yield masked
            if masked := mask.finish():
                yield masked

        async def _pieces(self) -> AsyncIterator[bytes]:
            async for chunk in self._inner:
                if piece := self._meter.take(chunk):
                    yield piece
                if self._meter.done:
                    return

        async def aclose(self) -> None:
            await self._inner.aclose()

    return Bounded, AsyncBounded


def shared_http_clients(proxy: str | None = None) -> dict[str, Any]:
    """``http_client`` and ``http_async_client`` arguments for an OpenAI-style chat model."""
    from langgraph_moa.nodes.models.resources import RESOURCES

    return RESOURCES.http_clients(proxy)


def cached_loops() -> int:
    """Event loops holding clients (for tests and the memory benchmark)."""
    from langgraph_moa.nodes.models.resources import RESOURCES

    return RESOURCES.loops()

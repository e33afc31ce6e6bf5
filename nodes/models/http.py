"""Shared HTTP clients for every OpenAI-style chat model (ChatTogether, ChatOpenAI).

One TLS context, one sync HTTP client per process and one async HTTP client per event loop:
otherwise each model builds two to four clients of its own, each loading the CA store (~50 ms,
several times that on a busy machine: a 5-model preset took over a second to build) into C memory
that is not given back (~0.5 MB per client: RSS grew by ~16 MB per ``asyncio.run``). An async
client's connection pool belongs to the loop that opened it, hence one per loop.
"""

from __future__ import annotations

import asyncio
import importlib
import weakref
from typing import Any

_ASYNC_HTTP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
_SYNC_HTTP: Any = None
_TLS: Any = None


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def forget_closed_loops(cache: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]) -> None:
    """Drop the entries of closed loops from a per-loop cache.

    Weak keys are not enough: a used client's connections hold their loop, so the entry of a
    closed loop would keep itself alive (~16 MB per asyncio.run with a 5-model preset).
    """
    for loop in [loop for loop in cache if loop.is_closed()]:
        del cache[loop]


def shared_http_clients() -> dict[str, Any]:
    """``http_client`` and ``http_async_client`` arguments for an OpenAI-style chat model."""
    import openai

    global _SYNC_HTTP, _TLS
    if _TLS is None:
        # Built by the SDK's own HTTP library (httpx or its successor), with its trust store.
        http = importlib.import_module(
            openai.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0]
        )
        _TLS = http.create_ssl_context()
    if _SYNC_HTTP is None:
        _SYNC_HTTP = openai.DefaultHttpxClient(verify=_TLS)
    loop = running_loop()
    client = _ASYNC_HTTP.get(loop) if loop is not None else None
    if client is None:
        client = openai.DefaultAsyncHttpxClient(verify=_TLS)
        if loop is not None:
            forget_closed_loops(_ASYNC_HTTP)
            _ASYNC_HTTP[loop] = client
    return {"http_client": _SYNC_HTTP, "http_async_client": client}


def cached_loops() -> int:
    """Event loops with an async HTTP client (for tests and the memory benchmark)."""
    return len(_ASYNC_HTTP)

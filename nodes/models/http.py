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
"""

from __future__ import annotations

import asyncio
import importlib
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
    whose session must be closed before its event loop (``Resources.owned_loop``)."""
    import openai

    if aiohttp:
        return openai.DefaultAioHttpClient(verify=tls, follow_redirects=False)
    return openai.DefaultAsyncHttpxClient(verify=tls, follow_redirects=False)


def shared_http_clients() -> dict[str, Any]:
    """``http_client`` and ``http_async_client`` arguments for an OpenAI-style chat model."""
    from langgraph_moa.nodes.models.resources import RESOURCES

    return RESOURCES.http_clients()


def cached_loops() -> int:
    """Event loops holding clients (for tests and the memory benchmark)."""
    from langgraph_moa.nodes.models.resources import RESOURCES

    return RESOURCES.loops()

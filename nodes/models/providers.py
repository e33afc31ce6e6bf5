"""The provider registry: how a ``provider:model`` becomes a LangChain chat model.

Adding a provider means adding one factory to ``PROVIDERS``; nothing else changes. Together goes
through ``langchain-together``; OpenAI and OpenAI-compatible servers (vLLM, Ollama, LM Studio,
llama.cpp server) through ``ChatOpenAI`` with a base URL; the embedded ``local`` model through
llama.cpp (nodes/models/local.py); every other provider LangChain knows through
``init_chat_model``. Models are built here and cached by nodes/models/cache.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel

from langgraph_moa.nodes.errors import ProviderError
from langgraph_moa.nodes.keys import (
    check_base_url,
    check_key_env,
    check_key_goes_to,
    warn_plain_http,
)
from langgraph_moa.nodes.models.catalog import (
    KEY_ENV,
    LOCAL_SERVERS,
    OPENAI_PROXY_ENV,
    Endpoint,
    endpoint,
)
from langgraph_moa.nodes.models.chunks import plain_stream_chunks
from langgraph_moa.nodes.models.http import check_proxy, shared_http_clients
from langgraph_moa.nodes.models.limits import gate_for
from langgraph_moa.nodes.models.redact import register_key_env
from langgraph_moa.nodes.models.request_body import messages_as_body
from langgraph_moa.nodes.models.settings import ModelSettings
from langgraph_moa.nodes.models.tool_arguments import whole_arguments


def _api_key(settings: ModelSettings, *, required: bool, url: str | None = None) -> str | None:
    """The key to send to ``url`` (None: the provider's own endpoint); see nodes/keys.py."""
    env = settings.api_key_env
    if env:
        register_key_env(env)  # its value is masked in every error message and output
        try:  # checked on the spec already; settings made without one are checked here
            check_key_env(env)
        except ValueError as exc:
            raise ProviderError(f"{settings.model}: api_key_env: {exc}") from None
        try:  # and again here: the endpoint may come from the environment (LANGSMITH_GATEWAY)
            check_key_goes_to(env, settings.provider, settings.base_url)
        except ValueError as exc:
            raise ProviderError(f"{settings.model}: {exc}") from None
    key = os.environ.get(env) if env else None
    if not key and required:
        hint = f"set {env}" if env else "set api_key_env in the model's config"
        raise ProviderError(
            f"missing API key for {settings.model}: {hint} (or choose another model)"
        )
    if key and env:
        _check_key_text(key, env)
        if url:
            check_url(url, env)
            warn_plain_http(url, env)
    return key


def _check_key_text(key: str, env: str) -> None:
    """A key pasted with a newline or a ``Bearer`` prefix fails every call in a confusing way."""
    if key != key.strip():
        raise ProviderError(
            f"{env} starts or ends with a space, tab or newline: set it to the key alone"
        )
    if key.lower().startswith("bearer "):
        raise ProviderError(f"{env} starts with 'Bearer ': set it to the key alone, without it")


def check_url(url: str, what: str) -> None:
    try:
        check_base_url(url)
    except ValueError as exc:
        raise ProviderError(f"the endpoint for {what}: {exc}") from None


def _common(settings: ModelSettings) -> dict[str, Any]:
    return {
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "timeout": settings.timeout,
        # One retry layer only: the call loop retries (nodes/models/calls.py), not the client.
        "max_retries": 0,
        **({"seed": settings.seed} if settings.seed is not None else {}),
    }


def _openai_style(settings: ModelSettings, proxy: str | None = None) -> dict[str, Any]:
    """What every OpenAI-style client (ChatTogether, ChatOpenAI) gets.

    - The SDK's Timeout object, not a float: connect, every read, write and pool wait all get the
      timeout explicitly. It also keeps langchain-openai from sharing one cached HTTP client
      (keyed by base URL and a float timeout) across event loops.
    - Usage while streaming too (the cost report needs it).
    - No per-chunk timer: langchain-openai wraps every streamed chunk in asyncio.wait_for (a task
      per chunk, ~20% of a chunk's CPU); the call loop's per-attempt timeout bounds a stalled
      stream already.
    - The shared HTTP clients (nodes/models/http.py), those of ``proxy`` when given.
    """
    import openai

    return {
        **_common(settings),
        "timeout": openai.Timeout(settings.timeout),
        "stream_usage": True,
        "stream_chunk_timeout": None,
        **shared_http_clients(proxy),
    }


def _together(settings: ModelSettings) -> BaseChatModel:
    from langchain_together import ChatTogether

    to = _endpoint(settings)
    # A custom endpoint (a local OpenAI-compatible server) may need no key.
    key = _api_key(settings, required=not settings.base_url and to.env is None, url=to.url)
    return ChatTogether(
        model=settings.name,
        api_key=key or "not-needed",
        base_url=to.url,
        **_openai_style(settings),
    )


def _openai_compatible(settings: ModelSettings) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    to = _endpoint(settings)
    required = not settings.base_url and settings.provider not in LOCAL_SERVERS
    key = _api_key(settings, required=required, url=to.url) or "not-needed"
    # langchain-openai's own proxy variable, honoured by the clients we give it: given both, its
    # client refuses to be built ("Cannot specify 'openai_proxy' if one of 'http_client'...").
    proxy = os.environ.get(OPENAI_PROXY_ENV) if settings.provider == "openai" else None
    if proxy:
        check_proxy(OPENAI_PROXY_ENV, proxy)
    return ChatOpenAI(
        model=settings.name,
        api_key=key,
        base_url=to.url,
        openai_proxy=None,
        # Socket options go only to clients langchain-openai builds, never to ours; left at its
        # default, it warns on every run with a proxy variable set that httpx's proxy detection
        # is off, which is false here (ours honour the proxy: tests/test_proxies.py).
        http_socket_options=(),
        **_openai_style(settings, proxy),
    )


def _endpoint(settings: ModelSettings) -> Endpoint:
    """Where an OpenAI-style model's requests go, given to its client as its base_url: the key
    was checked for that very URL (``check_key_goes_to`` finds it the same way)."""
    to = endpoint(settings.provider, settings.base_url)
    assert to is not None, "every OpenAI-style provider has an endpoint"
    return to


def _langchain(settings: ModelSettings) -> BaseChatModel:
    from langchain.chat_models import init_chat_model

    required = settings.provider in KEY_ENV and not settings.base_url
    key = _api_key(settings, required=required, url=settings.base_url)
    extra: dict[str, Any] = {"api_key": key} if key else {}
    if settings.base_url:
        extra["base_url"] = settings.base_url
        # Else the client reads its provider's default key variable and sends it there.
        extra.setdefault("api_key", "not-needed")
    try:
        model: BaseChatModel = init_chat_model(settings.model, **_common(settings), **extra)
        return model
    except ImportError as exc:
        raise ProviderError(f"provider {settings.provider!r} needs a package: {exc}") from None


def _local(settings: ModelSettings) -> BaseChatModel:
    # Imported on use: llama.cpp is an optional extra.
    from langgraph_moa.nodes.models.local import local_chat_model

    return local_chat_model(settings)


ModelFactory = Callable[[ModelSettings], BaseChatModel]

PROVIDERS: dict[str, ModelFactory] = {
    "together": _together,
    "local": _local,
    "openai": _openai_compatible,
    **dict.fromkeys(LOCAL_SERVERS, _openai_compatible),
}


def known_providers() -> list[str]:
    # init_chat_model's providers have no public list; used only to name them in an error.
    # tests/test_private_apis.py fails if it changes.
    from langchain.chat_models.base import _BUILTIN_PROVIDERS

    return sorted(set(PROVIDERS) | set(_BUILTIN_PROVIDERS))


def check_provider(provider: str, model: str) -> None:
    if provider not in PROVIDERS and provider not in known_providers():
        raise ProviderError(
            f"unknown provider {provider!r} in {model!r}; "
            f"known providers: {', '.join(known_providers())}"
        )


def build_model(settings: ModelSettings) -> BaseChatModel:
    """A new chat model for ``settings`` (use nodes/models/cache.py's ``chat_model`` to reuse)."""
    check_provider(settings.provider, settings.model)
    model = PROVIDERS.get(settings.provider, _langchain)(settings)
    plain_stream_chunks(model)  # first: the others wrap it
    messages_as_body(model)
    whole_arguments(model)  # a tool call's arguments: the streamed answers' rule
    # Every request waits its turn at the model's gate (rpm, and the pause after a 429).
    model.rate_limiter = gate_for(settings)
    # Not streamed: astream falls back to one whole response (far less client CPU per call).
    model.disable_streaming = not settings.stream
    return model

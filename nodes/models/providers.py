"""Turn a ``provider:model`` spec into a LangChain chat model, built once and reused.

Adding a provider means adding one function to ``PROVIDERS``; nothing else changes.
Together goes through ``langchain-together``; OpenAI-compatible servers through ``ChatOpenAI``
with a base URL; every other provider LangChain knows through ``init_chat_model``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import weakref
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel

from langgraph_moa.nodes.context import Context, ModelSpec
from langgraph_moa.nodes.errors import ProviderError
from langgraph_moa.nodes.models.redact import redact, register_key_env

# The API key variable each provider reads when the spec names none.
KEY_ENV = {
    "together": "TOGETHER_API_KEY",
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "groq": "GROQ_API_KEY",
    "mistralai": "MISTRAL_API_KEY",
    "fireworks": "FIREWORKS_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "google_genai": "GOOGLE_API_KEY",
    "xai": "XAI_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
}

# OpenAI-compatible local servers reachable without an API key.
LOCAL_SERVERS = {
    "ollama": ("OLLAMA_HOST", "http://localhost:11434"),
    "lmstudio": ("LMSTUDIO_HOST", "http://localhost:1234"),
    "vllm": ("VLLM_HOST", "http://localhost:8000"),
}


def _api_key(spec: ModelSpec, *, required: bool) -> str | None:
    env = spec.api_key_env or KEY_ENV.get(spec.provider)
    if env:
        register_key_env(env)  # its value is masked in every error message and output
    key = os.environ.get(env) if env else None
    if not key and required:
        hint = f"set {env}" if env else "set api_key_env in the model's config"
        raise ProviderError(f"missing API key for {spec.model}: {hint} (or choose another model)")
    return key


def _common(spec: ModelSpec, ctx: Context) -> dict[str, Any]:
    return {
        "temperature": spec.temperature if spec.temperature is not None else ctx.temperature,
        "max_tokens": spec.max_tokens or ctx.max_tokens,
        "timeout": spec.timeout or ctx.timeout,
        # One retry layer only: the node's call loop retries (nodes/calls.py), not the client.
        "max_retries": 0,
        # Usage is wanted while streaming too (the cost report needs it).
        "stream_usage": True,
        **({"seed": seed} if (seed := _seed(spec, ctx)) is not None else {}),
    }


def _seed(spec: ModelSpec, ctx: Context) -> int | None:
    return spec.seed if spec.seed is not None else ctx.seed


def _openai_common(spec: ModelSpec, ctx: Context) -> dict[str, Any]:
    """``_common`` for OpenAI SDK clients (ChatTogether, ChatOpenAI)."""
    import openai

    seconds = spec.timeout or ctx.timeout
    # The SDK's Timeout object, not a float: connect, every read, write and pool wait all get
    # ``seconds`` explicitly. It also keeps langchain-openai from sharing one cached HTTP client
    # (keyed by base URL and a float timeout) across event loops: a client's connection pool
    # belongs to the loop that opened it ("Event loop is closed" on the next asyncio.run).
    return {**_common(spec, ctx), "timeout": openai.Timeout(seconds)}


def _openai_style() -> dict[str, Any]:
    """What every OpenAI-style client (ChatTogether, ChatOpenAI) gets on top of its settings.

    - No per-chunk timer: langchain-openai wraps every streamed chunk in asyncio.wait_for (a
      task per chunk, ~20% of a chunk's CPU); call_model's per-attempt timeout already bounds a
      stalled stream.
    - Shared HTTP clients, one async client per event loop and one sync client per process,
      all with one TLS context: otherwise each model builds two to four clients of its own,
      each loading the CA store (~50 ms, several times that on a busy machine: a 5-model
      preset took over a second to build) into C memory that is not given back (~0.5 MB per
      client: RSS grew by ~16 MB per asyncio.run).
    """
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
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    client = _ASYNC_HTTP.get(loop) if loop is not None else None
    if client is None:
        client = openai.DefaultAsyncHttpxClient(verify=_TLS)
        if loop is not None:
            _ASYNC_HTTP[loop] = client
    return {"stream_chunk_timeout": None, "http_client": _SYNC_HTTP, "http_async_client": client}


def _together(spec: ModelSpec, ctx: Context) -> BaseChatModel:
    from langchain_together import ChatTogether

    base_url = spec.base_url or os.environ.get("TOGETHER_API_BASE")
    # A custom endpoint (a local OpenAI-compatible server) may need no key.
    key = _api_key(spec, required=base_url is None) or "not-needed"
    extra = {"base_url": base_url} if base_url else {}
    return ChatTogether(
        model=spec.name, api_key=key, **extra, **_openai_common(spec, ctx), **_openai_style()
    )


def _openai_compatible(spec: ModelSpec, ctx: Context) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    base_url = spec.base_url
    if spec.provider in LOCAL_SERVERS and not base_url:
        env, default = LOCAL_SERVERS[spec.provider]
        base_url = os.environ.get(env, default).rstrip("/") + "/v1"
    key = _api_key(spec, required=base_url is None) or "not-needed"
    return ChatOpenAI(
        model=spec.name,
        api_key=key,
        base_url=base_url,
        **_openai_common(spec, ctx),
        **_openai_style(),
    )


def _langchain(spec: ModelSpec, ctx: Context) -> BaseChatModel:
    from langchain.chat_models import init_chat_model

    key = _api_key(spec, required=spec.provider in KEY_ENV and not spec.base_url)
    extra: dict[str, Any] = {"api_key": key} if key else {}
    if spec.base_url:
        extra["base_url"] = spec.base_url
    common = _common(spec, ctx)
    common.pop("stream_usage")
    try:
        model: BaseChatModel = init_chat_model(spec.model, **common, **extra)
        return model
    except ImportError as exc:
        raise ProviderError(f"provider {spec.provider!r} needs a package: {exc}") from None


def _local(spec: ModelSpec, ctx: Context) -> BaseChatModel:
    # Imported on use: llama.cpp is an optional extra.
    from langgraph_moa.nodes.models.local import local_chat_model

    return local_chat_model(spec, ctx)


ModelFactory = Callable[[ModelSpec, Context], BaseChatModel]

PROVIDERS: dict[str, ModelFactory] = {
    "together": _together,
    "local": _local,
    "openai": _openai_compatible,
    **dict.fromkeys(LOCAL_SERVERS, _openai_compatible),
}


def known_providers() -> list[str]:
    from langchain.chat_models.base import _BUILTIN_PROVIDERS

    return sorted(set(PROVIDERS) | set(_BUILTIN_PROVIDERS))


def check_provider(spec: ModelSpec) -> None:
    if spec.provider not in PROVIDERS and spec.provider not in known_providers():
        raise ProviderError(
            f"unknown provider {spec.provider!r} in {spec.model!r}; "
            f"known providers: {', '.join(known_providers())}"
        )


# Built models per event loop: an async HTTP client's connection pool belongs to the loop
# that opened it, so a second ``asyncio.run`` in one process needs its own clients. Weak keys
# let a finished loop's clients go with it.
_MODELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, BaseChatModel]] = (
    weakref.WeakKeyDictionary()
)
_NO_LOOP: dict[Any, BaseChatModel] = {}
_ASYNC_HTTP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
_SYNC_HTTP: Any = None
_TLS: Any = None


def _forget_closed_loops() -> None:
    # Weak keys are not enough: a used client's connections hold their loop, so the entry of
    # a closed loop would keep itself alive (~16 MB per asyncio.run with a 5-model preset).
    for cache in (_MODELS, _ASYNC_HTTP):
        for loop in [loop for loop in cache if loop.is_closed()]:
            del cache[loop]


def chat_model(spec: ModelSpec, ctx: Context) -> BaseChatModel:
    """The chat model for ``spec`` under ``ctx``'s defaults, built once per distinct setting."""
    key = (spec, ctx.temperature, ctx.max_tokens, ctx.seed, ctx.timeout, _env_fingerprint(spec))
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        models = _NO_LOOP
    else:
        found = _MODELS.get(loop)
        if found is None:  # a new loop: the time to drop the clients of loops that are gone
            _forget_closed_loops()
            found = _MODELS[loop] = {}
        models = found
    model = models.get(key)
    if model is None:
        model = models[key] = _build(spec, ctx)
    return model


def _env_fingerprint(spec: ModelSpec) -> tuple[str | None, ...]:
    # Keys and endpoints come from the environment: a change there must give a new client.
    names = [spec.api_key_env or KEY_ENV.get(spec.provider), "TOGETHER_API_BASE"]
    names += [env for env, _ in LOCAL_SERVERS.values()]
    return tuple(os.environ.get(n) if n else None for n in names)


def _build(spec: ModelSpec, ctx: Context) -> BaseChatModel:
    check_provider(spec)
    model = PROVIDERS.get(spec.provider, _langchain)(spec, ctx)
    _mask_keys_in_api_errors(model)
    return model


class _MaskedCompletions:
    """An OpenAI SDK ``chat.completions`` whose API errors have any API key masked.

    A provider may quote the rejected key in its error body. The SDK's exception carries that
    text, and LangChain hands the exception to every callback (tracers such as LangSmith record
    it) before our call loop sees it, so the text is masked here, where the SDK raises it.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

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


def _mask_keys_in_api_errors(model: BaseChatModel) -> None:
    # OpenAI-style clients (ChatOpenAI, ChatTogether) stream through ``async_client.create``.
    inner = getattr(model, "async_client", None)
    if inner is not None and hasattr(inner, "create") and not isinstance(inner, _MaskedCompletions):
        model.async_client = _MaskedCompletions(inner)  # type: ignore[attr-defined]

"""What the project knows about providers and models, written once.

Providers: the API key variable each reads, and the OpenAI-compatible servers that run locally.
Models: facts per ``provider:model`` in catalog.toml (context windows, list prices).
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

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

# OpenAI-compatible local servers reachable without an API key: (variable, default address).
LOCAL_SERVERS = {
    "ollama": ("OLLAMA_HOST", "http://localhost:11434"),
    "lmstudio": ("LMSTUDIO_HOST", "http://localhost:1234"),
    "vllm": ("VLLM_HOST", "http://localhost:8000"),
}

# Where Together's endpoint can be moved (a local OpenAI-compatible server, in tests too).
TOGETHER_BASE_ENV = "TOGETHER_API_BASE"
# The variables that move OpenAI's endpoint: langchain-openai's, then the openai SDK's.
OPENAI_BASE_ENVS = ("OPENAI_API_BASE", "OPENAI_BASE_URL")
# LangSmith's gateway, which langchain-openai puts between them (endpoint() below).
GATEWAY_ENV = "LANGSMITH_GATEWAY"
GATEWAY_KEY_ENV = "LANGSMITH_GATEWAY_API_KEY"  # the key langchain-openai would send it
_GATEWAY_DEFAULT = "https://gateway.smith.langchain.com"  # its value "true", "1" or "yes"
_GATEWAY_OFF = ("", "false", "0", "no")
_GATEWAY_ON = ("true", "1", "yes")
# langchain-openai's proxy for ChatOpenAI (openai: models; ChatTogether does not read it). The
# variables every HTTP client reads (HTTPS_PROXY, NO_PROXY...) hold for every model.
OPENAI_PROXY_ENV = "OPENAI_PROXY"
# The variables that move each provider's endpoint, where its client reads one (keys.py).
BASE_ENV = {"together": (TOGETHER_BASE_ENV,), "openai": OPENAI_BASE_ENVS}
# Each provider's own endpoint, where its client goes when nothing moves it (langchain-together's
# and the openai SDK's defaults): its key may go there even when a config spells it out.
DEFAULT_BASE = {"together": "https://api.together.xyz/v1", "openai": "https://api.openai.com/v1"}


class Endpoint(NamedTuple):
    """Where a model's requests, and its key, go: ``url``, set by the variable ``env`` (None:
    by the model's ``base_url``, or the provider's default)."""

    url: str
    env: str | None


def endpoint(provider: str, base_url: str | None) -> Endpoint | None:
    """Where a ``provider`` model naming ``base_url`` sends its requests, found as its client
    finds it (moa then passes it as the client's base_url, so the two cannot differ); None for a
    provider whose client moa does not build (``init_chat_model``'s: its own endpoint)."""
    if base_url:
        return Endpoint(base_url, None)
    if provider in LOCAL_SERVERS:
        env, default = LOCAL_SERVERS[provider]
        return Endpoint(os.environ.get(env, default).rstrip("/") + "/v1", env)
    if provider == "openai":
        # langchain-openai's order (langchain_core.utils._gateway): OPENAI_API_BASE, then the
        # gateway (plus its OpenAI path), then the SDK's OPENAI_BASE_URL. Empty counts as unset.
        first, last = OPENAI_BASE_ENVS
        if value := os.environ.get(first):
            return Endpoint(value, first)
        gateway = os.environ.get(GATEWAY_ENV, "")
        if gateway.lower() not in _GATEWAY_OFF:
            base = _GATEWAY_DEFAULT if gateway.lower() in _GATEWAY_ON else gateway.rstrip("/")
            return Endpoint(f"{base}/openai/v1", GATEWAY_ENV)
        if value := os.environ.get(last):
            return Endpoint(value, last)
    if provider == "together" and (value := os.environ.get(TOGETHER_BASE_ENV)):
        return Endpoint(value, TOGETHER_BASE_ENV)
    if provider in DEFAULT_BASE:
        return Endpoint(DEFAULT_BASE[provider], None)
    return None


def endpoint_envs(provider: str) -> tuple[str, ...]:
    """The variables ``endpoint`` reads for a ``provider`` model that names no base_url."""
    if provider in LOCAL_SERVERS:
        return (LOCAL_SERVERS[provider][0],)
    if provider == "openai":
        return (*OPENAI_BASE_ENVS, GATEWAY_ENV)
    return BASE_ENV.get(provider, ())


# The window assumed for a model nobody described: small enough for nearly every chat model.
DEFAULT_WINDOW = 8192


@cache
def models() -> dict[str, dict[str, Any]]:
    """catalog.toml: facts per ``provider:model``."""
    text = (resources.files(__package__) / "catalog.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def known_window(model: str) -> int | None:
    """The context window catalog.toml gives for ``model``, if any."""
    window = models().get(model, {}).get("window")
    return int(window) if window is not None else None


def known_price(model: str) -> tuple[float, float] | None:
    """USD per million (input, output) tokens catalog.toml gives for ``model``, if any."""
    price = models().get(model, {}).get("price")
    if price is None:
        return None
    return (float(price["input"]), float(price["output"]))

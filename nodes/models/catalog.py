"""What the project knows about providers and models, written once.

Providers: the API key variable each reads, and the OpenAI-compatible servers that run locally.
Models: facts per ``provider:model`` in catalog.toml (context windows, list prices).
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any

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
# Where the OpenAI client sends a model that names no base_url, in the order it reads them:
# langchain-openai's variable, then the SDK's (LangSmith's gateway, LANGSMITH_GATEWAY, between).
OPENAI_BASE_ENVS = ("OPENAI_API_BASE", "OPENAI_BASE_URL")
GATEWAY_ENV = "LANGSMITH_GATEWAY"
# The variables that move each provider's endpoint, where its client reads one (keys.py).
BASE_ENV = {"together": (TOGETHER_BASE_ENV,), "openai": OPENAI_BASE_ENVS}

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

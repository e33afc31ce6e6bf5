"""Keeping API keys out of everything the project shows or stores.

Keys are read from environment variables only (``ModelSpec.api_key_env`` or the provider's
default variable) and handed straight to the client; they are never put in ``Context``, graph
state, checkpoints or records. Text that comes back from elsewhere (a provider's error message
may quote the key it rejected, an exception may print a header) goes through ``redact`` before it
is recorded, raised or printed.
"""

from __future__ import annotations

import os
import re
from typing import Any

MASK = "***"
# Variables whose value is a secret: every provider default (TOGETHER_API_KEY, OPENAI_API_KEY...)
# and the usual naming of others. Variables named by ModelSpec.api_key_env are added on use.
_SECRET_NAME = re.compile(r"(API_KEY|_KEY|_TOKEN|_SECRET|_PASSWORD)$", re.IGNORECASE)
# Shorter values are not masked: "1" or "true" would blank unrelated text.
_MIN_LEN = 6
_KEY_ENVS: set[str] = set()
_SECRETS: set[str] = set()  # secrets given elsewhere than in a variable (a URL's password)


def register_key_env(name: str) -> None:
    """Mask the value of variable ``name`` from now on (a key named by ``api_key_env``)."""
    _KEY_ENVS.add(name)


def register_secret(value: str) -> None:
    """Mask ``value`` from now on, whatever its length (the caller chose it: ``user:password``
    of a URL given on the command line, which an HTTP client's errors quote)."""
    if value:
        _SECRETS.add(value)


def secret_values() -> list[str]:
    """The secret values set in the environment or registered, longest first."""
    names = {n for n in os.environ if _SECRET_NAME.search(n)} | _KEY_ENVS
    values = {v for n in names if (v := os.environ.get(n)) and len(v) >= _MIN_LEN}
    return sorted(values | _SECRETS, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every secret value of the environment replaced by ``***``."""
    return _masked(text, secret_values())


def redact_data(data: Any) -> Any:
    """Decoded JSON ``data`` with every secret masked in each of its strings, keys included (a
    secret the JSON wrote with escapes, ``sk-a\\/b`` or ``\\u0073k-...``, is plain once decoded)."""
    values = secret_values()  # once: reading them scans the environment

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return _masked(item, values)
        if isinstance(item, list):
            return [walk(x) for x in item]
        if isinstance(item, dict):
            return {_masked(k, values): walk(v) for k, v in item.items()}
        return item

    return walk(data)


def _masked(text: str, values: list[str]) -> str:
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text

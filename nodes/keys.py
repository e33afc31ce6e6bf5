"""Which key may go where: the rules that make a shared config unable to leak a secret.

- A provider's default key variable (TOGETHER_API_KEY, OPENAI_API_KEY...) is sent only to that
  provider's own endpoint, or to one the user moved it to through the provider's environment
  variable (TOGETHER_API_BASE...). A model with a ``base_url`` in a config gets no key unless the
  config names one (``api_key_env``).
- ``api_key_env`` may only name a variable that looks like a key (``*_API_KEY``, ``*_TOKEN``) or
  one the user listed in ``MOA_KEY_ENVS`` (their environment, which a config cannot set): a config
  cannot have HOME or AWS_SECRET_ACCESS_KEY read and sent.
- A ``base_url`` must be http(s); a key sent over plain http to a host that is not this machine
  is warned about on stderr (anyone on the path can read it).
- A key pasted where a name goes is never echoed: an ``api_key_env`` that is not an upper-case
  variable name, or a ``base_url`` holding ``user:password@`` (a URL is written into every batch
  record's settings), is refused without showing the value.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from urllib.parse import urlsplit

ALLOW_ENV = "MOA_KEY_ENVS"  # extra variable names the user allows as api_key_env, comma-separated
_KEY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(_API_KEY|_TOKEN)$")
# What an error may quote back: a variable name as they are written (keys have lower case).
_SHOWN_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
_warned: set[tuple[str, str]] = set()


def check_key_env(name: str) -> str:
    """``name`` if a config may name it as ``api_key_env``; ``ValueError`` says why not."""
    allowed = {n.strip() for n in os.environ.get(ALLOW_ENV, "").split(",") if n.strip()}
    if _KEY_NAME.match(name) or name in allowed:
        return name
    if not _SHOWN_NAME.match(name):  # a key itself, often (sk-..., gsk_..., hf_...): not shown
        raise ValueError(
            "must be the name of the environment variable that holds the key (like "
            "MY_API_KEY), not the key itself; the value given is not shown"
        )
    raise ValueError(
        f"{name!r} does not look like a key variable: only variables named *_API_KEY or *_TOKEN "
        f"are read as keys (to allow {name}, add it to {ALLOW_ENV} in your environment)"
    )


def check_base_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host; ``ValueError`` says why not."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "holds a user name or password (user:password@host), which would be stored with the "
            "URL (every batch record keeps it): give the URL without it, and the key through an "
            "environment variable (api_key_env in a config); the URL is not shown"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    return url


def is_loopback(host: str) -> bool:
    """A host name or address that stays on this machine (no key needed to listen there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_plain_http(url: str, env: str) -> None:
    """Say once on stderr that the key in ``env`` goes unencrypted to another machine."""
    host = urlsplit(url).hostname or ""
    if urlsplit(url).scheme != "http" or is_loopback(host) or (url, env) in _warned:
        return
    _warned.add((url, env))
    if sys.stderr is not None:
        print(
            f"moa: warning: the key in {env} is sent over plain http to {host}: anyone on the "
            "network path can read it (use https)",
            file=sys.stderr,
        )

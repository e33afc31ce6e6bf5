"""Which key may go where: the rules that make a shared config unable to leak a secret.

- A provider's default key variable (TOGETHER_API_KEY, OPENAI_API_KEY...) is sent only to that
  provider's own endpoint (``catalog.DEFAULT_BASE``, also when a config spells it out), or to one
  the user moved it to through the provider's environment variable (TOGETHER_API_BASE...): not
  to LangSmith's gateway (LANGSMITH_GATEWAY), which the OpenAI client also goes to. A model with
  a ``base_url`` in a config gets no key unless the config names one (``api_key_env``).
- ``api_key_env`` may only name a variable that looks like a key (``*_API_KEY``, ``*_TOKEN``) or
  one the user listed in ``MOA_KEY_ENVS`` (their environment, which a config cannot set): a config
  cannot have HOME or AWS_SECRET_ACCESS_KEY read and sent. Nor, unless listed there, a provider's
  default key for any endpoint but that provider's (``check_key_goes_to``), one of moa's own
  variables (``MOA_*``: moa serve's key) or a well-known token of another service
  (``OTHER_SERVICES``: GITHUB_TOKEN...).
- A ``base_url`` must be http(s); a key sent over plain http to a host that is not this machine
  is warned about on stderr (anyone on the path can read it).
- A key pasted where a name goes is never echoed: an ``api_key_env`` that is not an upper-case
  variable name, or a ``base_url`` holding ``user:password@`` or a query string (``?api-key=``;
  a URL is written into every batch record's settings), is refused without showing the value.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
import unicodedata
from typing import NamedTuple
from urllib.parse import urlsplit

ALLOW_ENV = "MOA_KEY_ENVS"  # extra variable names the user allows as api_key_env, comma-separated
_KEY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(_API_KEY|_TOKEN)$")
# What an error may quote back: a variable name as they are written (keys have lower case).
_SHOWN_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
OWN_PREFIX = "MOA_"  # moa's own variables: MOA_SERVER_API_KEY, moa serve's key, among them
# Tokens of code hosts, CI, package registries, secret stores, clouds and tools that many shells
# and every CI job of their kind hold without anyone choosing to (a GitHub Actions job has
# GITHUB_TOKEN): named like keys, but not an LLM endpoint's. Not complete, and cannot be: any
# other *_API_KEY or *_TOKEN the user has set can still be named by a config (docs/reliability.md).
OTHER_SERVICES = frozenset(
    {
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "GH_ENTERPRISE_TOKEN",
        "GITHUB_ENTERPRISE_TOKEN",
        "ACTIONS_RUNTIME_TOKEN",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "GITLAB_TOKEN",
        "CI_JOB_TOKEN",
        "NPM_TOKEN",
        "NODE_AUTH_TOKEN",
        "PYPI_TOKEN",
        "PYPI_API_TOKEN",
        "UV_PUBLISH_TOKEN",
        "CARGO_REGISTRY_TOKEN",
        "CODECOV_TOKEN",
        "AWS_SESSION_TOKEN",
        "VAULT_TOKEN",
        "OP_SERVICE_ACCOUNT_TOKEN",
        "CLOUDFLARE_API_TOKEN",
        "DIGITALOCEAN_TOKEN",
        "HEROKU_API_KEY",
        "VERCEL_TOKEN",
        "SLACK_BOT_TOKEN",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HUGGINGFACEHUB_API_TOKEN",
        "LANGSMITH_API_KEY",
        "LANGCHAIN_API_KEY",
        "WANDB_API_KEY",
    }
)


# The variables langgraph-sdk reads a LangGraph server's key from (sent as x-api-key), the first
# one set (its _get_api_key): LangGraph's own, then LangSmith's and LangChain's, each a key to a
# whole LangSmith account (traces, datasets, deployments).
SERVER_KEY_ENVS = ("LANGGRAPH_API_KEY", "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY")


class ServerKey(NamedTuple):
    """What ``moa batch --server`` sends: ``sent``, the variable whose key goes (None: no key);
    ``withheld``, an account key that is set but kept from a plain-http server."""

    sent: str | None
    withheld: str | None


def server_key(url: str) -> ServerKey:
    """The key for the LangGraph server at ``url``: the first of ``SERVER_KEY_ENVS`` set, as
    langgraph-sdk picks it, but an account key (LangSmith's, LangChain's) only over https, as
    LangGraph Platform's deployments take it, or once the user lists it in ``MOA_KEY_ENVS``: over
    plain http anyone on the path reads it (a local ``langgraph dev`` needs none). Any https host
    gets it: deployments live under several domains, self-hosted ones under their owner's, and
    the URL is the user's own (``--server``; no config can set it)."""
    name = next((n for n in SERVER_KEY_ENVS if os.environ.get(n)), None)
    account = name is not None and name != SERVER_KEY_ENVS[0]
    if account and urlsplit(url).scheme != "https" and name not in allowed_key_envs():
        return ServerKey(None, name)
    return ServerKey(name, None)


def allowed_key_envs() -> set[str]:
    """The variables the user lets a config name and send anywhere (``MOA_KEY_ENVS``)."""
    return {n.strip() for n in os.environ.get(ALLOW_ENV, "").split(",") if n.strip()}


def _allow_hint(name: str) -> str:
    return f"to send it all the same, add {name} to {ALLOW_ENV} in your environment"


def check_key_env(name: str) -> str:
    """``name`` if a config may name it as ``api_key_env``; ``ValueError`` says why not."""
    allowed = allowed_key_envs()
    if name in allowed:
        return name
    if name.startswith(OWN_PREFIX):
        raise ValueError(
            f"{name} is one of moa's own variables ({OWN_PREFIX}*: moa serve's key among them), "
            f"not a provider's key: name the variable that holds this endpoint's key; "
            f"{_allow_hint(name)}"
        )
    if name in OTHER_SERVICES:
        raise ValueError(
            f"{name} is a well-known token of another service (a code host, CI, registry or "
            "cloud), held by many shells and CI jobs: name a variable that holds only this "
            f"endpoint's key; {_allow_hint(name)} (for an LLM endpoint that takes it)"
        )
    if _KEY_NAME.match(name):
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


def check_key_goes_to(name: str, provider: str, base_url: str | None) -> None:
    """``ValueError`` if the key in ``name`` may not go where a ``provider`` model naming
    ``base_url`` sends it (``catalog.endpoint``: the variables its client reads, LangSmith's
    gateway among them). A provider's default key variable goes only to that provider's own
    endpoint, or to the one the user moved it to through the provider's variable
    (TOGETHER_API_BASE); any variable may go anywhere once the user lists it in
    ``MOA_KEY_ENVS``."""
    from langgraph_moa.nodes.models.catalog import (
        BASE_ENV,
        DEFAULT_BASE,
        GATEWAY_ENV,
        GATEWAY_KEY_ENV,
        KEY_ENV,
        endpoint,
    )

    owner = next((p for p, env in KEY_ENV.items() if env == name), None)
    if owner is None or name in allowed_key_envs():
        return
    moved = BASE_ENV.get(owner, ())
    to = endpoint(provider, base_url)
    if owner == provider:
        own = (DEFAULT_BASE.get(owner), *(os.environ.get(env) for env in moved))
        if to is None or any(_same_url(to.url, url) for url in own):
            return
    own_text = f"{owner}'s own endpoint" + (
        f" (or the one you set in {' or '.join(moved)})" if moved else ""
    )
    host = urlsplit(to.url).hostname if to else None
    if base_url:
        where = f"this model's base_url ({host})"
        fix = "leave out base_url, or name another variable"
    elif to and to.env == GATEWAY_ENV:
        where = f"LangSmith's gateway at {host}, where {GATEWAY_ENV} sends it"
        fix = (
            f"unset {GATEWAY_ENV}, or give the model the gateway's key in a config "
            f'(api_key_env = "{GATEWAY_KEY_ENV}")'
        )
    else:
        where = f"the {provider} provider's endpoint"
        fix = "name the variable that holds this model's key"
    raise ValueError(
        f"{name} is the {owner} provider's key: it is sent only to {own_text}, not to {where}; "
        f"{fix}; {_allow_hint(name)}"
    )


def _same_url(url: str, other: str | None) -> bool:
    """The same endpoint, whatever the case of the scheme and host, a default port or a trailing
    slash (``https://API.openai.com:443/v1/`` is OpenAI's own)."""
    return other is not None and _normal(url) == _normal(other)


def _normal(url: str) -> tuple[str, ...]:
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:  # not a port: compared as written
        return (url.strip().rstrip("/"),)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    shown = "" if port in (None, default) else str(port)
    return (parts.scheme.lower(), parts.hostname or "", shown, parts.path.rstrip("/"))


def unprintable_at(url: str) -> int | None:
    """Where ``url`` holds whitespace or a control character (a tab, a newline, a zero-width
    space...), or None. ``urlsplit`` drops tabs and newlines, so such a URL passed for the one
    listed, then the HTTP client refused it: an internal error, not the client's."""
    for i, char in enumerate(url):
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Zs"):
            return i
    return None


def check_base_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host; ``ValueError`` says why not."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "holds a user name or password (user:password@host), which would be stored with the "
            "URL (every batch record keeps it): give the URL without it, and the key through an "
            "environment variable (api_key_env in a config); the URL is not shown"
        )
    if "?" in url or "#" in url:
        # No provider takes one: the clients add their paths after it (a 404), and Azure's
        # api-version is a setting of its own provider (azure_openai), not part of the URL.
        raise ValueError(
            "holds a query string or fragment (after '?' or '#'), which no provider's endpoint "
            "takes and which would be stored with the URL (every batch record keeps it): give "
            "the URL without it, and a key through an environment variable (api_key_env in a "
            "config); the URL is not shown"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if (at := unprintable_at(url)) is not None:
        held = unicodedata.name(url[at], repr(url[at]))
        raise ValueError(
            f"{url[:200]!r} holds {held} at {at}: give the URL alone, with no whitespace or "
            "control character"
        )
    try:
        port = parts.port  # parsed when read: a ValueError for "abc" or 99999
    except ValueError:
        port = 0
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{url!r} has no valid port: give a number from 1 to 65535")
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
    # Which were said is process state, kept by its owner (bounded).
    from langgraph_moa.nodes.models.resources import RESOURCES

    host = urlsplit(url).hostname or ""
    if urlsplit(url).scheme != "http" or is_loopback(host):
        return
    if not RESOURCES.first_plain_http(url, env):
        return
    if sys.stderr is not None:
        print(
            f"moa: warning: the key in {env} is sent over plain http to {host}: anyone on the "
            "network path can read it (use https)",
            file=sys.stderr,
        )

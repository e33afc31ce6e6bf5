"""Settings sent by a server's clients: what they may change, and what only the server chooses.

A server runs models on its own keys and reads its own files; a client may change a mixture
(models, layers, temperature...) but may not:

- send one of the server's keys to an endpoint of the client's choosing (``api_key_env`` on a
  model with a ``base_url``): the key would be the client's to read, and to use elsewhere for
  as long as it is valid. A key goes only to the endpoint its provider uses on the server (the
  provider's own, or the server's ``*_API_BASE``/``*_BASE_URL`` variable);
- name a file of the server: a ``local:`` model other than a bundled one (any other name is read
  as a path, and whether it exists and is a GGUF file would answer questions about the server's
  files; loading it costs the server memory), or a config file by path. Bundled local models
  (``local:smollm2``) and presets go by name;
- point a model at an endpoint (``base_url``) its server does not list: the server would send
  requests wherever a client says, into the server's own network too (its metadata service, its
  databases' HTTP ports), and show the client what came back. ``moa serve``'s clients name no
  endpoint nor key variable (``SERVER_CHOSEN``); a LangGraph server's, those its environment's
  ``MOA_CLIENT_ENDPOINTS`` lists (``moa batch --server`` sends a config's ``base_url``s, which get
  no key): none when unset, ``*`` for any.

On a LangGraph server the run's context is checked by ``check_context`` before it is read, and its
input's ``bind`` by ``check_bind`` (``build_moa_graph(untrusted=True)``: langgraph.json), with the
``ServerRules`` its environment sets, read as the graphs are built.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from langgraph_moa.nodes.caps import Caps
from langgraph_moa.nodes.caps import from_env as caps_from_env
from langgraph_moa.nodes.context import PARENT_FIELD, Context, ModelSpec
from langgraph_moa.nodes.errors import ClientSettingError, ConfigError
from langgraph_moa.nodes.keys import unprintable_at
from langgraph_moa.nodes.models.catalog import KEY_ENV, LOCAL_SERVERS
from langgraph_moa.nodes.models.local import BUNDLED
from langgraph_moa.nodes.models.resources import RESOURCES
from langgraph_moa.nodes.presets import preset_names

MODEL_FIELDS = ("proposers", "aggregator", "fallback_aggregator", "layer_proposers")
ENDPOINTS_ENV = "MOA_CLIENT_ENDPOINTS"


def _parts(url: str) -> SplitResult | None:
    """``url``'s parts, for http(s) URLs with a host and nothing unprintable; None for anything
    else."""
    if unprintable_at(url) is not None:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is no number)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return parts


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    scheme = parts.scheme.lower()
    return scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80)


@dataclass(frozen=True)
class Endpoints:
    """The endpoints a server's clients may point a model at (``base_url``): the URLs listed and
    any path below them, on the same scheme, host and port; every one with ``any``.
    ``clients_choose``: whether clients choose endpoints and key variables at all (``base_url``,
    their provider's own ``api_key_env``); moa serve's do not."""

    listed: tuple[str, ...] = ()
    any: bool = False
    clients_choose: bool = True

    def allows(self, url: str) -> bool:
        if self.any:
            return True
        asked = _parts(url)
        if asked is None or asked.username is not None or asked.password is not None:
            return False
        if {".", ".."} & set(unquote(asked.path).split("/")):
            return False  # the HTTP client resolves them: out of the listed path
        for entry in self.listed:
            allowed = _parts(entry)
            if allowed is None or _origin(allowed) != _origin(asked):
                continue
            base = allowed.path.rstrip("/")
            if asked.path.rstrip("/") == base or asked.path.startswith(base + "/"):
                return True
        return False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Endpoints:
        """What ``MOA_CLIENT_ENDPOINTS`` lists (comma-separated URLs, or ``*``); ``ConfigError``
        naming the entry that is not an http(s) URL."""
        value = environ.get(ENDPOINTS_ENV, "").strip()
        if value == "*":
            return cls(any=True)
        listed = tuple(entry.strip() for entry in value.split(",") if entry.strip())
        for number, entry in enumerate(listed, start=1):
            if _parts(entry) is None:
                shown = f" ({entry!r})" if "@" not in entry else ""  # no password in a log
                raise ConfigError(
                    f"{ENDPOINTS_ENV}: its entry {number}{shown} is not an http(s) URL: list "
                    "the base URLs your clients may name (http://host:port/v1, "
                    "comma-separated), or '*' for any"
                )
        return cls(listed)


# moa serve's: its requests choose neither (both come from its presets and config).
SERVER_CHOSEN = Endpoints(clients_choose=False)


@dataclass(frozen=True)
class ServerRules:
    """What a LangGraph server's clients may ask of one run: its caps (nodes/caps.py) and the
    endpoints they may name, both set by the server's environment."""

    caps: Caps
    endpoints: Endpoints

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServerRules:
        return cls(caps_from_env(environ), Endpoints.from_env(environ))


def check_models(settings: dict[str, Any], *, endpoints: Endpoints, where: str = "") -> None:
    """``ClientSettingError`` for the first model in ``settings`` (a client's Context fields)
    that chooses what only the server may; ``endpoints``: the ``base_url``s a client may name
    (which get no key)."""
    for field in MODEL_FIELDS:
        if field in settings:
            _check_model(settings[field], f"{where}{field}", endpoints)


def _check_model(value: Any, at: str, endpoints: Endpoints) -> None:
    if isinstance(value, list):  # proposers, or layer_proposers' list per layer
        for i, item in enumerate(value):
            _check_model(item, f"{at}[{i}]", endpoints)
        return
    name = value.get("model") if isinstance(value, dict) else value
    if isinstance(value, dict):
        chosen = [k for k in ("base_url", "api_key_env") if value.get(k) is not None]
        if chosen and not endpoints.clients_choose:
            raise ClientSettingError(
                at,
                f"'{chosen[0]}' cannot be set by a request; endpoints and keys come from the "
                "server's presets and config",
            )
        if len(chosen) == 2:
            raise ClientSettingError(
                at,
                "a request may not send a key of the server (api_key_env) to an endpoint it "
                "chooses (base_url); name a model the server has the endpoint and key for "
                "(its provider's *_API_BASE or *_BASE_URL variable there), or leave out "
                "api_key_env",
            )
        url = value.get("base_url")
        if isinstance(url, str) and (at_char := unprintable_at(url)) is not None:
            raise ClientSettingError(
                at,
                f"base_url {url[:200]!r} holds {unicodedata.name(url[at_char], repr(url[at_char]))}"
                f" at {at_char}: send the URL alone, with no whitespace or control character",
            )
        if url is not None and not (isinstance(url, str) and endpoints.allows(url)):
            raise ClientSettingError(
                at,
                f"base_url {str(url)[:200]!r} is not an endpoint this server lets its clients "
                f"name: its operator lists those in the variable {ENDPOINTS_ENV} "
                "(docs/serving.md), or name a model whose endpoint the server has",
            )
        env = value.get("api_key_env")
        if env is not None and isinstance(name, str):
            own = KEY_ENV.get(ModelSpec.model_construct(model=name).provider)
            if env != own:  # any other variable of the server (GITHUB_TOKEN...) to the provider
                raise ClientSettingError(
                    at,
                    "api_key_env may name only the provider's own key variable"
                    f"{f' ({own})' if own else ''}, or be left out; the value is not shown",
                )
    if isinstance(name, str) and not (
        isinstance(value, dict) and value.get("base_url") is not None
    ):
        _check_local_server(name, at, endpoints)  # it goes to the server's own machine
    # Only the bundled names: local.py reads any other name as a path (``~user``, ``.env``...).
    if isinstance(name, str) and name.startswith("local:") and name[6:] not in BUNDLED:
        bundled = ", ".join(f"'local:{b}'" for b in BUNDLED)
        raise ClientSettingError(
            at,
            f"a request may name local models only by their bundled name ({bundled}), "
            "not a file path",
        )


def _check_local_server(name: str, at: str, endpoints: Endpoints) -> None:
    """A model of a local server's provider (``vllm:``, ``ollama:``...) without a ``base_url``
    goes to that server's default address on the server's own machine (providers.py): a client
    may name it only where the operator runs one (its variable set) or lists the address."""
    provider = ModelSpec.model_construct(model=name).provider
    if provider not in LOCAL_SERVERS or endpoints.any:
        return
    env, default = LOCAL_SERVERS[provider]
    address = f"{default}/v1"
    if os.environ.get(env) or endpoints.allows(address):
        return
    listed = f", or lists {address} in {ENDPOINTS_ENV}" if endpoints.clients_choose else ""
    raise ClientSettingError(
        at,
        f"{name!r} would go to {address} on the server's own machine, which this server does "
        f"not let its clients name: its operator sets {env} where it runs a {provider} server"
        f"{listed}",
    )


def check_context(value: Any, endpoints: Endpoints) -> None:
    """``ClientSettingError`` if a run's context chooses what only the server may. ``value``: a
    ``Context`` (LangGraph builds one from the dict a LangGraph server's client sends, before any
    node runs: nothing has been called yet), a dict of its fields, a preset name, or a parent's
    context with a ``moa`` field."""
    if isinstance(value, Context):
        check_models(value.model_dump(exclude_unset=True), endpoints=endpoints)
    elif isinstance(value, str):
        if value not in preset_names():
            raise ClientSettingError(
                "context",
                f"{value!r} is not a preset; a request names presets ({', '.join(preset_names())}),"
                " not files",
            )
    elif isinstance(value, dict):
        check_models(value, endpoints=endpoints)
        nested = value.get(PARENT_FIELD)
        if nested is not None:
            check_context(nested, endpoints)


def check_bind(bind: Any) -> None:
    """``ClientSettingError`` unless a run's ``bind`` (tools, tool choice, response format: its
    input's, as a LangGraph server's client sent it) is what ``binding`` accepts: the proposers
    would be paid before the aggregator's provider refused it."""
    if bind is None:
        return
    from langgraph_moa.nodes.models.tools import bind_problem, binding

    problem = bind_problem(bind)
    if problem is not None:
        raise ClientSettingError(*problem)
    try:
        binding(**bind)
    except ConfigError as exc:
        raise ClientSettingError("bind", str(exc)) from None
    if (digest := _digest(bind)) is not None:
        RESOURCES.note_bind_passed(digest, bind)


def bind_checked(bind: Any, *, digest: bool = True) -> bool:
    """Whether ``bind``, as it is, passed ``check_bind`` in this process: a run's later steps
    read it as the state's ``turn_bind`` and check it again only if it is another (a client's
    ``Command`` may write it, and go past the first step). The very object the first step
    checked is known at once; another (a resumed run's, read from its checkpoint) by its digest
    (milliseconds for a large one: ``digest=False`` answers without it)."""
    if RESOURCES.bind_object_passed(bind):
        return True
    if not digest or (known := _digest(bind)) is None or not RESOURCES.bind_passed(known):
        return False
    RESOURCES.note_bind_passed(known, bind)  # the run's later steps: known at once
    return True


def _digest(bind: Any) -> str | None:
    try:
        text = json.dumps(bind, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        return None
    # A digest, not the text, is kept: a bind may hold megabytes of schemas.
    return hashlib.sha256(text.encode()).hexdigest()

"""Who owns what the process keeps between model calls: one ``Resources`` object, ``RESOURCES``.

Clients are costly to build (a TLS context loads the CA store: ~50 ms and ~0.5 MB of C memory
that is never given back; a ChatTogether builds four OpenAI clients, ~130 ms) and a provider's
limits are per model, not per call, so clients, chat models and rate-limit gates outlive the call
that made them. All of it belongs to ``RESOURCES``, created at import and kept for the life of
the process. Nothing needs opening or closing: an async client goes away with its event loop
(except in a loop whose owner says when it ends, ``owned_loop``: there the clients send over
aiohttp and are closed at the end). Every part is safe to use from any thread.

Scope of each part:

- **the process**, shared by every thread and event loop: the TLS context and the sync HTTP client
  (one more per ``OPENAI_PROXY`` the process was given); the rate-limit gates (``ModelGate``, one
  per model, endpoint and limits: ``_Gates``), so a model's ``rpm``/``tpm`` hold for every call in
  the process, as ``ModelSpec`` documents; the models whose endpoint refused stop sequences
  (``refuses_stop``: asked without them from then on, nodes/models/ask.py; the
  ``MAX_STOP_REFUSALS`` most recent); the digests of the tool bindings a server's client sent that
  passed their checks (``bind_passed``: a run's later steps check a ``turn_bind`` again only if it
  is another, nodes/untrusted.py; the ``MAX_PASSED_BINDS`` most recent), and the objects
  themselves (``bind_object_passed``: the very one the first step checked is known without a
  digest; the ``MAX_PASSED_BIND_OBJECTS`` most recent); the keys already warned about going over
  plain http to another machine (``first_plain_http``: each endpoint and key variable once,
  nodes/keys.py; the ``MAX_PLAIN_HTTP_WARNED`` most recent, so a server whose clients name
  endpoints stays bounded); the background event loop that sync callers' nodes run on (``portal``,
  graphs/adapt.py), started on first use; the sync callers' tasks in flight on it and, while the
  main thread's run waits on several of them in LangGraph's worker threads or a
  ``cancel_on_interrupt()`` block runs in the main thread, the SIGINT handler (``sync_runs``,
  sync_runs.py).
- **an event loop**: the async HTTP client (one more per proxy, as above; its connection pool
  belongs to the loop that opened it) and the chat models built on it, one per ``ModelSettings``
  and key/endpoint environment.
  A closed loop's entries are dropped when a new loop first asks.
- **a layer of a run**: the quorum groups (``layers``, nodes/models/quorum.py), created by the
  layer's first proposer call and removed by its last; the staircase runs (``staircases``,
  nodes/staircase.py), created by the first node of their superstep and removed when its
  aggregator's node ends (kept, bounded, for the step's nodes still to come).

Kept elsewhere on purpose: the call cache is the caller's (``use_call_cache`` sets it in a context
variable; moa batch opens and closes its file); the embedded model's llama.cpp pools stay in
local.py (process-wide behind their own lock, freed at exit); the names of key variables to mask,
and the secrets given in a URL (``register_secret``: a ``--server`` URL's password), stay in
redact.py (process-wide, they only grow); the calls a block paid for are its caller's
(``paid_calls`` sets a context variable, paid.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from langchain_core.language_models import BaseChatModel

from langgraph_moa.nodes.models.catalog import OPENAI_PROXY_ENV, endpoint_envs
from langgraph_moa.nodes.models.http import (
    new_async_client,
    new_sync_client,
    new_tls_context,
    running_loop,
)
from langgraph_moa.nodes.models.limits import ModelGate
from langgraph_moa.nodes.models.settings import ModelSettings
from langgraph_moa.nodes.models.sync_runs import SyncRuns

# Chat models kept per event loop. A server's clients choose settings per request (seed,
# temperature, max_tokens...) and each distinct one is a model of its own (~10 kB): kept without
# bound, a client sending a new seed each time would grow the server's memory for ever. The
# least recently used go; a working set (presets x models x a few settings) stays far below.
MAX_MODELS = 512
# Rate-limit gates kept while no call uses them, for the same reason: a server's client may send
# a model's rpm/tpm (LangServe's settings, a LangGraph server's context), a gate for each value.
MAX_GATES = 512
# Models (at their endpoints) that refused ``stop``: a server's clients may name any number.
MAX_STOP_REFUSALS = 512
# A client sends the same tools run after run: the most recent bindings that passed are kept.
MAX_PASSED_BINDS = 1024
# Endpoints (with the key variable) warned about as plain http: one forgotten is warned again.
MAX_PLAIN_HTTP_WARNED = 512
# The binding objects themselves, for a run's later steps (one each, held: a bind may be
# hundreds of kB): as many as the runs a server has in flight by default (--max-concurrent).
MAX_PASSED_BIND_OBJECTS = 64

V = TypeVar("V")


class _Recent(Generic[V]):
    """Values by key, the least recently used dropped past ``limit()`` (read at each insert). An
    OrderedDict rather than a cache library: none of our dependencies brings one."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self._items: OrderedDict[Any, V] = OrderedDict()
        self._limit = limit

    def get(self, key: Any) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def __setitem__(self, key: Any, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._limit():
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


class _Gates:
    """Rate-limit gates by model, endpoint and limits: one per key for as long as anything uses
    it, and the ``MAX_GATES`` most recently asked for kept while nothing does.

    A gate is what makes calls share a limit, so one still in use is never replaced: a call in
    flight holds its gate (``ask_model``), and so does every chat model built for it (its
    ``rate_limiter``), and a weak map finds it for as long as they do, dropped from the recent
    ones or not. Only a gate nothing holds and ``MAX_GATES`` others were asked for since is
    forgotten, and its model's next call gets a new one. Its request bucket starts empty (its
    first request waits one interval), so no request goes sooner than the old gate allowed; what
    is lost is at most a minute of the old one's past: its tokens per minute and a 429's pause.
    """

    def __init__(self) -> None:
        self._live: weakref.WeakValueDictionary[tuple[Any, ...], ModelGate] = (
            weakref.WeakValueDictionary()
        )
        self._recent: _Recent[ModelGate] = _Recent(lambda: MAX_GATES)

    def get(self, settings: ModelSettings) -> ModelGate:
        key = (settings.model, settings.base_url, settings.rpm, settings.tpm)
        gate = self._live.get(key)
        if gate is None:
            gate = self._live[key] = ModelGate(settings.rpm, settings.tpm)
        self._recent[key] = gate
        return gate

    def __len__(self) -> int:
        return len(self._live)


@dataclass
class _LoopState:
    """What belongs to one event loop."""

    # The async HTTP clients, by proxy (None: the environment's; nodes/models/http.py).
    http: dict[str | None, Any] = field(default_factory=dict)
    models: _Recent[BaseChatModel] = field(default_factory=lambda: _Recent(lambda: MAX_MODELS))
    aiohttp: bool = False  # the HTTP client sends over aiohttp (``Resources.owned_loop``)


class Resources:
    """Clients, chat models, rate-limit gates and run bookkeeping of one process (see above)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tls: Any = None
        self._sync_http: dict[str | None, Any] = {}  # by proxy, as ``_LoopState.http``
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._no_loop = _LoopState()  # sync callers outside any event loop
        self._gates = _Gates()
        self._stop_refusals: _Recent[bool] = _Recent(lambda: MAX_STOP_REFUSALS)
        self._passed_binds: _Recent[bool] = _Recent(lambda: MAX_PASSED_BINDS)
        self._plain_http_warned: _Recent[bool] = _Recent(lambda: MAX_PLAIN_HTTP_WARNED)
        # By id(), the object held: its id is not another's while it is here.
        self._passed_objects: _Recent[Any] = _Recent(lambda: MAX_PASSED_BIND_OBJECTS)
        self._portal: asyncio.AbstractEventLoop | None = None
        self.sync_runs = SyncRuns()
        # Quorum groups by layer run (nodes/models/quorum.py); each touched by its run's loop only.
        self.layers: dict[str, Any] = {}
        # Staircase runs by superstep (nodes/staircase.py); each touched by its run's loop only.
        self.staircases: dict[str, Any] = {}
        # Staircase runs no longer in flight, kept (bounded) for their step's nodes still to come.
        self.staircases_ended: OrderedDict[str, Any] = OrderedDict()

    # --- per event loop ------------------------------------------------------------------------
    def _here(self) -> _LoopState:
        loop = running_loop()
        if loop is None:
            return self._no_loop
        with self._lock:
            state = self._loops.get(loop)
            if state is None:
                # A new loop: the time to drop closed loops' entries. Weak keys are not enough:
                # a used client's connections hold their loop, so it would keep itself alive
                # (~16 MB per asyncio.run with a 5-model preset).
                for gone in [old for old in self._loops if old.is_closed()]:
                    del self._loops[gone]
                state = self._loops[loop] = _LoopState()
            return state

    def http_clients(self, proxy: str | None = None) -> dict[str, Any]:
        """``http_client`` and ``http_async_client`` arguments for an OpenAI-style chat model;
        ``proxy``: clients sending through it (one pair per proxy the process was given)."""
        here = self._here()
        with self._lock:
            if self._tls is None:
                self._tls = new_tls_context()
            sync = self._sync_http.get(proxy)
            if sync is None:
                sync = self._sync_http[proxy] = new_sync_client(self._tls, proxy)
            client = here.http.get(proxy)
            if client is None:
                client = here.http[proxy] = new_async_client(
                    self._tls, aiohttp=here.aiohttp, proxy=proxy
                )
            return {"http_client": sync, "http_async_client": client}

    def chat_model(self, settings: ModelSettings, *, stream: bool = True) -> BaseChatModel:
        """The chat model for ``settings`` in this event loop, built on first use.

        ``stream=False``: its twin that never streams, whoever listens (nodes/models/cache.py).
        """
        from langgraph_moa.nodes.models.providers import build_model  # it asks us for clients

        key = (settings, _env_fingerprint(settings))
        models = self._here().models
        model = models.get(key)
        if model is None:
            model = models[key] = _other_length(models, settings, key[1]) or build_model(settings)
        if stream:
            return model
        quiet = models.get((key, "quiet"))
        if quiet is None:
            quiet = models[(key, "quiet")] = model.model_copy(update={"disable_streaming": True})
        return quiet

    @contextlib.asynccontextmanager
    async def owned_loop(self) -> AsyncIterator[None]:
        """For a caller that owns the running event loop until the block ends (``moa batch``):
        the clients built in it send over aiohttp, and are closed when it ends.

        Per request, aiohttp's connection pool costs the client far less CPU than the SDK's
        default transport (httpx), whose pool checks the socket of every idle connection on each
        request and each response: with dozens of items in flight that was about a quarter of
        ``moa batch``'s CPU per item (docs/performance.md). Only for a known lifetime: an aiohttp
        session must be closed before its loop is, and one left open is reported ("Unclosed client
        session") when collected, so library callers' loops keep the default transport.
        """
        here = self._here()
        with self._lock:
            if here.http or here.models:
                raise RuntimeError("owned_loop: clients were already built in this event loop")
            here.aiohttp = True
        try:
            yield
        finally:
            with self._lock:
                clients, here.http, here.aiohttp = list(here.http.values()), {}, False
                here.models.clear()  # built on the clients closed below
            for client in clients:
                await client.aclose()

    def models(self) -> int:
        """Chat models kept for this event loop (tests: they stay bounded)."""
        return len(self._here().models)

    def loops(self) -> int:
        """Event loops holding clients or models (tests, the memory benchmark: at most 1 idle)."""
        with self._lock:
            return len(self._loops)

    # --- the process ---------------------------------------------------------------------------
    def gate(self, settings: ModelSettings) -> ModelGate:
        """The one gate of ``settings``' model in this process."""
        with self._lock:
            return self._gates.get(settings)

    def gates(self) -> int:
        """Gates kept (tests: they stay bounded)."""
        with self._lock:
            return len(self._gates)

    def refuses_stop(self, settings: ModelSettings) -> bool:
        """Whether ``settings``' model, at its endpoint, refused stop sequences in this process."""
        with self._lock:
            return self._stop_refusals.get(_endpoint_model(settings)) is not None

    def note_refuses_stop(self, settings: ModelSettings) -> None:
        """``settings``' model, at its endpoint, refused stop sequences (it would again)."""
        with self._lock:
            self._stop_refusals[_endpoint_model(settings)] = True

    def bind_passed(self, digest: str) -> bool:
        """Whether the binding of this digest passed its checks in this process."""
        with self._lock:
            return self._passed_binds.get(digest) is not None

    def note_bind_passed(self, digest: str, bind: Any) -> None:
        """``bind``, of this digest, passed its checks (it would again)."""
        with self._lock:
            self._passed_binds[digest] = True
            self._passed_objects[id(bind)] = bind

    def bind_object_passed(self, bind: Any) -> bool:
        """Whether this very object passed (``note_bind_passed``): no digest taken."""
        with self._lock:
            return self._passed_objects.get(id(bind)) is bind

    def first_plain_http(self, url: str, env: str) -> bool:
        """Whether the key in ``env`` going to ``url`` over plain http is news in this process
        (it is not from now on): warned about once (nodes/keys.py ``warn_plain_http``)."""
        with self._lock:
            if self._plain_http_warned.get((url, env)) is not None:
                return False
            self._plain_http_warned[(url, env)] = True
            return True

    def portal(self) -> asyncio.AbstractEventLoop:
        """The background event loop sync callers' nodes run on (started on first use)."""
        with self._lock:
            if self._portal is None:
                self._portal = asyncio.new_event_loop()
                threading.Thread(
                    target=self._portal.run_forever, name="moa-sync", daemon=True
                ).start()
            return self._portal


def _other_length(
    models: _Recent[BaseChatModel], settings: ModelSettings, env: tuple[str | None, ...]
) -> BaseChatModel | None:
    """A model differing only in ``max_tokens`` (staircase chunks ask for several lengths), as a
    copy sharing its clients: a new client would cost ~130 ms; a copy costs microseconds."""
    from langgraph_moa.nodes.models.providers import build_model

    family = ("any-length", replace(settings, max_tokens=1), env)
    found = models.get(family)
    if found is None:
        models[family] = found = build_model(settings)
        return found
    if "max_tokens" not in type(found).model_fields:
        return None
    return found.model_copy(update={"max_tokens": settings.max_tokens})


@functools.cache
def _endpoint_env(provider: str, named_url: bool) -> tuple[str, ...]:
    """The variables that move ``provider``'s endpoint when a model names no base_url, and its
    proxy (a process that changes one talks to the new endpoint from its next call on). Only its
    own: they are read on every call, and each read of an unset variable costs an exception."""
    proxy = (OPENAI_PROXY_ENV,) if provider == "openai" else ()
    return proxy if named_url else (*endpoint_envs(provider), *proxy)


def _env_fingerprint(settings: ModelSettings) -> tuple[str | None, ...]:
    # Keys and endpoints come from the environment: a change there must give a new client.
    names = (settings.api_key_env, *_endpoint_env(settings.provider, bool(settings.base_url)))
    return tuple(os.environ.get(n) if n else None for n in names)


def _endpoint_model(settings: ModelSettings) -> tuple[str | None, ...]:
    """The model and where its requests go (not its key, nor its sampling settings)."""
    names = _endpoint_env(settings.provider, bool(settings.base_url))
    return (settings.model, settings.base_url, *(os.environ.get(n) for n in names))


RESOURCES = Resources()
"""The process's one owner of clients, chat models, gates and run bookkeeping."""

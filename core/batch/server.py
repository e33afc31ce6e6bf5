"""Turns run on a LangGraph server (``moa batch --server URL``), through langgraph-sdk.

Each turn is one stateless run (``runs.wait`` with no thread) of the served graph (assistant
``moa`` by default, what langgraph.json serves), with the batch's settings as its context. The
server queues the runs; on LangGraph Platform its queue workers spread them over machines. The
output, resuming and progress stay here, exactly as for a local run; ``--concurrency`` bounds the
runs submitted (running or queued there). Rate limits (``rpm``/``tpm``) act inside each server
worker.

When the server goes away mid-run, a run in flight is lost with it: its connection drops, or
langgraph-sdk reconnects to it and the server no longer has it (404), or refuses it because it
had started it again on its own (``RetriedRunError``, graphs/retried.py). Such a run is
submitted again, and a submission that cannot connect (nothing reached the server) is made
again once the server is back, for up to ``SERVER_BACK_S``: a restarting server takes seconds.
A server unreachable for longer stops the whole run (``ServerGoneError``) with the finished
items kept, and the same command run again finishes the rest. So does a server that refuses the
run's settings from a client (``ServerRefusedError``: past its caps, say), which every item
shares: refused before any call, nothing is paid and no item is recorded failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, cast

import httpx

from langgraph_moa.core.batch.inputs import Item
from langgraph_moa.core.batch.records import ItemErrorKind, TurnResult, item_kind, settings_summary
from langgraph_moa.core.batch.turns import Message, SampleContexts
from langgraph_moa.graphs.retried import BATCH_ITEM
from langgraph_moa.nodes import errors
from langgraph_moa.nodes.context import Context
from langgraph_moa.nodes.errors import (
    ClientSettingError,
    ConfigError,
    CostCapError,
    MoAError,
    RetriedRunError,
    ServerGoneError,
    ServerKeyError,
    ServerRefusedError,
    ServerUnusableError,
)
from langgraph_moa.nodes.keys import server_key, warn_plain_http
from langgraph_moa.nodes.models.redact import register_key_env, register_secret
from langgraph_moa.nodes.untrusted import Endpoints, check_context

# A run submitted again at most this many times (the server lost it, or refused its retry).
RESUBMITS = 3
# How long a submission that cannot connect waits for the server to come back (langgraph-sdk's
# reconnections to a run in flight span about as long), trying every SERVER_POLL_S.
SERVER_BACK_S = 60.0
SERVER_POLL_S = 1.0
# Errors by which the server refuses a run's settings from a client, before any call: the batch's
# runs share them, so the first one stops the whole run (ServerRefusedError).
REFUSED_SETTINGS = {ClientSettingError.__name__, CostCapError.__name__}


class ServerRunError(MoAError):
    """One run on the server failed."""

    def __init__(self, kind: ItemErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_server_url(url: str) -> None:
    """``ConfigError`` unless ``url`` is an http(s) URL with a host, named without its user name
    and password (``user:password@``, allowed: a server behind basic authentication)."""
    try:
        parts = httpx.URL(url)
        ok = parts.scheme in ("http", "https") and bool(parts.host)
    except (httpx.InvalidURL, TypeError):
        ok = False
    if not ok:
        shown = f" {url!r}" if "@" not in url else " (not shown: it holds a user name)"
        raise ConfigError(
            f"--server{shown} is not an http:// or https:// URL: give the address of a LangGraph "
            "server, like http://127.0.0.1:2024"
        )
    if "?" in url or "#" in url:
        # The SDK puts its paths after the whole URL, so a query string would break every
        # request; and a key in it (?token=...) would be in every message that quotes the URL.
        raise ConfigError(
            "--server (not shown) holds a query string or fragment (after '?' or '#'): give "
            "the server's address alone, like http://127.0.0.1:2024, and its key in "
            "LANGGRAPH_API_KEY"
        )


def _hide_userinfo(url: str) -> None:
    """A ``user:password@`` in ``url`` is masked in every message and record from now on, as
    given and as the HTTP client quotes it in its errors (percent-encoded)."""
    with contextlib.suppress(httpx.InvalidURL, TypeError):
        given = url.split("://", 1)[-1].split("/", 1)[0].rpartition("@")[0]
        for userinfo in (given, httpx.URL(url).userinfo.decode("ascii", "replace")):
            if len(userinfo) >= 3:  # shorter would blank unrelated text ("a" of "a@host")
                register_secret(userinfo)


class ServerTurns:
    """Each turn is a stateless run on the server at ``url``."""

    def __init__(self, url: str, ctx: Context, assistant: str = "moa", samples: int = 1) -> None:
        from langgraph_sdk import get_client

        _hide_userinfo(url)
        self.url = url
        self.assistant = assistant
        self.key = server_key(url)
        if self.key.sent:
            register_key_env(self.key.sent)  # masked in every message and record
            warn_plain_http(url, self.key.sent)
        # The SDK reads the variable itself when it is to go (the first set: the same one);
        # api_key=None keeps it from reading any.
        self.client = get_client(url=url, **({} if self.key.sent else {"api_key": None}))
        self.contexts = SampleContexts(ctx, samples)
        self._sent: dict[int | None, dict[str, Any]] = {}
        self._settings = settings_summary(ctx)
        self._ctx = ctx

    def context_of(self, item: Item) -> dict[str, Any]:
        # Only what differs from the defaults: the server validates it into the same Context.
        if item.sample not in self._sent:
            ctx = self.contexts.of(item)
            self._sent[item.sample] = ctx.model_dump(mode="json", exclude_defaults=True)
        return self._sent[item.sample]

    def settings_of(self, item: Item) -> dict[str, Any]:
        return self._settings

    async def check(self) -> None:
        """Refuse the run before any item is sent, with one clear line (``ServerUnusableError``,
        exit 2: nothing was paid), when the server or the graph is not there, or the
        settings are ones the server refuses from a client (a local GGUF path, a key sent to a
        ``base_url``): every item would fail with it, a round trip each. The server's caps
        (nodes/caps.py) and the endpoints it lets clients name are its environment's, which no
        client can read: a config past them is refused at the first run
        (``ServerRefusedError``), before any model is called."""
        settings = self._ctx.model_dump(mode="json", exclude_defaults=True)
        check_context(settings, Endpoints(any=True))
        try:
            found = await self.client.assistants.search(graph_id=self.assistant, limit=1)
            if not found:
                await self.client.assistants.get(self.assistant)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                raise ServerUnusableError(
                    self.url,
                    f"the LangGraph server at {self.url} serves no graph or assistant "
                    f"{self.assistant!r} (see its langgraph.json; --assistant names another)",
                ) from None
            if exc.response.status_code in (401, 403):
                raise ServerKeyError(
                    self.url, exc.response.status_code, self.key.sent, self.key.withheld
                ) from None
            raise ServerUnusableError(
                self.url, f"the LangGraph server at {self.url} answered: {exc}"
            ) from None
        except httpx.HTTPError as exc:
            raise ServerUnusableError(
                self.url,
                f"cannot reach the LangGraph server at {self.url} ({type(exc).__name__}: {exc}); "
                "start one with 'langgraph dev' or check the URL",
            ) from None

    async def turn(self, item: Item, messages: list[Message], index: int) -> TurnResult:
        for attempt in range(RESUBMITS + 1):
            out = await self._run(item, messages, index, last=attempt == RESUBMITS)
            if out is not None:
                return self._result(out)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _run(
        self, item: Item, messages: list[Message], index: int, *, last: bool
    ) -> dict[str, Any] | None:
        """The run's final state; None when the run is to be submitted again."""
        try:
            out = await self._wait(item, messages, index)
        except httpx.TransportError as exc:
            # Unreachable for SERVER_BACK_S, or the connection dropped mid-run: the server went
            # away with the run (lost, as on a 404), to submit again once it is back.
            if isinstance(exc, httpx.ConnectError) or last:
                raise ServerGoneError(self.url, "mid-run", f"{type(exc).__name__}: {exc}") from None
            return None
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404 and not last:
                return None  # a restarted server no longer has the run: submit it again
            raise ServerRunError("server", f"the server failed the run: {exc}") from None
        except httpx.HTTPError as exc:
            raise ServerRunError("server", f"the server failed the run: {exc}") from None
        except json.JSONDecodeError as exc:  # orjson's, the SDK's decoder, is one too
            # Cut off: the JSON broke off at its end, or only the whitespace the server sends
            # every 5 s while a run goes (langgraph-api's keep-alive) came before it went away.
            cut_off = exc.pos >= len(exc.doc) or not exc.doc.strip()
            if not cut_off:  # not JSON at all (a proxy's page?): this run's failure
                raise ServerRunError("server", f"the server's answer is not JSON: {exc}") from None
            # The server went away mid-answer. Lost, as on a 404.
            if not last:
                return None
            raise ServerGoneError(self.url, "mid-answer", f"{type(exc).__name__}: {exc}") from None
        if not isinstance(out, dict):
            raise ServerRunError("server", f"the server returned {type(out).__name__}, not a state")
        if "__error__" in out:
            error = out["__error__"] if isinstance(out["__error__"], dict) else {}
            name = str(error.get("error", "Error"))
            message = str(error.get("message", name))
            # Refused as a retry, or lost: a restarted server answers the reconnected wait
            # with the 404 of a run it does not have.
            lost = name == "HTTPException" and message.startswith("404")
            if name in REFUSED_SETTINGS:  # every item's run would be refused alike
                raise ServerRefusedError(self.url, name, message)
            refused = name == RetriedRunError.__name__
            if (refused or lost) and not last:
                return None
            if refused:  # its message says it is submitted again: no longer so
                message = (
                    f"item {item.id}: the server started this run again on its own after each "
                    f"of {RESUBMITS + 1} submissions (restarts, or crashed workers), refused "
                    "each time so it is not paid twice: once the server is stable, run the "
                    "same command again with --retry-failed"
                )
            raise ServerRunError(_kind_of(name), message)
        return out

    async def _wait(self, item: Item, messages: list[Message], index: int) -> Any:
        """``runs.wait`` for the turn, submitted again while it cannot connect (nothing reached
        the server), until the server is back or ``SERVER_BACK_S`` has passed."""
        gone_since: float | None = None
        while True:
            try:
                return await self.client.runs.wait(
                    None,
                    self.assistant,
                    input=cast(dict[str, Any], {"messages": messages}),
                    context=self.context_of(item),
                    metadata=cast(dict[str, Any], {BATCH_ITEM: item.id, "turn": index}),
                    raise_error=False,
                    on_disconnect="cancel",
                )
            except httpx.ConnectError:
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since >= SERVER_BACK_S:
                    raise
                await asyncio.sleep(SERVER_POLL_S)

    def _result(self, out: dict[str, Any]) -> TurnResult:
        try:
            content = out["messages"][-1]["content"]
            answer = content if isinstance(content, str) else _text(content)
            return TurnResult(answer=answer, layers=out["layers"], aggregator=out["answer"])
        except (KeyError, IndexError, TypeError):
            raise ServerRunError(
                "server",
                f"the run's state has no MoA answer (is {self.assistant!r} the MoA graph?)",
            ) from None


def _kind_of(name: str) -> ItemErrorKind:
    """The record's kind for an error the server names (its class in nodes/errors.py)."""
    cls = getattr(errors, name, None)
    found = item_kind(cls) if isinstance(cls, type) and issubclass(cls, MoAError) else None
    return found or "server"


def _text(content: Any) -> str:
    return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)

"""The server's own settings: how it listens and what it allows (the runs' are in ``Context``).

Light: ``moa serve``'s command reads the defaults before the serve extra is known to be installed.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from langgraph_moa.nodes.caps import Caps

# Runs in flight. Not the server's CPU: a run costs it about 70 ms (benchmarks/serve_load: three
# 200-token proposals and a 500-token answer), so one core would keep ~280 runs of 20 s going.
# The providers: a run holds proposers + 1 provider connections for its whole length (10-30 s
# with real models), so 64 runs are some 250-450 concurrent provider requests with the presets'
# 4-6 models, about what a team's provider rate limits allow. Past that the providers' 429s would
# fail or slow every run in flight; refusing early (429 here) lets the client wait or go to
# another replica instead.
DEFAULT_MAX_CONCURRENT = 64
KEY_ENV = "MOA_SERVER_API_KEY"  # the key clients must send
DEFAULT_HOST = "127.0.0.1"  # without a key only this machine can reach the server
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_GRACE_S = 30.0
# A run past this is cancelled and answered 504: under 3 minutes, so that a request whose
# providers all hang ends with a clear error before the usual 3-5 minute proxy and client limits
# cut it silently; the slowest healthy run of a preset (3 layers of 512-token answers at ~20
# tokens/s) takes about 80 s.
DEFAULT_MAX_RUN_S = 170.0
# SSE comment sent while a stream has nothing else to send, so proxies and users see it alive.
DEFAULT_KEEPALIVE_S = 5.0
# A request's headers must have arrived this long after its first byte (or after the connection
# opened), and its body this long after its headers, else 408: a client holding a connection open
# by trickling either (slow loris) holds it no longer. 1 MiB (--max-body) takes under 10 s at
# 1 Mbit/s.
DEFAULT_REQUEST_TIMEOUT_S = 60.0
# A client that reads nothing of its response for this long, once the server's write buffer for
# it is full, is cut (apps/serve/headers.py): its run is cancelled and its slot freed. Clients
# read as data comes; this is a client that stopped, or one holding a slot without reading. It is
# also the time a response has past DEFAULT_MAX_RUN_S from its request to be all sent: a client
# taking a little now and then (a trickle reader) holds its slot no longer than both.
DEFAULT_SEND_TIMEOUT_S = 30.0
# An origin as browsers send it in the Origin header: scheme://host[:port], nothing after; the
# host a name, an IPv4 address or a bracketed IPv6 one.
# A key a client can send: visible ASCII (RFC 9110's header field value, stripped).
_KEY = re.compile(r"[\x21-\x7e]+")
_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[^/?#\s:\[\]]+)(:\d{1,5})?")


class ServeSettings(BaseModel):
    """How ``moa serve`` listens and what it allows."""

    # allow_inf_nan=False: every duration is finite (an infinite --grace was a crash at start).
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    host: str = Field(default=DEFAULT_HOST, description="Interface to listen on.")
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, description="Port; 0 picks a free one.")
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer key every route but GET /health requires (MOA_SERVER_API_KEY); None "
        "= no auth.",
    )
    max_concurrent: int = Field(
        default=DEFAULT_MAX_CONCURRENT,
        ge=1,
        description="Runs in flight at most; beyond it requests get 429 with Retry-After.",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        description="Largest request body accepted; larger ones get 413.",
    )
    grace_s: float = Field(
        default=DEFAULT_GRACE_S,
        ge=0,
        description="On SIGTERM: seconds in-flight streams get to finish before they are cut.",
    )
    caps: Caps = Field(default_factory=Caps, description="What one request may ask for.")
    max_run_s: float = Field(
        default=DEFAULT_MAX_RUN_S,
        gt=0,
        description="A run still going after this many seconds is cancelled and answered 504.",
    )
    request_timeout_s: float = Field(
        default=DEFAULT_REQUEST_TIMEOUT_S,
        gt=0,
        description="Seconds a request's headers may take to arrive (from the connection's "
        "opening, or the request's first byte), and its body after them; then 408.",
    )
    send_timeout_s: float = Field(
        default=DEFAULT_SEND_TIMEOUT_S,
        gt=0,
        description="Seconds a client may read nothing of its response once the server's write "
        "buffer for it is full, and a response has past max_run_s from its request to be all "
        "sent; then the connection is closed and its run cancelled.",
    )
    keepalive_s: float = Field(
        default=DEFAULT_KEEPALIVE_S,
        gt=0,
        description="Seconds between SSE keep-alive comments while a stream has nothing to send.",
    )
    task_shortcut: bool = Field(
        default=True,
        description="Answer chat UIs' background tasks (a last message starting '### Task:', "
        "Open WebUI's titles, tags, follow-ups) with the aggregator alone (apps/serve/tasks.py).",
    )
    show_proposals: bool = Field(
        default=False,
        description="Send the proposals as reasoning_content by default (a request's "
        "show_proposals field overrides it).",
    )
    cors_origins: tuple[str, ...] = Field(
        default=(),
        description="Origins (scheme://host[:port]) whose browser apps may call the server, "
        "'*' for any (CORS; the key is still required). None by default: browsers refuse "
        "cross-origin calls.",
    )

    @field_validator("host")
    @classmethod
    def _address(cls, host: str) -> str:
        # An empty host is every interface to the socket: a typo must not open the server to
        # the network (0.0.0.0 says so on purpose).
        if not host or host != host.strip():
            raise ValueError(
                f"{host!r} is not an address: give one of this machine's (127.0.0.1 for this "
                "machine only, 0.0.0.0 for every interface)"
            )
        return host

    @field_validator("api_key")
    @classmethod
    def _sendable(cls, key: SecretStr | None) -> SecretStr | None:
        # Clients send it in an HTTP header, as ASCII, with surrounding spaces stripped: any
        # other key could never match, and every request would be a 401.
        if key is not None and not _KEY.fullmatch(key.get_secret_value()):
            raise ValueError(
                "must be printable ASCII without spaces, as clients send it in an HTTP header "
                "(e.g. openssl rand -hex 24)"
            )
        return key

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                # A path or a trailing slash would never match what a browser sends: refuse it.
                raise ValueError(
                    f"{origin!r} is not an origin: give scheme://host[:port] with nothing after "
                    "it, as browsers send it (e.g. https://app.example.com), or * for any"
                )
        return origins

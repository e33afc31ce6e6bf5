"""The server's own settings: how it listens and what it allows (the runs' are in ``Context``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

# Runs in flight. Not the server's CPU: a run costs it about 70 ms (benchmarks/serve_load: three
# 200-token proposals and a 500-token answer), so one core would keep ~280 runs of 20 s going.
# The providers: a run holds proposers + 1 provider connections for its whole length (10-30 s
# with real models), so 64 runs are some 250-450 concurrent provider requests with the presets'
# 4-6 models, about what a team's provider rate limits allow. Past that the providers' 429s would
# fail or slow every run in flight; refusing early (429 here) lets the client wait or go to
# another replica instead.
DEFAULT_MAX_CONCURRENT = 64
DEFAULT_HOST = "127.0.0.1"  # without a key only this machine can reach the server
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_GRACE_S = 30.0


class ServeSettings(BaseModel):
    """How ``moa serve`` listens and what it allows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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
    show_proposals: bool = Field(
        default=False,
        description="Send the proposals as reasoning_content by default (a request's "
        "show_proposals field overrides it).",
    )

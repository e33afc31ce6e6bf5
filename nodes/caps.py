"""What one run may cost: a server's caps on the settings its clients send, checked before any call.

A server's client may change a mixture (``moa serve``'s requests, a LangGraph server's run
context), and the server's provider keys pay for it: without caps one client could ask for 50
proposers x 10 layers at 100,000 tokens each. ``check`` refuses a run past a cap with
``CostCapError``, naming the cap, what the run asks for and how the server's operator raises the
cap; it runs before any model is called. ``moa serve`` sets the caps with its flags
(apps/serve/caps.py); a LangGraph server (``build_moa_graph(untrusted=True)``, graphs/served.py)
with the environment variables ``MOA_MAX_<CAP>`` (``from_env``), read when the graph is built.
The defaults fit every preset (the largest, ``moa``: 6 proposers, 3 layers, 13 calls) with room
for a few more models.

Light (pydantic only): ``moa serve``'s command reads the defaults for its flags.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from langgraph_moa.nodes.errors import ConfigError, CostCapError

if TYPE_CHECKING:
    from langgraph_moa.nodes.context import Context


class Caps(BaseModel):
    """The most one run may ask for. Each field's title names it in ``CostCapError``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    proposers: int = Field(
        default=8, ge=1, title="proposers per layer", description="Proposers in any one layer."
    )
    layers: int = Field(
        default=4, ge=1, le=10, title="layers", description="Layers, the aggregator's included."
    )
    calls: int = Field(
        default=24,
        ge=1,
        title="model calls per run",
        description="Model calls of one run: every proposer of every layer, the aggregator and "
        "its fallback. Retries are bounded by attempts.",
    )
    attempts: int = Field(
        default=3, ge=1, le=10, title="max_attempts", description="Attempts per model call."
    )
    timeout: float = Field(
        default=120.0, gt=0, title="timeout (s)", description="Per-call timeout in seconds."
    )
    tokens: int = Field(
        default=4096, ge=1, title="max_tokens", description="max_tokens of any one call."
    )
    chunks: int = Field(
        default=40,
        ge=1,
        title="staircase chunk requests per answer",
        description="With staircase: requests one answer may be written in, each re-sending "
        "the prompt (the default schedule at 4096 tokens takes 35).",
    )

    def provider_requests(self) -> int:
        """The most provider requests one run can make: every call, every attempt."""
        return self.calls * self.attempts


def calls_of(ctx: Context) -> int:
    """The model calls one run of ``ctx`` makes, retries aside."""
    proposers = sum(len(ctx.proposers_of(layer)) for layer in range(1, ctx.layers))
    return proposers + 1 + (ctx.fallback_aggregator is not None)


def chunk_requests(schedule: Sequence[int], tokens: int) -> int:
    """The most requests staircase streaming writes a ``tokens``-token answer in: each but the
    last carries on only once it wrote its chunk's full size (nodes/staircase.py), the sizes
    following ``schedule``, its last repeating."""
    written = requests = 0
    while written < tokens:
        written += schedule[min(requests, len(schedule) - 1)]
        requests += 1
    return requests


def asked(ctx: Context) -> dict[str, float]:
    """What one run of ``ctx`` asks for, per cap (the ``Caps`` fields, in their order)."""
    tokens = max(s.max_tokens or ctx.max_tokens for s in ctx.all_models())
    return {
        "proposers": max((len(ctx.proposers_of(n)) for n in range(1, ctx.layers)), default=0),
        "layers": ctx.layers,
        "calls": calls_of(ctx),
        "attempts": ctx.max_attempts,
        "timeout": max(s.timeout or ctx.timeout for s in ctx.all_models()),
        "tokens": tokens,
        "chunks": chunk_requests(ctx.staircase_chunks, tokens) if ctx.staircase else 1,
    }


def check(
    ctx: Context, caps: Caps, raised_by: Mapping[str, str], remedy: str = "ask for less"
) -> None:
    """``CostCapError`` for the first cap ``ctx`` exceeds. ``raised_by``: per cap, how the
    server's operator raises it (``moa serve --max-calls``...); ``remedy``: what to do."""
    for cap, value in asked(ctx).items():
        limit = getattr(caps, cap)
        if value > limit:
            what = Caps.model_fields[cap].title or cap
            raise CostCapError(cap, what, value, limit, raised_by[cap], remedy)


def env_var(cap: str) -> str:
    """The variable that sets ``cap`` on a LangGraph server, as ``moa serve --max-<cap>`` does."""
    return f"MOA_MAX_{cap.upper()}"


# How a LangGraph server's operator raises each cap, for CostCapError.
RAISED_BY_ENV = {
    cap: f"its operator raises it with the environment variable {env_var(cap)}"
    for cap in Caps.model_fields
}


def from_env(environ: Mapping[str, str] = os.environ) -> Caps:
    """The caps ``environ`` sets (``MOA_MAX_CALLS=40``...), the defaults for those it leaves
    unset or empty; ``ConfigError`` naming the variable for a value that is not a valid cap."""
    given = {}
    for cap in Caps.model_fields:
        value = environ.get(env_var(cap), "").strip()
        if value:
            given[cap] = value
    try:
        return Caps.model_validate(given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            cap = str(error["loc"][0])
            msg = error["msg"][:1].lower() + error["msg"][1:]
            problems.append(f"{env_var(cap)}={given[cap]!r} is not a valid cap ({msg})")
        raise ConfigError(
            f"{'; '.join(problems)}: set a number within the bounds, or unset it for the "
            "default (the caps: docs/serving.md)"
        ) from None

"""What one request may cost: the server's caps on a run's settings, checked before any call.

A request picks a model and may change its settings (LangServe's ``settings``, the OpenAI fields
``max_tokens``...). Without caps, one holder of the server's key could ask for 500 proposers x 10
layers. ``check`` refuses a run past a cap with a 400 naming the cap and the flag that raises it;
it runs when the request is read, so nothing has been called yet. The defaults fit every preset
(the largest, ``moa``: 6 proposers, 3 layers, 13 calls) with room for a few more models.
"""

from __future__ import annotations

from langgraph_moa.apps.serve.errors import OpenAIError
from langgraph_moa.apps.serve.settings import Caps
from langgraph_moa.nodes.context import Context


def calls_of(ctx: Context) -> int:
    """The model calls one run of ``ctx`` makes, retries aside."""
    proposers = sum(len(ctx.proposers_of(layer)) for layer in range(1, ctx.layers))
    return proposers + 1 + (ctx.fallback_aggregator is not None)


def check(ctx: Context, caps: Caps, param: str | None, remedy: str = "ask for less") -> None:
    """400 (``cost_cap_exceeded``) naming the first cap ``ctx`` exceeds; ``param``: the request
    field that chose the settings (``settings``, ``model``...); ``remedy``: what to do about it."""
    widest = max((len(ctx.proposers_of(n)) for n in range(1, ctx.layers)), default=0)
    timeouts = [s.timeout or ctx.timeout for s in ctx.all_models()]
    tokens = [s.max_tokens or ctx.max_tokens for s in ctx.all_models()]
    over = [
        (widest, caps.proposers, "proposers per layer", "--max-proposers"),
        (ctx.layers, caps.layers, "layers", "--max-layers"),
        (calls_of(ctx), caps.calls, "model calls per run", "--max-calls"),
        (ctx.max_attempts, caps.attempts, "max_attempts", "--max-attempts"),
        (max(timeouts), caps.timeout, "timeout (s)", "--max-timeout"),
        (max(tokens), caps.tokens, "max_tokens", "--max-tokens"),
    ]
    for value, cap, what, flag in over:
        if value > cap:
            raise OpenAIError(
                400,
                f"{what} is {value:g}, above this server's cap of {cap:g} per request "
                f"(moa serve {flag}); {remedy}",
                param=param,
                code="cost_cap_exceeded",
            )

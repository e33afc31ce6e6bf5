"""From command-line flags to a validated Context, checked before any model is called."""

from __future__ import annotations

import sys
from typing import Any

from langgraph_moa.nodes.context import Context, build_context
from langgraph_moa.nodes.errors import ConfigError
from langgraph_moa.nodes.models import settings_for
from langgraph_moa.nodes.models.cache import chat_model
from langgraph_moa.nodes.presets import default_preset_name, read_settings


def context_from_flags(
    *,
    preset: str | None,
    config: str | None,
    proposers: list[str] | None,
    aggregator: str | None,
    layers: int | None,
    temperature: float | None,
    max_tokens: int | None,
    quorum: int | None = None,
    quorum_grace: float | None = None,
) -> Context:
    if preset and config:
        raise ConfigError("give either --preset or --config, not both")
    source = config or preset
    if source is None:
        source = default_preset_name()
        if source == "local":
            print(
                "moa: no TOGETHER_API_KEY: running the embedded local model (SmolLM2-135M); "
                "set it for Together's models, or pick one with --preset",
                file=sys.stderr,
            )
    data: dict[str, Any] = read_settings(source)
    if proposers:
        data["proposers"] = proposers
        data.pop("layer_proposers", None)
    overrides = {
        "aggregator": aggregator,
        "layers": layers,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "quorum": quorum,
        "quorum_grace": quorum_grace,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    return build_context(data, source)


def preflight(ctx: Context) -> None:
    """Build every model now: an unknown provider or a missing key fails before any call."""
    for spec in ctx.all_models():
        chat_model(settings_for(spec, ctx))

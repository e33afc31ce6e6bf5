"""The mixtures a server offers as models, and a request's settings applied to one of them.

Every preset is a model (``GET /v1/models``), plus the server's own config file when one was given
(named after the file). A request picks one by name and may change its settings: the OpenAI
fields ``temperature``, ``max_tokens``/``max_completion_tokens`` and ``seed`` become the run's
defaults; LangServe's ``settings`` may set any ``Context`` field.

Endpoints and keys come from the server's presets and config only: a model given in a request may
not carry ``base_url`` or ``api_key_env``, nor name a ``local:`` model file by path
(nodes/untrusted.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph_moa.apps.serve.caps import check as caps_check
from langgraph_moa.apps.serve.errors import OpenAIError
from langgraph_moa.core.settings import STAIRCASE_SUFFIX, split_staircase
from langgraph_moa.nodes.caps import Caps
from langgraph_moa.nodes.context import Context, build_context, load_preset
from langgraph_moa.nodes.errors import ClientSettingError, ConfigError
from langgraph_moa.nodes.presets import preset_names
from langgraph_moa.nodes.untrusted import SERVER_CHOSEN, check_models


class ModelRegistry:
    """Names -> ``Context``: the presets, and the server's own configs (which win on a clash)."""

    def __init__(self, default: str, own: dict[str, Context] | None = None) -> None:
        self.own = dict(own or {})
        self.presets = preset_names()
        self.default = default
        if default not in self.own and default not in self.presets:
            raise ConfigError(
                f"unknown preset {default!r}; choose one of: {', '.join(self.names())}"
            )

    @classmethod
    def from_flags(cls, preset: str | None, config: str | None) -> ModelRegistry:
        """What ``moa serve --preset NAME | --config FILE`` offers; the default preset otherwise."""
        from langgraph_moa.nodes.presets import default_preset_name

        if preset and config:
            raise ConfigError("give either --preset or --config, not both")
        if config:
            name = Path(config).stem
            if name in preset_names():
                # It would silently replace the preset in /v1/models for every client.
                raise ConfigError(
                    f"--config {config}: the file is named like the built-in preset {name!r}, "
                    "which it would replace as a model; rename the file"
                )
            return cls(name, {name: load_preset(config)})
        return cls(preset or default_preset_name())

    def names(self) -> list[str]:
        names = [*self.own, *(p for p in self.presets if p not in self.own)]
        return [*names, self.default + STAIRCASE_SUFFIX]

    def check(self, caps: Caps) -> None:
        """400 if the default model alone is past ``caps`` (checked at start: said to the
        operator, who can raise the cap or serve another default)."""
        remedy = "raise the cap or serve another default model (--preset, --config)"
        caps_check(self.context(None)[1], caps, "model", remedy)

    def context(self, name: str | None) -> tuple[str, Context]:
        """(name, settings) of the model ``name`` (None: the server's default); 400 if unknown."""
        name = name or self.default
        base_name, staircase = split_staircase(name)
        if staircase:  # for clients that send no extra fields; listed for the default model
            base, ctx = self.context(base_name)
            return base + STAIRCASE_SUFFIX, ctx.model_copy(update={"staircase": True})
        if name in self.own:
            return name, self.own[name]
        if name in self.presets:
            return name, load_preset(name)
        raise OpenAIError(
            400,
            f"unknown model {name!r}; this server offers: {', '.join(self.names())}",
            param="model",
            code="model_not_found",
        )


def with_overrides(base: Context, overrides: dict[str, Any], source: str) -> Context:
    """``base`` with a request's settings applied and validated (400 naming the field)."""
    if not overrides:
        return base
    try:
        check_models(overrides, endpoints=SERVER_CHOSEN, where=f"{source}.")
    except ClientSettingError as exc:
        raise OpenAIError(400, str(exc), param=exc.field, code="invalid_settings") from None
    data = base.model_dump(exclude_unset=True)
    if "proposers" in overrides and "layer_proposers" not in overrides:
        data.pop("layer_proposers", None)  # new proposers replace the per-layer lists too
    data.update(overrides)
    try:
        return build_context(data, source)
    except ConfigError as exc:
        raise OpenAIError(400, str(exc), param=source, code="invalid_settings") from None


def openai_overrides(
    temperature: float | None,
    max_tokens: int | None,
    seed: int | None,
    staircase: bool | None = None,
) -> dict[str, Any]:
    """The OpenAI request fields that become the run's defaults."""
    out: dict[str, Any] = {}
    if temperature is not None:
        out["temperature"] = temperature
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    if seed is not None:
        out["seed"] = seed
    if staircase is not None:
        out["staircase"] = staircase
    return out

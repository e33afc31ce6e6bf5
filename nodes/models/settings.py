"""One model's effective settings, worked out once from its ``ModelSpec`` and the run's ``Context``.

A spec leaves most fields unset to mean "the run's default"; every consumer (the model factory,
the context budget, the call loop, the model cache) takes this record instead of redoing
``spec.X or ctx.X``.
"""

from __future__ import annotations

from dataclasses import dataclass

from langgraph_moa.nodes.context import Context, ModelSpec, Price, shared_setting
from langgraph_moa.nodes.models.catalog import KEY_ENV, known_price, known_window


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Everything that decides how one model is built and called. Hashable: the cache key."""

    model: str  # "provider:name"
    temperature: float
    max_tokens: int  # the answer's length limit
    seed: int | None
    timeout: float  # seconds per attempt
    window: int | None  # context window: declared, or from the catalog; None = ask the model
    base_url: str | None  # an OpenAI-compatible endpoint instead of the provider's own
    api_key_env: str | None  # the variable holding the key (never the key itself)
    stream: bool  # stream the answer; False asks for it in one response (less client CPU)
    rpm: float | None  # requests per minute allowed (nodes/models/limits.py), None = no limit
    tpm: float | None  # tokens per minute allowed, None = no limit
    price: tuple[float, float] | None  # USD per million (input, output) tokens; None = unknown

    @property
    def provider(self) -> str:
        return self.model.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.model.split(":", 1)[1]


def settings_for(spec: ModelSpec, ctx: Context) -> ModelSettings:
    """``spec``'s own values where it has them, the run's defaults (``ctx``) elsewhere."""
    return ModelSettings(
        model=spec.model,
        temperature=spec.temperature if spec.temperature is not None else ctx.temperature,
        max_tokens=spec.max_tokens or ctx.max_tokens,
        seed=spec.seed if spec.seed is not None else ctx.seed,
        timeout=spec.timeout or ctx.timeout,
        window=spec.context_window or known_window(spec.model),
        base_url=spec.base_url,
        # The provider's own key goes to the provider only: a config's base_url names its key.
        api_key_env=spec.api_key_env or (None if spec.base_url else KEY_ENV.get(spec.provider)),
        stream=ctx.stream,
        rpm=shared_setting(ctx, spec, "rpm"),
        tpm=shared_setting(ctx, spec, "tpm"),
        price=_price(shared_setting(ctx, spec, "price"), spec.model),
    )


def _price(declared: Price | None, model: str) -> tuple[float, float] | None:
    if declared is not None:
        return (declared.input, declared.output)
    return known_price(model)

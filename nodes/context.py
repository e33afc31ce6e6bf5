"""Run-time settings: the one place every MoA knob lives.

The graph reads these through LangGraph's ``context_schema``: pass ``context=Context(...)``
(or a plain dict with the same fields) to ``invoke``/``stream``. Presets and config files are
just stored ``Context`` values (see ``nodes.presets``).

Layers are counted as in the paper: ``layers`` includes the final aggregator, so ``layers=3``
means two proposer layers followed by the aggregator, and ``layers=1`` asks the aggregator
alone (a single-model baseline).
"""

from __future__ import annotations

import copy
import math
import re
from functools import cache, lru_cache
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from langgraph_moa.nodes.errors import ConfigError
from langgraph_moa.nodes.history import ToolHistory
from langgraph_moa.nodes.keys import check_base_url, check_key_env, check_key_goes_to
from langgraph_moa.nodes.presets import default_preset_name, read_settings
from langgraph_moa.nodes.prompts import AGGREGATION_PROMPT

# What proposers do on a step where the aggregator may call tools (nodes/models/tools.py).
ToolProposers = Literal["advise", "skip_forced", "skip"]

# A seed is a 64-bit signed integer, as OpenAI's API takes it: providers refuse a larger one with
# a 400, which would fail the run after other calls were paid.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
MODEL_NAME = re.compile(r"^(?P<provider>[a-z][a-z0-9_\-]*):(?P<name>\S.*)$")


class Price(BaseModel):
    """What a model costs: USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, description="USD per million input (prompt) tokens.")
    output: float = Field(ge=0, description="USD per million output (answer) tokens.")


class ModelSpec(BaseModel):
    """One model endpoint. A bare string ``"provider:model"`` is accepted wherever a spec is."""

    # allow_inf_nan=False: a duration of inf (or nan) would wait forever.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: str = Field(
        description="Model named 'provider:model', e.g. 'together:Qwen/Qwen2.5-72B-Instruct-Turbo'."
    )
    temperature: float | None = Field(
        default=None,
        ge=0,
        le=2,
        description="Sampling temperature; unset uses Context.temperature.",
    )
    max_tokens: int | None = Field(
        default=None, gt=0, description="Answer length limit; unset uses Context.max_tokens."
    )
    seed: int | None = Field(
        default=None,
        ge=SEED_MIN,
        le=SEED_MAX,
        description="Sampling seed, if the provider takes one.",
    )
    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama, LM Studio...), "
        "http(s) only. It gets no API key unless api_key_env names one (a provider's own key "
        "goes only to that provider).",
    )
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the API key (never the key itself): "
        "*_API_KEY, *_TOKEN, or a name listed in MOA_KEY_ENVS; a provider's own key variable "
        "only for that provider's endpoint, unless listed there.",
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="Per-call timeout in seconds (bounds connecting, every read and each whole "
        "attempt); unset uses Context.timeout.",
    )
    context_window: int | None = Field(
        default=None,
        gt=0,
        description="The model's context window in tokens (prompt + answer); unset uses the "
        "known window of the model (nodes/models/budget.py) or a conservative 8192.",
    )
    rpm: float | None = Field(
        default=None,
        gt=0,
        description="Requests per minute this model may be sent (the provider's limit, or a bit "
        "under it); unset = no request limit. Shared by every call to the model in the process.",
    )
    tpm: float | None = Field(
        default=None,
        gt=0,
        description="Tokens per minute (prompt estimate + max_tokens per call, as providers count "
        "them) this model may be sent; unset = no token limit. Shared like rpm.",
    )
    price: Price | None = Field(
        default=None,
        description="USD per million input and output tokens, for cost reports and estimates; "
        "unset uses the list price in nodes/models/catalog.toml, if the model is there.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"model": value} if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        return None if value is None else check_base_url(value)

    @field_validator("api_key_env")
    @classmethod
    def _key_like(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        check_key_env(value)
        # A provider's key goes to that provider only (model and base_url are checked first).
        found = MODEL_NAME.match(str(info.data.get("model", "")))
        if found:
            check_key_goes_to(value, found["provider"], info.data.get("base_url"))
        return value

    @model_validator(mode="after")
    def _check_name(self) -> ModelSpec:
        if not MODEL_NAME.match(self.model):
            raise ValueError(
                f"model name {self.model!r} must look like 'provider:model', "
                "e.g. 'together:Qwen/Qwen2.5-72B-Instruct-Turbo' or 'openai:gpt-4o-mini'"
            )
        return self

    @property
    def provider(self) -> str:
        return self.model.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.model.split(":", 1)[1]


ModelList = Annotated[list[ModelSpec], Field(min_length=1)]


class Context(BaseModel):
    """Every run-time setting of a Mixture-of-Agents run.

    The models you leave out (``proposers``, ``aggregator``) are the default preset's: Together's
    with TOGETHER_API_KEY set, the embedded ``local`` model without (``default_preset_name``).
    So ``Context()`` is the default preset, and ``Context(layers=1)`` its aggregator alone.
    """

    # allow_inf_nan=False: every duration is finite (inf or nan would wait forever).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    proposers: list[ModelSpec] = Field(
        default_factory=list,
        description="Proposer models of every proposer layer, in order (the order of the "
        "per-layer response lists). Repeat a model to sample it several times (Self-MoA). "
        "Unset: the default preset's.",
    )
    aggregator: ModelSpec = Field(
        description="The model that writes the final, streamed answer. Unset: the default preset's."
    )
    fallback_aggregator: ModelSpec | None = Field(
        default=None,
        description="Writes the answer when the aggregator still fails after its attempts "
        "(recorded in the answer record); None (the default) = the run fails with an error.",
    )
    layers: int = Field(
        default=2,
        ge=1,
        le=10,
        description="Number of layers counting the aggregator, as in the paper: 2 = one "
        "proposer layer + aggregator; 3 = two proposer layers + aggregator; 1 = aggregator alone.",
    )
    layer_proposers: list[ModelList] | None = Field(
        default=None,
        description="Optional proposer list per proposer layer (length layers-1), "
        "overriding 'proposers' when layers should use different models.",
    )
    temperature: float = Field(
        default=0.7, ge=0, le=2, description="Default sampling temperature for every model."
    )
    max_tokens: int = Field(
        default=512, gt=0, description="Default answer length limit for every model."
    )
    seed: int | None = Field(
        default=None,
        ge=SEED_MIN,
        le=SEED_MAX,
        description="Default sampling seed for every model whose own spec sets none (providers "
        "that take one); None (the default) = no seed.",
    )
    timeout: float = Field(
        default=120.0,
        gt=0,
        description="Default per-call timeout in seconds: connecting, every read and each whole "
        "attempt of a call are bounded by it.",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Attempts per model call, the first one included (1 = never retry). The only "
        "retry layer: clients do not retry on their own.",
    )
    retry_base_s: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description="First backoff wait in seconds between attempts; doubled each retry, with "
        "jitter, capped at 20 s. A 429's Retry-After replaces it.",
    )
    min_proposals: int = Field(
        default=1,
        ge=1,
        description="A layer goes on when at least this many of its proposers answered; the "
        "default 1 means one answer is enough. Below it the run stops with an error.",
    )
    layer_deadline: float | None = Field(
        default=None,
        gt=0,
        description="Seconds each proposer call of a layer (retries and waits included) may take "
        "before it is given up and recorded as missing; None (the default) = no deadline.",
    )
    quorum: int | None = Field(
        default=None,
        ge=1,
        description="Straggler quorum: a proposer layer goes on once this many of its proposers "
        "answered and quorum_grace has passed, cancelling the calls still running (recorded as "
        "kind 'cancelled'). Faster when one proposer straggles, at the cost of fewer references. "
        "None (the default) waits for every proposer.",
    )
    quorum_grace: float = Field(
        default=0.0,
        ge=0,
        description="Seconds a layer still waits for its other proposers after the quorum-th "
        "answer arrived (only with quorum).",
    )
    tool_history: ToolHistory = Field(
        default="as_text",
        description="What proposers and the aggregator see of tool calls and tool results in "
        "the conversation (a parent agent's history): 'as_text' renders them as plain text, "
        "'drop' leaves them out. Either way they see text turns ending with the user's "
        "(nodes/history.py).",
    )
    tool_proposers: ToolProposers = Field(
        default="advise",
        description="What proposers do on a step where the aggregator may call tools (ChatMoA."
        "bind_tools, an agent's model, moa serve with tools): 'advise' (default) runs them as "
        "usual, told the tools, and each proposes what to do next (which tool with which "
        "arguments, or the answer): a step costs every proposer plus the aggregator, and their "
        "prompts grow by the tools' descriptions. 'skip_forced' skips them when the tool choice "
        "forces a call ('required' or a named tool), where the step's only job is to pick a "
        "tool: that step costs one aggregator call. 'skip' skips them on every step with tools: "
        "the aggregator alone is the agent (a single model's cost and quality).",
    )
    # 30 s: a healthy model that is only slower than its siblings still finishes (512 tokens at
    # ~20 tokens/s take ~25 s), while a hung one costs 30 s instead of 3 x 120 s + backoff.
    # "Twice its siblings' time" keeps a call that queued behind them on one server (Ollama,
    # llama.cpp, the local pool) and so ends about one sibling-time later.
    straggler_grace: float | None = Field(
        default=30.0,
        gt=0,
        description="Once every other proposer of a layer has finished (and at least "
        "min_proposals answered), the last one may run this many seconds more, or twice as long "
        "as its siblings took if that is longer; then it is cancelled and recorded with kind "
        "'straggler'. Bounds what one hung provider costs a question. None (false in TOML) "
        "never cuts it.",
    )
    stream: bool = Field(
        default=True,
        description="Stream every model's answer (the aggregator's tokens reach "
        "stream_mode='messages'). False asks each model for its whole answer in one response: "
        "far less client CPU per call, for runs where nobody reads tokens (moa batch).",
    )
    staircase: bool = Field(
        default=False,
        description="Staircase streaming (docs/performance.md): proposers stream, and the "
        "aggregator writes the answer in chunks while they do, each chunk request carrying the "
        "proposals so far (marked unfinished) and the answer so far; the last request, once the "
        "proposals are complete, finishes the answer. The first answer token comes after the "
        "first proposal chunk instead of after whole proposals, for more aggregator requests and "
        "input tokens. Later proposer layers write their answers the same way. Needs stream.",
    )
    staircase_chunks: list[Annotated[int, Field(gt=0, le=4096)]] = Field(
        default_factory=lambda: [16, 32, 64, 128],
        min_length=1,
        max_length=32,
        description="With staircase: the chunk schedule in tokens, the last size repeating. "
        "Chunk k of an answer is asked for once every unfinished proposal it reads has grown by "
        "the k-th size since the previous chunk, and is at most that many tokens long. Small "
        "first chunks give a fast first token; larger later ones bound the requests (each "
        "re-sends the prompt).",
    )
    aggregation_prompt: str = Field(
        default=AGGREGATION_PROMPT,
        description="System prompt given to later-layer proposers and the aggregator; "
        "'{references}' is replaced by the numbered previous-layer responses.",
    )

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # The LangGraph server asks for it on every run (to filter the run's context): pydantic
        # builds it anew each time (~16 ms of CPU, as much as the rest of a batch item), and it
        # never changes for a given class and arguments (passed on as given, so pydantic's own
        # signature holds). A copy each time: callers may edit what they get.
        return copy.deepcopy(_schema_of(cls, args, tuple(sorted(kwargs.items()))))

    @field_validator("straggler_grace", mode="before")
    @classmethod
    def _grace_off(cls, value: Any) -> Any:
        # TOML has no null: `straggler_grace = false` turns the cut off.
        return None if value is False else value

    @model_validator(mode="before")
    @classmethod
    def _default_models(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        missing = [
            name
            for name, given in (
                ("aggregator", "aggregator" in data),
                ("proposers", "proposers" in data or "layer_proposers" in data),
            )
            if not given
        ]
        if not missing:
            return data
        preset = read_settings(default_preset_name())
        return {**{name: preset[name] for name in missing}, **data}

    @model_validator(mode="after")
    def _check(self) -> Context:
        if "{references}" not in self.aggregation_prompt:
            raise ValueError("aggregation_prompt must contain the placeholder '{references}'")
        if self.layer_proposers is not None and len(self.layer_proposers) != self.layers - 1:
            raise ValueError(
                f"layer_proposers has {len(self.layer_proposers)} lists but layers={self.layers} "
                f"needs {self.layers - 1} (one per proposer layer; the aggregator is the last)"
            )
        if self.layers > 1 and not self.layer_proposers and not self.proposers:
            raise ValueError("proposers is empty: a MoA run needs at least one proposer")
        if self.quorum is not None and self.quorum < self.min_proposals:
            raise ValueError(
                f"quorum={self.quorum} is below min_proposals={self.min_proposals}: "
                "a layer cut at its quorum would then fail; raise quorum or lower min_proposals"
            )
        smallest = min((len(self.proposers_of(n)) for n in range(1, self.layers)), default=None)
        if smallest is not None and self.min_proposals > smallest:
            raise ValueError(
                f"min_proposals={self.min_proposals} but a layer has only {smallest} proposer(s): "
                f"allowed values are 1 to {smallest}"
            )
        if self.staircase and not self.stream:
            raise ValueError(
                "staircase needs stream: its proposers stream their answers to the aggregator"
            )
        _check_shared_limits(self.all_models())
        for spec in self.all_models():
            answer = spec.max_tokens or self.max_tokens
            _check_rpm(spec)
            if spec.context_window is not None and answer >= spec.context_window:
                raise ValueError(
                    f"{spec.model}: max_tokens={answer} leaves no room for the prompt in "
                    f"context_window={spec.context_window}; it must be below context_window"
                )
        return self

    @property
    def proposer_layers(self) -> int:
        """How many layers of proposers run before the aggregator."""
        return self.layers - 1

    def proposers_of(self, layer: int) -> list[ModelSpec]:
        """The proposers of 1-based proposer layer ``layer``."""
        if self.layer_proposers is not None:
            return self.layer_proposers[layer - 1]
        return self.proposers

    def all_models(self) -> list[ModelSpec]:
        """Every model this run may call, each once, aggregator (then its fallback) last."""
        seen: dict[ModelSpec, None] = {}
        for layer in range(1, self.layers):
            seen.update(dict.fromkeys(self.proposers_of(layer)))
        seen[self.aggregator] = None
        if self.fallback_aggregator is not None:
            seen[self.fallback_aggregator] = None
        return list(seen)


def _check_shared_limits(specs: list[ModelSpec]) -> None:
    """Limits and prices belong to a model, not to one use of it: its uses must agree."""
    for field in ("rpm", "tpm", "price"):
        seen: dict[tuple[str, str | None], Any] = {}
        for spec in specs:
            value = getattr(spec, field)
            if value is None:
                continue
            key = (spec.model, spec.base_url)
            if seen.setdefault(key, value) != value:
                raise ValueError(
                    f"{spec.model}: {field} is given two values ({seen[key]} and {value}); "
                    f"every use of a model shares its provider's {field}: give one value"
                )


MIN_RPM = 1 / 1440  # one request a day: below it a run waits for ever, with nothing to show


def _check_rpm(spec: ModelSpec) -> None:
    """Refuse an ``rpm`` below one request a day: the run would wait for ever, its progress
    saying nothing. (A call larger than ``tpm`` is not refused: it waits for the bucket to
    empty, then goes alone: nodes/models/limits.py.)"""
    rpm = spec.rpm  # each use that declares it is checked: a shared rpm is declared somewhere
    if rpm is not None and rpm < MIN_RPM:
        raise ValueError(
            f"{spec.model}: rpm={rpm:g} lets one request through every {60 / rpm / 86400:,.1f} "
            f"days, so the run would wait for ever; give the provider's requests per minute (at "
            f"least {MIN_RPM:.5f}, one a day), or leave rpm out"
        )


def shared_setting(ctx: Context, spec: ModelSpec, field: str) -> Any:
    """``spec``'s ``field`` (rpm, tpm, price), or the one another use of the model declares."""
    value = getattr(spec, field)
    if value is not None:
        return value
    for other in ctx.all_models():
        if other.model == spec.model and other.base_url == spec.base_url:
            found = getattr(other, field)
            if found is not None:
                return found
    return None


def build_context(data: dict[str, Any], source: str = "context") -> Context:
    """Validate settings into a ``Context``; errors name the field and what is allowed."""
    try:
        return Context.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {explain(exc)}") from None


class Problem(NamedTuple):
    """One problem of a validation error: where (``loc``; empty for a check across settings,
    whose message names them), what is wrong, and the value at fault as the user wrote it when
    the message is about that value (``given``: ``layers = 40: out of range; allowed: 1 to
    10``)."""

    loc: tuple[str | int, ...]
    message: str
    given: str | None = None

    @property
    def setting(self) -> str:
        """The setting's path, with its value when the message is about it."""
        path = ".".join(str(p) for p in self.loc)
        return f"{path} = {self.given}" if self.given is not None else path


def explain(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line for a validation error of ``model`` (``Context``): each problem as ``field:
    what is wrong``."""
    return "; ".join(
        f"{p.setting}: {p.message}" if p.loc else p.message for p in problems(exc, model)
    )


# pydantic's errors for a value past a bound, for a list of the wrong length, and the JSON schema
# keywords of their bounds (their context names the bound passed).
_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_LENGTH_ERRORS = {"too_short", "too_long"}
_KEYWORDS = {
    "ge": "minimum",
    "gt": "exclusiveMinimum",
    "le": "maximum",
    "lt": "exclusiveMaximum",
    "min_length": "minItems",
    "max_length": "maxItems",
}


def problems(exc: ValidationError, model: type[BaseModel] | None = None) -> list[Problem]:
    """Each problem of a validation error of ``model`` (``Context``). A value out of its range
    says the whole range, whichever bound it passed, as ``model``'s JSON schema gives it: every
    constrained setting (a model's own, a list's length) says it alike."""
    model = model or Context
    found = []
    for err in exc.errors():
        loc, kind, ctx = tuple(err["loc"]), err["type"], err.get("ctx", {})
        msg = err["msg"].removeprefix("Value error, ")
        given = None
        if kind == "extra_forbidden":
            # A misspelt setting: say which names exist (a model's own, or the run's).
            fields = ModelSpec.model_fields if len(loc) > 1 else Context.model_fields
            msg = f"unknown setting; allowed: {', '.join(fields)}"
        elif kind == "finite_number":  # inf or nan, where every value is finite
            allowed = _range(_schema_at(model, loc)) or "any finite number"
            msg, given = f"not a finite number; allowed: {allowed}", shown(err["input"])
        elif kind in _BOUND_ERRORS or (kind in _LENGTH_ERRORS and ctx.get("field_type") == "List"):
            bounds = {_KEYWORDS[k]: v for k, v in ctx.items() if k in _KEYWORDS}
            schema = {**bounds, **_schema_at(model, loc)}  # the passed bound, and the others
            if kind in _BOUND_ERRORS:
                msg, given = f"out of range; allowed: {_range(schema)}", shown(err["input"])
            else:
                count = ctx.get("actual_length")
                has = f"has {count} item{'' if count == 1 else 's'}; " if count is not None else ""
                msg = f"{has}allowed: {_range(schema, length=True)} items"
        found.append(Problem(loc, msg, given))
    return found


def _schema_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> dict[str, Any]:
    """The JSON schema of the setting at ``loc`` in ``model``'s (its type and bounds); {} where
    ``loc`` leads nowhere."""
    root = model.model_json_schema()
    defs = root.get("$defs", {})

    def concrete(node: dict[str, Any]) -> dict[str, Any]:
        # A model by reference, or an optional setting (anyOf with null): the value's own.
        while True:
            if "$ref" in node:
                node = defs.get(node["$ref"].rsplit("/", 1)[-1], {})
            elif "anyOf" in node:
                node = next((b for b in node["anyOf"] if b.get("type") != "null"), {})
            else:
                return node

    node = concrete(root)
    for part in loc:
        inner = node.get("properties", {}).get(part) if isinstance(part, str) else node.get("items")
        node = concrete(inner or {})
    return node


def _range(schema: dict[str, Any], *, length: bool = False) -> str:
    """What a JSON schema allows of a number (or of a list's ``length``), in words: ``1 to 10``,
    ``0 or more``, ``above 0``, ``above 0 and up to 30``."""
    if length:
        low, high, above, below = schema.get("minItems"), schema.get("maxItems"), None, None
    else:
        low, high = schema.get("minimum"), schema.get("maximum")
        above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if schema.get("type") == "integer":  # whole numbers: every bound can be inclusive
            if above is not None:
                low, above = math.floor(above) + 1, None
            if below is not None:
                high, below = math.ceil(below) - 1, None
    if low is not None and high is not None:
        return f"{shown(low)} to {shown(high)}"
    parts = [
        f"{shown(low)} or more" if low is not None else "",
        f"above {shown(above)}" if above is not None else "",
        f"up to {shown(high)}" if high is not None else "",
        f"below {shown(below)}" if below is not None else "",
    ]
    return " and ".join(p for p in parts if p)


def shown(value: Any) -> str:
    """A value as the user typed it: 9, not 9.0; a string quoted."""
    if isinstance(value, float):
        return format(value, "g")
    return repr(value) if isinstance(value, str) else str(value)


@lru_cache(maxsize=32)
def load_preset(name_or_path: str) -> Context:
    """A preset by name, or a TOML config file by path, as a validated ``Context``."""
    return build_context(read_settings(name_or_path), name_or_path)


# The field of a parent graph's own context that may carry MoA's settings.
PARENT_FIELD = "moa"


def resolve_context(
    value: Any, default: Context | None = None, *, parents: bool = False
) -> Context:
    """The settings of a run, from whatever context it was given.

    - a ``Context``, or a dict with its fields (the LangGraph server passes dicts): used as is;
    - a preset name: that preset;
    - a parent graph's own context (any object or dict with no ``Context`` field): its ``moa``
      field (attribute or key) if it has one, holding any of the above; else ``default``;
    - nothing (None, or the empty dict Studio sends): ``default``.

    ``parents``: ``value`` is a parent graph's context (MoA runs inside a node of another graph):
    only a ``Context`` or its ``moa`` field count, so a parent's dict whose own keys share a name
    with a setting (``timeout``, ``temperature``...) is not read as MoA's settings.

    ``default`` is the graph's own (``build_moa_graph(context=...)``), else the default preset.
    """
    if isinstance(value, Context):
        return value
    if not parents:
        if isinstance(value, str):
            return load_preset(value)
        if isinstance(value, dict) and Context.model_fields.keys() & value.keys():
            # Validated strictly: a misspelt field next to real ones is an error, not ignored.
            return build_context(value)
    nested = (
        value.get(PARENT_FIELD) if isinstance(value, dict) else getattr(value, PARENT_FIELD, None)
    )
    if nested is not None:
        return resolve_context(nested, default)
    return default if default is not None else load_preset(default_preset_name())


@cache
def _schema_of(
    cls: type[Context], args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]
) -> dict[str, Any]:
    return super(Context, cls).model_json_schema(*args, **dict(kwargs))

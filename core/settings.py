"""From command-line flags to a validated Context, checked before any model is called."""

from __future__ import annotations

import re
import sys
from collections.abc import Collection
from typing import Any

from pydantic import ValidationError

from langgraph_moa.nodes.context import Context, problems, shown
from langgraph_moa.nodes.errors import ConfigError
from langgraph_moa.nodes.models import settings_for
from langgraph_moa.nodes.models.cache import chat_model
from langgraph_moa.nodes.presets import (
    default_preset_name,
    preset_names,
    read_config,
    read_preset,
)

# The Context field each settings flag sets, and the flag's name (errors name the flag).
FLAGS = {
    "proposers": "--proposer",
    "aggregator": "--aggregator",
    "layers": "--layers",
    "temperature": "--temperature",
    "max_tokens": "--max-tokens",
    "quorum": "--quorum",
    "quorum_grace": "--grace",
    "staircase": "--staircase",
}

# "<preset or model>+staircase": those settings with staircase streaming on (Context.staircase),
# where a name is given and no flags can be: a moa serve model id, a moa compare --system SPEC.
STAIRCASE_SUFFIX = "+staircase"


def split_staircase(name: str) -> tuple[str, bool]:
    """``name`` without a ``+staircase`` suffix, and whether it had one."""
    if name.endswith(STAIRCASE_SUFFIX) and name != STAIRCASE_SUFFIX:
        return name.removesuffix(STAIRCASE_SUFFIX), True
    return name, False


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
    staircase: bool | None = None,
    taken: Collection[str] = (),
    taken_from: str = "",
) -> Context:
    """The run's settings from a preset or config file and the flags over it. ``taken``: fields
    the command takes from elsewhere (``taken_from``, a sentence saying where: ``moa batch
    --replay``'s run file), refused when a flag or the config file sets one, as they would be
    ignored; a preset's are left unused."""
    if preset is not None and config is not None:
        raise ConfigError("give either --preset or --config, not both")
    if config is not None:
        data, origin = _config(config), f"config file {config!r}"
    else:
        name = preset if preset is not None else default_preset_name()
        data, origin = _preset(name), f"preset {name!r}"
    _refuse_taken(taken, taken_from, config, data, proposers=proposers, layers=layers)
    flags: dict[str, Any] = {
        "proposers": proposers or None,
        "aggregator": aggregator,
        "layers": layers,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "quorum": quorum,
        "quorum_grace": quorum_grace,
        "staircase": staircase,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    if "proposers" in flags:
        data.pop("layer_proposers", None)
    data.update(flags)
    try:
        ctx = Context.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, flags, origin)) from None
    if quorum_grace is not None and ctx.quorum is None:
        # Without a quorum the grace is never read: the run would ignore what the user asked.
        raise ConfigError(
            f"--grace {shown(quorum_grace)} applies only with a quorum: add --quorum K (or set "
            f"quorum in the config); a hung proposer is cut by straggler_grace (config) instead"
        )
    if preset is None and config is None:
        _say_what_runs_locally(ctx, {**flags, **dict.fromkeys(taken)})
    return ctx


def _refuse_taken(
    taken: Collection[str], taken_from: str, config: str | None, data: dict[str, Any], **flags: Any
) -> None:
    for field, value in flags.items():
        if field in taken and value not in (None, []):
            given_flags = (
                " ".join(f"{FLAGS[field]} {shown(v)}" for v in value)
                if field == "proposers"
                else f"{FLAGS[field]} {shown(value)}"
            )
            raise ConfigError(f"{given_flags}: {taken_from}; leave out {FLAGS[field]}")
    given = [field for field in taken if field in data]
    if config is not None and given:
        raise ConfigError(
            f"config file {config!r} sets {', '.join(given)}: {taken_from}; give a config "
            f"without {'them' if len(given) > 1 else 'it'}"
        )


def _preset(name: str) -> dict[str, Any]:
    # A preset name names a preset: never a file elsewhere (paths go through --config).
    if name not in preset_names():
        raise ConfigError(
            f"unknown preset {name!r}; choose one of: {', '.join(preset_names())} "
            "(use --config for a file)"
        )
    return read_preset(name)


def _config(path: str) -> dict[str, Any]:
    try:
        return read_config(path)
    except ConfigError as exc:
        if path in preset_names():
            raise ConfigError(f"{exc} (for the preset of that name, use --preset {path})") from None
        raise


def _say_what_runs_locally(ctx: Context, flags: dict[str, Any]) -> None:
    """Without a key the default is the embedded model: say so, for the models it still runs."""
    if default_preset_name() != "local":
        return
    proposers = ctx.layers > 1 and "proposers" not in flags
    aggregator = "aggregator" not in flags
    if proposers and aggregator:
        what, pick = "running the embedded local model (SmolLM2-135M)", "pick one with --preset"
    elif aggregator:
        what = "the aggregator is the embedded local model (SmolLM2-135M)"
        pick = "pick models with --aggregator or --preset"
    elif proposers:
        what = "the proposers are the embedded local model (SmolLM2-135M)"
        pick = "pick models with --proposer or --preset"
    else:
        return  # every model was given: nothing local runs
    if sys.stderr is not None:  # print(file=None) would write to stdout
        print(
            f"moa: no TOGETHER_API_KEY: {what}; set it for Together's models, or {pick}",
            file=sys.stderr,
        )


def _explain(exc: ValidationError, flags: dict[str, Any], origin: str) -> str:
    """Each problem, prefixed with where its value came from: the flag, or the preset or file."""
    parts = []
    for problem in problems(exc):
        loc, msg = problem.loc, problem.message
        field = str(loc[0]) if loc else None
        if field in flags:
            value = flags[field]
            if field == "proposers" and len(loc) > 1 and isinstance(loc[1], int):
                value = value[loc[1]]
            inner = problem._replace(loc=loc[2:] if field == "proposers" else loc[1:])
            where = f"{FLAGS[field]} {shown(value)}"  # the flag's value: its problem's own
            parts.append(f"{where}: {inner.setting + ': ' if inner.loc else ''}{msg}")
        elif loc:
            parts.append(f"{origin}: {problem.setting}: {msg}")
        else:
            # A check across fields: name the flags it mentions, and the preset or file.
            named = [
                f"{FLAGS[f]} {shown(v)}"
                for f, v in flags.items()
                if f != "proposers" and re.search(rf"\b{f}\b", msg)
            ]
            parts.append(f"{' with '.join([*named, origin])}: {msg}")
    return "; ".join(parts)


def preflight(ctx: Context) -> None:
    """Build every model now: an unknown provider or a missing key fails before any call."""
    for spec in ctx.all_models():
        chat_model(settings_for(spec, ctx))

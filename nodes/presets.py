"""Presets: stored ``Context`` values kept as TOML files users can copy and edit.

``load_preset("moa-lite")`` reads ``nodes/presets/moa-lite.toml``; a path to any TOML file works
the same way. A preset file holds the same fields as ``Context`` (see nodes/context.py).
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from langgraph_moa.nodes.context import Context, ModelSpec
from langgraph_moa.nodes.errors import ConfigError

PRESET_DIR = resources.files("langgraph_moa.nodes") / "presets"


def preset_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml") for p in PRESET_DIR.iterdir() if p.name.endswith(".toml")
    )


def default_preset_name() -> str:
    """Together's current models with a key, the embedded local model without one."""
    return "together" if os.environ.get("TOGETHER_API_KEY") else "local"


def read_settings(name_or_path: str) -> dict[str, Any]:
    """The raw fields of a preset (by name) or of a TOML config file (by path)."""
    path = Path(name_or_path)
    entry = PRESET_DIR / f"{name_or_path}.toml"
    # A preset's name wins over a file or folder of that name in the working directory.
    if path.suffix == ".toml" or (path.exists() and not entry.is_file()):
        if not path.is_file():
            raise ConfigError(f"config file {name_or_path!r} not found")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {name_or_path!r} cannot be read: {exc}") from None
    else:
        if not entry.is_file():
            raise ConfigError(
                f"unknown preset {name_or_path!r}; choose one of: {', '.join(preset_names())} "
                "(or give a path to a .toml config file)"
            )
        text = entry.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name_or_path}: not valid TOML: {exc}") from None
    data.pop("description", None)  # documentation only
    return data


def build_context(data: dict[str, Any], source: str = "context") -> Context:
    """Validate settings into a ``Context``; errors name the field and what is allowed."""
    try:
        return Context.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {explain(exc)}") from None


def explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            # A misspelt setting: say which names exist (a model's own, or the run's).
            fields = ModelSpec.model_fields if len(err["loc"]) > 1 else Context.model_fields
            msg = f"unknown setting; allowed: {', '.join(fields)}"
        # Whole-context checks have no location; their message names the fields.
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


@lru_cache(maxsize=32)
def load_preset(name_or_path: str) -> Context:
    return build_context(read_settings(name_or_path), name_or_path)


def resolve_context(value: Any) -> Context:
    """What a node sees: the context given to the run, or the default preset when none was."""
    if isinstance(value, Context):
        return value
    if not value:  # None, or the empty context LangGraph Studio sends by default
        return load_preset(default_preset_name())
    if isinstance(value, dict):
        return build_context(value)
    raise ConfigError(f"context must be a Context or a dict, not {type(value).__name__}")

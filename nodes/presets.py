"""Presets: stored ``Context`` values kept as TOML files users can copy and edit.

``read_settings("moa-lite")`` reads ``nodes/presets/moa-lite.toml``; a path to any TOML file works
the same way. ``read_preset`` takes preset names only and ``read_config`` paths only (the CLI's
``--preset`` and ``--config``). A preset file holds the same fields as ``Context``;
``load_preset`` (nodes/context.py) validates it into one. The default preset is chosen here, in
``default_preset_name``.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from langgraph_moa.nodes.errors import ConfigError
from langgraph_moa.nodes.shared_files import (
    check_shared,
    everyone_can_write,
    make_it_yours,
    open_to_all,
)

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
        return read_config(name_or_path)
    return read_preset(name_or_path)


def read_preset(name: str) -> dict[str, Any]:
    """The raw fields of the preset called ``name``; never a file elsewhere (no paths)."""
    if name not in preset_names():
        raise ConfigError(
            f"unknown preset {name!r}; choose one of: {', '.join(preset_names())} "
            "(or give a path to a .toml config file)"
        )
    return _parse((PRESET_DIR / f"{name}.toml").read_text(encoding="utf-8"), f"preset {name!r}")


# A config file is a few hundred bytes; reading stops here (`--config /dev/zero`).
MAX_CONFIG_BYTES = 2**20


def read_config(path: str) -> dict[str, Any]:
    """The raw fields of the TOML config file at ``path`` (a pipe such as ``<(...)`` works too)."""
    where = Path(path)
    if not where.exists():
        raise ConfigError(f"config file {path!r} not found")
    if where.is_dir():
        raise ConfigError(f"config file {path!r} is a folder, not a file")
    risk = "choose the models your prompts go to and where the keys it names are sent"
    check_shared(where, f"config file {path!r}", risk)  # its folders too (nodes/shared_files.py)
    try:
        with where.open("rb") as file:
            st = os.fstat(file.fileno())  # of what is read, not of what the name points to later
            if everyone_can_write(st):
                raise ConfigError(
                    f"config file {path!r}: {open_to_all(risk, st)}: {make_it_yours(path)}"
                )
            data = file.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path!r} is larger than 1 MiB: not a config file")
        text = data.decode("utf-8-sig")  # -sig: a BOM some editors write is not an error
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path!r} cannot be read: {exc}") from None
    return _parse(text, f"config file {path!r}")


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    data.pop("description", None)  # documentation only
    return data


def preset_description(name: str) -> str:
    """The ``description`` line of a preset file."""
    text = (PRESET_DIR / f"{name}.toml").read_text(encoding="utf-8")
    return str(tomllib.loads(text).get("description", ""))

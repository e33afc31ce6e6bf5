"""Names a package imports on first use (PEP 562), for the packages whose names would otherwise
cost every importer their modules (langgraph_moa, nodes, graphs, apps.compare)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose names in ``where`` are
    imported from the module it maps each to when first read. ``__dir__`` lists them beside the
    ones already loaded, so ``dir()`` and tab completion show them."""

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__

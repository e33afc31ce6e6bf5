"""Every repository path and ``python -m`` module named in the code, docs and settings exists.

Paths in docstrings, comments, Context field descriptions and docs are what a reader follows;
a file move that leaves them behind sends the reader nowhere (issue 18 found three).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ["*.md", "*.toml", "Makefile", "docs/*.md", "langgraph_moa/*.py"] + [
    f"{top}/**/*.py" for top in ("nodes", "graphs", "core", "apps", "tests", "benchmarks")
]
PATH = re.compile(
    r"(?<![\w/.-])((?:nodes|graphs|core|apps|tests|benchmarks|docs)/[\w/.-]*\w\.(?:py|md|toml|jsonl))"
)
MODULE = re.compile(r"python3? -m ((?:langgraph_moa|benchmarks|tests)[\w.]*)")


def _texts() -> list[tuple[Path, str]]:
    files = {p for pattern in SCANNED for p in ROOT.glob(pattern) if p.is_file()}
    return [(p, p.read_text(encoding="utf-8")) for p in sorted(files)]


def test_named_paths_exist() -> None:
    missing = sorted(
        f"{file.relative_to(ROOT)}: {path}"
        for file, text in _texts()
        for path in set(PATH.findall(text))
        if not (ROOT / path).exists() and not (ROOT / "langgraph_moa" / path).exists()
    )
    assert not missing, "stale paths:\n" + "\n".join(missing)


def _module_exists(module: str) -> bool:
    if module.startswith("langgraph_moa"):
        return importlib.util.find_spec(module) is not None
    # benchmarks and tests run from the repository root (they are not installed)
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_named_modules_exist() -> None:
    missing = sorted(
        f"{file.relative_to(ROOT)}: python -m {module}"
        for file, text in _texts()
        for module in set(MODULE.findall(text))
        if not _module_exists(module)
    )
    assert not missing, "stale modules:\n" + "\n".join(missing)

"""The package's version: pyproject.toml's ``version``, the one source, as the install recorded
it in the distribution's metadata (what ``pip show`` and ``uv pip list`` report too)."""

from importlib.metadata import version

__version__ = version("langgraph-moa")

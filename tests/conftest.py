"""Shared fixtures: a fake OpenAI-compatible server on 127.0.0.1 and contexts pointing at it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeOpenAIServer

from langgraph_moa.nodes.context import Context, ModelSpec

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def _server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def server(_server: FakeOpenAIServer) -> FakeOpenAIServer:
    """The session's fake server, with scripts and records cleared for this test."""
    _server.reset()
    return _server


@pytest.fixture(autouse=True)
def _no_real_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never reach a real provider: drop any key or endpoint the developer has set.
    for name in ("TOGETHER_API_KEY", "TOGETHER_API_BASE", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def spec(server: FakeOpenAIServer, name: str, provider: str = "together", **kw: Any) -> ModelSpec:
    """A model served by the fake server, through the real provider client."""
    return ModelSpec(model=f"{provider}:{name}", base_url=server.base_url, **kw)


def fake_context(
    server: FakeOpenAIServer,
    proposers: list[str],
    aggregator: str = "agg",
    **kw: Any,
) -> Context:
    return Context(
        proposers=[spec(server, p) for p in proposers],
        aggregator=spec(server, aggregator),
        **kw,
    )


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``moa`` command the way a user does."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "langgraph_moa", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
    )

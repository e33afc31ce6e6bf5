"""What the batch tests share: datasets, configs pointing at the fake server, reading outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fake_openai import FakeOpenAIServer, RecordedRequest


def write_items(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    return path


def prompts(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"q{i}", "prompt": f"question number {i}"} for i in range(start, start + n)]


def write_config(
    path: Path,
    server: FakeOpenAIServer,
    proposers: tuple[str, ...] = ("p1", "p2"),
    aggregator: str = "agg",
    *,
    model_extra: str = "",
    extra: str = "",
) -> Path:
    """A config whose models are served by the fake server (``model_extra`` goes in each)."""

    def spec(name: str) -> str:
        more = f", {model_extra}" if model_extra else ""
        return f'{{ model = "together:{name}", base_url = "{server.base_url}"{more} }}'

    path.write_text(
        f"layers = 2\nproposers = [{', '.join(spec(p) for p in proposers)}]\n"
        f"aggregator = {spec(aggregator)}\n{extra}\n",
        encoding="utf-8",
    )
    return path


def write_replay_config(
    path: Path, server: FakeOpenAIServer, aggregator: str = "agg", *, model_extra: str = ""
) -> Path:
    """A config for ``--replay``: the aggregator alone (the proposers are the run file's)."""
    more = f", {model_extra}" if model_extra else ""
    spec = f'model = "together:{aggregator}", base_url = "{server.base_url}"{more}'
    path.write_text(f"aggregator = {{ {spec} }}\n", encoding="utf-8")
    return path


def read_records(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "torn last line"
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def last_user(request: RecordedRequest) -> str:
    users = [m for m in request.messages if m.get("role") == "user"]
    return str(users[-1]["content"]) if users else ""


def requests_by_prompt(server: FakeOpenAIServer, model: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in server.requests_for(model):
        counts[last_user(r)] = counts.get(last_user(r), 0) + 1
    return counts


def error_line(stderr: str) -> str:
    """The one ``moa: error:`` line a refused command printed (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("moa: error:")]
    assert len(lines) == 1, stderr
    return lines[0]

"""What the compare tests share: judges scripted on the fake server, configs, reading a report."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fake_openai import FakeOpenAIServer, RecordedRequest, message_text

KEY = {"TOGETHER_API_KEY": "test-key"}
ANSWER = re.compile(r'<answer id="(?P<id>[AB])">\n(?P<text>.*?)\n</answer>', re.S)
# List prices the fake models get in test configs (USD per million input, output tokens).
PRICE = "price = { input = 1.0, output = 2.0 }"


def env(server: FakeOpenAIServer) -> dict[str, str]:
    """The CLI's environment: together: models are served by the fake server."""
    return {**KEY, "TOGETHER_API_BASE": server.base_url}


def shown(request: RecordedRequest) -> dict[str, str]:
    """The answers a judge request shows, by position."""
    user = message_text(request.messages[-1]["content"])
    return {m["id"]: m["text"] for m in ANSWER.finditer(user)}


def always_a(request: RecordedRequest) -> str:
    return "Answer A reads better to me.\nVerdict: A"


def prefers_longer(request: RecordedRequest) -> str:
    a, b = shown(request)["A"], shown(request)["B"]
    pick = "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"
    return f"The longer answer covers more.\n**Verdict:** {pick}"


def prefers(word: str) -> Callable[[RecordedRequest], str]:
    """A judge that prefers the answer holding ``word`` (a stand-in for quality)."""

    def judge(request: RecordedRequest) -> str:
        a, b = shown(request)["A"], shown(request)["B"]
        pick = "tie" if (word in a) == (word in b) else "A" if word in a else "B"
        return f"One of them is right.\nVerdict: {pick}"

    return judge


def last_user(request: RecordedRequest) -> str:
    for m in reversed(request.messages):
        if m.get("role") == "user":
            return message_text(m.get("content"))
    return ""


def write_prompts(path: Path, n: int) -> Path:
    lines = [json.dumps({"id": f"q{i}", "prompt": f"question number {i}"}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_mixture(
    path: Path, proposers: tuple[str, ...] = ("p1", "p2"), aggregator: str = "agg"
) -> Path:
    """A MoA config whose models are the fake server's together: models, with prices."""

    def spec(name: str) -> str:
        return f'{{ model = "together:{name}", {PRICE} }}'

    path.write_text(
        f"layers = 2\nproposers = [{', '.join(spec(p) for p in proposers)}]\n"
        f"aggregator = {spec(aggregator)}\n",
        encoding="utf-8",
    )
    return path


def results(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    return data


def pair(data: dict[str, Any], baseline: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in data["pairs"] if p["baseline"] == baseline)
    return found

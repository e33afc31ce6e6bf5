"""Staircase streaming where users turn it on: ``moa --staircase``, ``moa chat --staircase``, a
``moa serve`` request (field or model id) and ``ChatMoA``; each answer starts before the
proposals end (the fake server and the clients share the machine's monotonic clock)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import openai
import pytest
from conftest import ROOT, spec
from fake_openai import FakeOpenAIServer, continuing
from serving import app_for, running
from test_staircase import ANSWER, PROPOSALS, fallback_so_far, script_proposers

from langgraph_moa.graphs import ChatMoA
from langgraph_moa.nodes.context import Context

NAMES = ["p1", "p2"]


def script(server: FakeOpenAIServer) -> None:
    script_proposers(server, NAMES)  # ~2 s each
    server.script("agg", continuing(ANSWER, fallback_so_far), ttft=0.01, token_delay=0.002)


def proposals_end(server: FakeOpenAIServer) -> float:
    ends = [r.finished for n in NAMES for r in server.requests_for(n)]
    assert ends and all(e is not None for e in ends)
    return min(e for e in ends if e is not None)


def ctx(server: FakeOpenAIServer, *, staircase: bool = True) -> Context:
    return Context(
        proposers=[spec(server, n) for n in NAMES],
        aggregator=spec(server, "agg"),
        staircase=staircase,
        staircase_chunks=[4, 8],
        max_tokens=200,
    )


def cli(server: FakeOpenAIServer, *args: str, stdin: str = "") -> tuple[float, str, str]:
    """Run ``moa ARGS`` with the fake models; (when stdout's first byte came, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    env.update({"TOGETHER_API_KEY": "test-key", "TOGETHER_API_BASE": server.base_url})
    models = ["--proposer", "together:p1", "--proposer", "together:p2", "-a", "together:agg"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "langgraph_moa", *args, *models, "--max-tokens", "200"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(stdin.encode())
    proc.stdin.close()
    first = proc.stdout.read(1)
    at = time.perf_counter()
    assert proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()  # stderr is a few lines: no deadlock
    assert proc.wait(timeout=120) == 0, err.decode()
    return at, (first + out).decode(), err.decode()


def test_moa_staircase_prints_the_answer_before_the_proposals_end(server: FakeOpenAIServer) -> None:
    script(server)
    at, out, _ = cli(server, "--staircase", "What is MoA?")
    assert at < proposals_end(server)
    assert out == ANSWER + "\n"


def test_moa_staircase_shows_the_proposals_it_read(server: FakeOpenAIServer) -> None:
    script(server)
    _, out, _ = cli(server, "--staircase", "--show-proposals", "What is MoA?")
    answer, shown = out.split("\n\n", 1)  # the answer streamed, then the layers once they ended
    assert answer == ANSWER
    assert all(f"layer 1 · together:{n}" in shown and PROPOSALS[n] in shown for n in NAMES)


def test_moa_json_reports_every_aggregator_request(server: FakeOpenAIServer) -> None:
    script(server)
    _, out, _ = cli(server, "--staircase", "--json", "What is MoA?")
    report = json.loads(out)
    requests = report["staircase"]["requests"]
    assert report["answer"] == ANSWER and report["settings"]["staircase"] is True
    assert (
        len(requests)
        == len(server.requests_for("agg"))
        == report["staircase"]["aggregator_requests"]
    )
    assert requests[0]["unfinished"] == 2 and requests[-1]["final"]
    assert all(r["started_s"] >= 0 and r["usage"]["input_tokens"] > 0 for r in requests)
    assert report["usage"]["together:agg"]["input_tokens"] == sum(
        r["usage"]["input_tokens"] for r in requests
    )


def test_moa_chat_staircase(server: FakeOpenAIServer) -> None:
    script(server)
    at, out, err = cli(server, "chat", "--staircase", stdin="What is MoA?\n")
    assert out == ANSWER + "\n\n", err  # stdout carries only the answer (prompts: stderr)
    assert at < proposals_end(server)


@pytest.mark.parametrize("how", ["field", "model id"])
def test_a_serve_request_streams_before_the_proposals_end(
    server: FakeOpenAIServer, how: str
) -> None:
    script(server)
    with running(app_for(ctx(server, staircase=False))) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        extra = {"extra_body": {"staircase": True}} if how == "field" else {}
        stream = client.chat.completions.create(
            model="fake" if how == "field" else "fake+staircase",
            messages=[{"role": "user", "content": "What is MoA?"}],
            stream=True,
            **extra,  # type: ignore[arg-type]
        )
        first, parts = None, []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter()
                parts.append(chunk.choices[0].delta.content)
    assert first is not None and first < proposals_end(server)
    assert "".join(parts) == ANSWER


def test_serve_lists_the_staircase_model_id(server: FakeOpenAIServer) -> None:
    with running(app_for(ctx(server, staircase=False))) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert "fake+staircase" in [m.id for m in client.models.list()]


@pytest.mark.timeout(120, method="thread")  # a sync deadlock would block threads for good
@pytest.mark.parametrize("sync", [False, True], ids=["astream", "stream"])
async def test_chat_moa_with_the_setting_streams_before_the_proposals_end(
    server: FakeOpenAIServer, sync: bool
) -> None:
    script(server)
    chat = ChatMoA(context=ctx(server))
    first, parts = None, []

    def take(chunk: Any) -> None:
        nonlocal first
        if chunk.text:
            first = first or time.perf_counter()
            parts.append(chunk.text)

    if sync:  # in a thread of its own, as a sync caller runs it
        await asyncio.to_thread(lambda: [take(c) for c in chat.stream("What is MoA?")])
    else:
        async for chunk in chat.astream("What is MoA?"):
            take(chunk)
    assert first is not None and first < proposals_end(server)
    assert "".join(parts) == ANSWER
    assert PROPOSALS["p1"] not in "".join(parts)

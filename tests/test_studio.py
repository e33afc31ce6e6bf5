"""The graph served by ``langgraph dev`` (what LangGraph Studio talks to), over real HTTP."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import ROOT
from fake_openai import FakeOpenAIServer, continuing
from langgraph_sdk import get_sync_client
from test_staircase import fallback_so_far

from langgraph_moa.nodes.context import load_preset

URL = re.compile(r"API: \S*?(http://127\.0\.0\.1:\d+)")


@contextmanager
def langgraph_dev(server: FakeOpenAIServer, work: Path) -> Iterator[str]:
    """``langgraph dev`` serving this repository's langgraph.json, run from a copy in ``work``
    (so the in-memory server's .langgraph_api/ lands outside the repo), its models at the fake
    server; yields its URL and stops it at the end."""
    proc, url = start_langgraph_dev(server, work)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_langgraph_dev(
    server: FakeOpenAIServer, work: Path, port: str | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start ``langgraph dev`` (one process: no reload) from ``work`` on ``port`` (a free one by
    default); (the process, its URL) once it answers. The caller stops it."""
    for name in ("langgraph.json", "graphs"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, work / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
            )
        else:
            shutil.copy(src, work / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "OPENAI_"))}
    env.update(
        TOGETHER_API_KEY="studio-test-key",
        TOGETHER_API_BASE=server.base_url,
        OPENAI_API_KEY="studio-test-key",
        OPENAI_BASE_URL=server.base_url,
        LANGGRAPH_NO_ANALYTICS="1",
        LANGSMITH_TRACING="false",
    )
    cli = Path(sys.executable).parent / "langgraph"
    # --n-jobs-per-worker as docs/batch.md says: langgraph dev runs one run at a time without it
    args = ["dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", port or _port()]
    proc = subprocess.Popen(
        [str(cli), *args, "--n-jobs-per-worker", "16"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        return proc, _wait_for_url(proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture(scope="module")
def studio(_server: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with langgraph_dev(_server, tmp_path_factory.mktemp("studio")) as url:
        yield url


def _port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _wait_for_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    url = None
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("langgraph dev exited:\n" + "".join(seen))
        seen.append(line)
        match = URL.search(re.sub(r"\x1b\[[0-9;]*m", "", line))
        if match:
            url = match.group(1)
            break
    assert url, "".join(seen)
    # Keep draining the server's log so a full pipe never blocks it.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError("langgraph dev did not answer /ok")


def test_studio_renders_and_streams_the_answer(studio: str, server: FakeOpenAIServer) -> None:
    server.script("Qwen/Qwen2.5-72B-Instruct-Turbo", "studio answer in five words")
    client = get_sync_client(url=studio, api_key=None)
    (assistant,) = client.assistants.search(graph_id="moa")
    drawn = client.assistants.get_graph(assistant["assistant_id"])
    assert {"propose", "join", "aggregate"} <= {n["id"] for n in drawn["nodes"]}
    # Beside it, the default preset's mixture unrolled: a node per proposer, a join per layer.
    (unrolled,) = client.assistants.search(graph_id="moa-unrolled")
    nodes = {n["id"] for n in client.assistants.get_graph(unrolled["assistant_id"])["nodes"]}
    together = load_preset("together")
    assert nodes == {"__start__", "__end__", "aggregate", "join layer 1"} | {
        f"layer 1 · {s.name.rsplit('/', 1)[-1]}" for s in together.proposers
    }

    tokens: list[str] = []
    final = None
    for part in client.runs.stream(
        None,
        assistant["assistant_id"],
        input={"messages": [{"role": "user", "content": "hello from studio"}]},
        context={"proposers": ["together:m1", "together:m2"], "layers": 2},
        stream_mode=["messages-tuple", "values"],
    ):
        if part.event == "messages":
            chunk, meta = part.data
            assert meta["langgraph_node"] == "aggregate"
            if chunk.get("content"):
                tokens.append(chunk["content"])
        elif part.event == "values":
            final = part.data
    assert "".join(tokens) == "studio answer in five words"
    assert len(tokens) == 5
    assert final is not None
    assert [p["model"] for p in final["layers"][0]] == ["together:m1", "together:m2"]
    assert {r.model for r in server.requests} == {
        "m1",
        "m2",
        "Qwen/Qwen2.5-72B-Instruct-Turbo",
    }

    # A context that changes the unrolled graph's shape: the client sees why, not "internal".
    errors = [
        part.data
        for part in client.runs.stream(
            None,
            unrolled["assistant_id"],
            input={"messages": [{"role": "user", "content": "hello"}]},
            context={"proposers": ["together:m1"], "layers": 2},
            stream_mode="values",
        )
        if part.event == "error"
    ]
    assert errors[0]["error"] == "ConfigError"
    assert "this graph is unrolled for 1 proposer layer(s)" in errors[0]["message"]


def test_studio_draws_a_staircase_run_beside_its_proposers_and_streams_it(
    studio: str, server: FakeOpenAIServer
) -> None:
    for name in ("m1", "m2"):  # ~2 s each: the answer starts long before they end
        server.script(name, " ".join(f"{name}w{i}" for i in range(80)), token_delay=0.025)
    answer = " ".join(f"a{i}" for i in range(40))
    server.script("Qwen/Qwen2.5-72B-Instruct-Turbo", continuing(answer, fallback_so_far))
    client = get_sync_client(url=studio, api_key=None)
    (assistant,) = client.assistants.search(graph_id="moa")
    drawn = client.assistants.get_graph(assistant["assistant_id"])
    edges = {(e["source"], e["target"]) for e in drawn["edges"]}
    for node in ("staircase_propose", "staircase_aggregate"):
        assert ("__start__", node) in edges and (node, "__end__") in edges

    first, tokens, nodes = None, [], set()
    for part in client.runs.stream(
        None,
        assistant["assistant_id"],
        input={"messages": [{"role": "user", "content": "hello from studio"}]},
        context={"proposers": ["together:m1", "together:m2"], "staircase": True},
        stream_mode="messages-tuple",
    ):
        if part.event == "messages" and part.data[0].get("content"):
            first = first or time.perf_counter()
            tokens.append(part.data[0]["content"])
            nodes.add(part.data[1]["langgraph_node"])
    assert "".join(tokens) == answer and nodes == {"staircase_aggregate"}
    ends = [r.finished for n in ("m1", "m2") for r in server.requests_for(n)]
    assert first is not None and all(e is not None and first < e for e in ends)
